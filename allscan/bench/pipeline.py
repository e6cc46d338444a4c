"""``allscan run`` end to end, timed from outside: discovery, decode, segmentation, inference, heatmaps,
tables, ``run.json`` and the HTML report, into a fresh ``--out`` (or the same one, for the rerun with
nothing new).

The per-stage costs come from the run's own timings (``RunSummary.timings``, also in ``run.json``): decode,
segment and preprocess are CPU seconds summed over the worker processes; infer, heatmap and write are the
main process's wall seconds.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from allscan.bench.rss import descendants
from allscan.pipeline.run import STAGES, RunConfig, run_batch
from allscan.report import write_report


@dataclass(frozen=True)
class PipelineRun:
    images: int  # images in the run
    processed: int  # images this run did (0 for a rerun with nothing new)
    errors: int
    wall_s: float  # whole call, report included
    backend: str
    backend_reason: str
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, as the run recorded them
    cpu_s: float = 0.0  # CPU seconds of the run's process tree (this process and its finished workers)

    @property
    def ips(self) -> float:
        return self.processed / self.wall_s if self.wall_s > 0 else 0.0

    def stage_ms(self) -> dict[str, float]:
        """Milliseconds per processed image for each stage (plus discovery and the report)."""
        n = max(1, self.processed)
        out = {s: 1000.0 * self.timings.get(s, 0.0) / n for s in STAGES}
        out["discover"] = 1000.0 * self.timings.get("discover", 0.0) / n
        out["report"] = 1000.0 * max(0.0, self.wall_s - self.timings.get("total", self.wall_s)) / n
        return out


def run_once(
    images_dir: Path,
    out: Path,
    model: str,
    backend: str,
    batch_size: int,
    heatmaps: str,
    workers: int,
    engines_root: Path | None,
) -> PipelineRun:
    """One ``run_batch`` call, configured as ``allscan run`` would be with these options (``heatmaps`` is the
    ``--heatmaps`` value: ``flagged`` is ``allscan run``'s default)."""
    config = RunConfig(
        inputs=[Path(images_dir)],
        out=Path(out),
        model=model,
        backend=backend,
        batch_size=batch_size,
        heatmaps=heatmaps,
        workers=workers,
        engines_root=engines_root,
    )
    cpu0, t0 = tree_cpu_s(), time.perf_counter()
    summary = run_batch(config)
    if config.report:  # as allscan run does after the tables: the bench times the whole command
        write_report(config.out)
    wall, cpu = time.perf_counter() - t0, tree_cpu_s() - cpu0
    return PipelineRun(
        images=summary.n_images,
        processed=summary.n_processed,
        errors=summary.n_error,
        wall_s=wall,
        backend=summary.backend,
        backend_reason=summary.backend_reason,
        timings=dict(summary.timings),
        cpu_s=cpu,
    )


def tree_cpu_s() -> float:
    """User + system CPU seconds of this process, of its waited-for children, and of every live descendant with
    the children it waited for: the run's workers come from a fork server, a child of this process that outlives
    the run and reaps them, so their CPU time shows in the fork server's, not in this process's children's."""
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    return own + sum(process_cpu_s(pid) for pid in descendants(os.getpid()))


def process_cpu_s(pid: int) -> float:
    """utime + stime + cutime + cstime of a live process, from /proc/PID/stat (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # fields 14-17 of proc(5)
