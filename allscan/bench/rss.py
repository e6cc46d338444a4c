"""Peak memory of a pipeline run: the run goes to a subprocess (:mod:`allscan.bench.child`) and this module
samples the resident memory of its whole process tree (main process plus decode/segment workers) from
``/proc``.

Why a subprocess per measurement: ``ru_maxrss`` never goes down, so a second run in the same process could
only report the larger of the two, and the benchmark's own process holds torch for the naive baseline. Where
``/proc`` is missing the tree figure falls back to main peak + workers x the largest worker's peak (an upper
bound from ``getrusage``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SAMPLE_S = 0.05
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class MemoryRun:
    images: int
    wall_s: float
    tree_peak_mb: float  # largest sampled sum of RSS over the main process and its workers
    main_peak_mb: float  # the main process's own peak (getrusage)
    worker_peak_mb: float  # the largest worker's peak (getrusage)


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as handle:
                kids.extend(int(k) for k in handle.read().split())
    except OSError:
        pass
    return kids


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss_mb(pid: int) -> float:
    """Sum of RSS over ``pid`` and all its descendants, in MiB (0 where /proc is missing)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += _rss_bytes(p)
        todo.extend(_children(p))
    return total / (1024 * 1024)


def measure_run_memory(args: dict[str, object], timeout_s: float = 3600) -> MemoryRun:
    """Run the pipeline in a child process (see :mod:`allscan.bench.child`) and sample its memory."""
    cmd = [sys.executable, "-m", "allscan.bench.child", json.dumps(args)]
    # Files, not pipes: a chatty child must not block on a full pipe while it is being sampled.
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        proc = subprocess.Popen(cmd, stdout=out_file, stderr=err_file, text=True)
        peak = 0.0
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None:
            peak = max(peak, tree_rss_mb(proc.pid))
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                break
            time.sleep(SAMPLE_S)
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    if proc.returncode != 0:
        last = (err.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"memory run failed (exit {proc.returncode}): {last}")
    report = json.loads(out.strip().splitlines()[-1])
    if peak <= 0:  # no /proc: bound it from getrusage
        peak = report["main_peak_mb"] + int(str(args.get("workers", 1))) * report["worker_peak_mb"]
    return MemoryRun(
        images=int(report["images"]),
        wall_s=float(report["wall_s"]),
        tree_peak_mb=peak,
        main_peak_mb=float(report["main_peak_mb"]),
        worker_peak_mb=float(report["worker_peak_mb"]),
    )


def child_args(
    images_dir: Path,
    out: Path,
    model: str,
    backend: str,
    batch_size: int,
    workers: int,
    engines_root: Path | None,
) -> dict[str, object]:
    """The JSON the child reads; heatmaps on, as in the headline figure."""
    return {
        "images_dir": str(images_dir),
        "out": str(out),
        "model": model,
        "backend": backend,
        "batch_size": batch_size,
        "heatmaps": True,
        "workers": workers,
        "engines_root": str(engines_root) if engines_root else None,
    }
