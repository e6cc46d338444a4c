"""What a run is asked to do: :class:`RunConfig`, its validation, and the journal key of its output options.

Kept apart from the run itself so that callers (the CLI, merge, evaluate, the bench) can build and check a
configuration, and merge can open a shard's journal with the same key, without loading the pipeline's machinery.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from allscan.io.images import DEFAULT_MAX_PIXELS
from allscan.io.tables import TABLES_VERSION
from allscan.models.store import DEFAULT_MODEL
from allscan.pipeline.discover import DiscoveryError, check_inputs
from allscan.pipeline.shards import Shard

HEATMAP_MODES = ("all", "flagged", "none")
EXECUTORS = ("local", "ray")


class RunError(Exception):
    """Usage or configuration error (exit code 2); the message is one line for the user."""


class RunLocked(RunError):
    """Another run is writing to the same ``--out``."""


@dataclass(frozen=True)
class Progress:
    """Sent to ``RunConfig.progress`` after each image is finished."""

    done: int
    total: int
    errors: int


@dataclass
class RunConfig:
    """Everything a run needs; the CLI's options map one to one onto these fields."""

    inputs: list[Path]
    out: Path = Path("allscan-results")
    model: str = DEFAULT_MODEL
    backend: str = "auto"
    batch_size: int = 16
    heatmaps: str = "flagged"
    resume: bool = True
    workers: int | None = None  # None: os.cpu_count() (in-process for small runs); 0: in this process
    max_pixels: int = DEFAULT_MAX_PIXELS
    allow_empty: bool = False  # publish even when an INPUT with journaled results yields no image now
    report: bool = True  # recorded in run.json; the caller (the CLI) writes the report, never the pipeline
    shard: Shard | None = None  # only the slides of shard K of N (allscan merge puts the shards together)
    executor: str = "local"  # local: worker processes + the runner here; ray: prepare + infer on Ray Data
    ray_address: str | None = None  # --executor ray: the cluster (None: $RAY_ADDRESS or a new local one)
    engines_root: Path | None = None  # None: $ALLSCAN_ENGINES or the checkout's engines/
    finish_threads: int | None = None  # None: finishing.finishing_threads() (0 on <= 2 cores); results alike
    progress: Callable[[Progress], None] | None = field(default=None, repr=False)
    log: Callable[[str], None] | None = field(default=None, repr=False)

    def args(self) -> dict[str, object]:
        """The arguments as recorded in run.json."""
        return {
            "inputs": [str(p) for p in self.inputs],
            "out": str(self.out),
            "model": self.model,
            "backend": self.backend,
            "batch_size": self.batch_size,
            "heatmaps": self.heatmaps,
            "resume": self.resume,
            "workers": self.workers,  # None: the default (CPU cores; in-process for small runs)
            "max_pixels": self.max_pixels,
            "allow_empty": self.allow_empty,
            "report": self.report,
            "shard": str(self.shard) if self.shard else None,
            "executor": self.executor,
            "ray_address": self.ray_address,
        }

    @property
    def resolved_workers(self) -> int:
        return (os.cpu_count() or 1) if self.workers is None else self.workers

    def say(self, message: str) -> None:
        """Pass ``message`` to ``log`` when there is one (the pipeline never prints)."""
        if self.log:
            self.log(message)


def validate(config: RunConfig) -> None:
    """Refuse, in one line, options that cannot work, before any model or image is read."""
    if config.heatmaps not in HEATMAP_MODES:
        raise RunError(f"--heatmaps must be one of {', '.join(HEATMAP_MODES)}, not {config.heatmaps!r}")
    if config.batch_size < 1:
        raise RunError(f"--batch-size must be at least 1, not {config.batch_size}")
    if config.workers is not None and config.workers < 0:
        raise RunError(f"--workers must be 0 or more, not {config.workers}")
    if config.max_pixels < 1:
        raise RunError(f"--max-pixels must be positive, not {config.max_pixels}")
    if config.executor not in EXECUTORS:
        raise RunError(f"--executor must be one of {', '.join(EXECUTORS)}, not {config.executor!r}")
    if config.ray_address and config.executor != "ray":
        raise RunError("--ray-address needs --executor ray")
    if config.executor == "ray":
        from allscan.pipeline.ray_executor import ray_missing

        missing = ray_missing()
        if missing:
            raise RunError(missing)
    out = os.path.abspath(config.out)
    if any(os.path.abspath(inp) == out for inp in config.inputs):
        raise RunError(
            f"--out {config.out} is an INPUT: its results would be read back as slides; choose another --out"
        )
    try:
        check_inputs(list(config.inputs))
    except DiscoveryError as exc:
        raise RunError(str(exc)) from None


def config_key(heatmaps: str, max_pixels: int) -> str:
    """The journal's key for the options besides the model that change an image's rows or files (a change redoes
    the image); also how merge opens a shard's journal."""
    return json.dumps({"tables": TABLES_VERSION, "heatmaps": heatmaps, "max_pixels": max_pixels}, sort_keys=True)


__all__ = ["EXECUTORS", "HEATMAP_MODES", "Progress", "RunConfig", "RunError", "RunLocked", "config_key", "validate"]
