"""What a run did, assembled once from what its steps return: the processing loop's :class:`Processed`, the
table writer's :class:`Published`, and the discovery's warnings.

Why return values: the summary used to be one mutable object that every step wrote into, so which step set
which count was found only by reading all of them. Each step now returns its own facts; :func:`summarize` is the
one place they meet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from allscan.io.records import Counts

# Stage timings in run.json (seconds): decode, segment and preprocess are summed over the worker processes (CPU
# time spent, may exceed the wall time); infer, heatmap and write are the main process's wall time in the runner,
# in CAM upsampling + rendering + PNG writing, and in journal and table writing.
STAGES = ("decode", "segment", "preprocess", "infer", "heatmap", "write")


@dataclass(frozen=True)
class Processed:
    """What the processing loop did: the runner it chose and the images it finished."""

    backend: str
    backend_reason: str
    precision: str
    n_processed: int = 0
    workers_used: int = 0  # decode/segment processes started (0: in the main process)
    timings: dict[str, float] = field(default_factory=dict)


NOTHING_TO_DO = Processed(backend="none", backend_reason="nothing to process", precision="")


@dataclass(frozen=True)
class Published:
    """What the published tables hold."""

    n_images: int
    n_ok: int
    n_error: int
    n_flagged: int
    n_slides: int
    per_class: dict[str, int]


@dataclass
class RunSummary:
    """What a run did; also written, with more detail, to ``run.json``."""

    out_dir: Path
    model_id: str
    backend: str
    backend_reason: str
    precision: str
    n_images: int = 0
    n_ok: int = 0
    n_error: int = 0
    n_processed: int = 0  # done by this run
    n_flagged: int = 0
    n_slides: int = 0
    workers_used: int = 0  # decode/segment processes this run started (0: in the main process)
    per_class: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    report_path: Path | None = None  # set by whoever writes the report (the CLI)
    warnings: list[str] = field(default_factory=list)
    discovered: dict[str, object] = field(default_factory=dict)  # the full discovery, for a shard's run.json

    @property
    def n_reused(self) -> int:
        """Images whose results were taken from the journal."""
        return self.n_images - self.n_processed

    @property
    def images_per_s(self) -> float:
        """Images processed by this run per second of the whole run."""
        return self.n_processed / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0: every image processed; 1: the run finished but some images failed (their rows say why)."""
        return 1 if self.n_error else 0

    def counts(self) -> Counts:
        """run.json ``counts``: the same numbers, in the contract's record."""
        return Counts(
            images=self.n_images,
            ok=self.n_ok,
            error=self.n_error,
            processed=self.n_processed,
            reused=self.n_reused,
            flagged=self.n_flagged,
            slides=self.n_slides,
            per_class=self.per_class,
        )


def summarize(
    out_dir: Path,
    model_id: str,
    processed: Processed,
    published: Published,
    wall_s: float,
    timings: dict[str, float],
    warnings: list[str],
    discovered: dict[str, object],
) -> RunSummary:
    """The run's summary from its steps' results (``timings`` is the whole run's, ``wall_s`` its duration)."""
    return RunSummary(
        out_dir=out_dir,
        model_id=model_id,
        backend=processed.backend,
        backend_reason=processed.backend_reason,
        precision=processed.precision,
        n_images=published.n_images,
        n_ok=published.n_ok,
        n_error=published.n_error,
        n_processed=processed.n_processed,
        n_flagged=published.n_flagged,
        n_slides=published.n_slides,
        workers_used=processed.workers_used,
        per_class=published.per_class,
        timings=timings,
        wall_s=wall_s,
        warnings=warnings,
        discovered=discovered,
    )


__all__ = ["NOTHING_TO_DO", "STAGES", "Processed", "Published", "RunSummary", "summarize"]
