"""Repetitions and medians: shared machines are noisy, so every figure is the median of several timed runs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Wall seconds of one call, and its result."""
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def rate(count: int, seconds: float) -> float:
    """Items per second; 0 when nothing was timed (reported, never divided by)."""
    return count / seconds if seconds > 0 else 0.0
