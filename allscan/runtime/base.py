"""The runner interface every backend implements (polygraphy's pattern).

A runner takes a float32 batch ``[N, 3, H, W]`` and returns named arrays: ``logits [N, C]``, ``cam [N, C, h, w]``
and, where the model has it, ``ood [N]``. The public methods (``activate``, ``infer``, ``infer_many``) do the
checks once and time the work; backends write only the ``*_impl`` hooks. ``infer_many`` takes an iterator of
batches so that a backend may keep several in flight (TensorRT uploads batch k+1 while k computes; ONNX Runtime
computes batch k on a thread while the caller prepares k+1): the pipeline always calls it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType

import numpy as np

REQUIRED_OUTPUTS = ("logits", "cam")


class RunnerError(Exception):
    """A backend cannot run; the message is one line naming the cause and, where there is one, the remedy."""


@dataclass
class InferenceProfile:
    """Wall time spent in the runner while a :meth:`Runner.profile` context was open.

    Time the runner spent waiting for the caller's next batch (``infer_many`` pulls them) is not counted: that is
    the preparation's cost, not the model's.
    """

    seconds: float = 0.0
    batches: int = 0
    rows: int = 0


class Runner(ABC):
    """Base runner: ``with runner: outputs = runner.infer(batch)`` or ``for out in runner.infer_many(batches)``."""

    backend: str = "base"
    precision: str = "fp32"

    def __init__(self) -> None:
        self.is_active = False
        self._profiles: list[InferenceProfile] = []

    def activate(self) -> None:
        if not self.is_active:
            self.activate_impl()
            self.is_active = True

    def deactivate(self) -> None:
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.deactivate()

    @contextmanager
    def profile(self) -> Iterator[InferenceProfile]:
        """Accumulate the time of every inference made while the context is open."""
        record = InferenceProfile()
        self._profiles.append(record)
        try:
            yield record
        finally:
            self._profiles.remove(record)

    def _account(self, seconds: float, rows: int) -> None:
        for record in self._profiles:
            record.seconds += seconds
            record.batches += 1
            record.rows += rows

    def _require_active(self) -> None:
        if not self.is_active:
            raise RunnerError(f"{self.backend} runner used before activate()")

    @staticmethod
    def _checked_input(batch: np.ndarray) -> np.ndarray:
        if batch.dtype != np.float32 or batch.ndim != 4:
            raise RunnerError(f"runner input must be float32 [N,3,H,W], got {batch.dtype} {batch.shape}")
        return np.ascontiguousarray(batch)

    def _checked_output(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [name for name in REQUIRED_OUTPUTS if name not in outputs]
        if missing:
            raise RunnerError(f"{self.backend} runner returned no {', '.join(missing)}")
        return outputs

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs of one batch."""
        self._require_active()
        batch = self._checked_input(batch)
        t0 = time.perf_counter()
        outputs = self.infer_impl(batch)
        self._account(time.perf_counter() - t0, len(batch))
        return self._checked_output(outputs)

    def infer_many(self, batches: Iterable[np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """Outputs for each batch, in order; ``batches`` is pulled lazily, so it may be a stream being prepared."""
        self._require_active()
        return self._many(iter(batches))

    def _many(self, batches: Iterator[np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        waited = 0.0  # time spent inside the caller's iterator, to subtract from the runner's time
        sizes: list[int] = []

        def feed() -> Iterator[np.ndarray]:
            nonlocal waited
            while True:
                t0 = time.perf_counter()
                try:
                    batch = next(batches)
                except StopIteration:
                    waited += time.perf_counter() - t0
                    return
                waited += time.perf_counter() - t0
                checked = self._checked_input(batch)
                sizes.append(len(checked))
                yield checked

        results = self.infer_many_impl(feed())
        while True:
            waited, t0 = 0.0, time.perf_counter()
            try:
                outputs = next(results)
            except StopIteration:
                return
            self._account(max(0.0, time.perf_counter() - t0 - waited), sizes.pop(0) if sizes else 0)
            yield self._checked_output(outputs)

    @abstractmethod
    def activate_impl(self) -> None: ...

    @abstractmethod
    def infer_impl(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...

    def infer_many_impl(self, batches: Iterator[np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """One result per batch, in order. The default runs them one at a time; backends that can overlap
        override this (never ``infer_many``, which keeps the checks)."""
        for batch in batches:
            yield self.infer_impl(batch)

    def deactivate_impl(self) -> None:  # noqa: B027 - optional hook
        """Release resources; default nothing."""
