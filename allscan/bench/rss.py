"""Peak memory of a pipeline run: the run goes to a subprocess (:mod:`allscan.bench.child`) and this module
samples the resident memory of its process tree (main process plus decode/segment workers) from ``/proc``.

Why a subprocess per measurement: a process's peak never goes down, so a second run in the same process
could only report the larger of the two, and the benchmark's own process holds torch for the naive baseline.
Why ``/proc`` and not ``getrusage``: Linux carries ``ru_maxrss`` across fork and exec, so a child started
from a big parent reports the parent's size; ``VmHWM`` belongs to the new address space and does not.
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


@dataclass(frozen=True)
class MemoryRun:
    images: int
    wall_s: float
    tree_peak_mb: float  # largest sampled sum of VmRSS over the main process and its workers
    main_peak_mb: float  # the main process's own high-water mark (VmHWM)
    worker_peak_mb: float  # the largest worker's high-water mark seen


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...), from /proc; empty without /proc."""
    found, todo = [], _children(pid)
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(_children(p))
    return found


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as handle:
                kids.extend(int(k) for k in handle.read().split())
    except OSError:
        pass
    return kids


def status_mb(pid: int | str) -> dict[str, float]:
    """VmRSS and VmHWM of a process in MiB, from /proc (empty where it is gone or there is no /proc)."""
    found: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    found[key] = int(value.split()[0]) / 1024  # kB
    except (OSError, ValueError):
        pass
    return found


class TreeSampler:
    """Peaks over a process and its descendants, one ``sample()`` at a time."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.tree_peak = self.main_peak = self.worker_peak = 0.0

    def sample(self) -> None:
        main = status_mb(self.pid)
        self.main_peak = max(self.main_peak, main.get("VmHWM", 0.0))
        total = main.get("VmRSS", 0.0)
        for p in descendants(self.pid):
            status = status_mb(p)
            total += status.get("VmRSS", 0.0)
            self.worker_peak = max(self.worker_peak, status.get("VmHWM", 0.0))
        self.tree_peak = max(self.tree_peak, total)


def measure_run_memory(args: dict[str, object], timeout_s: float = 3600) -> MemoryRun:
    """Run the pipeline in a child process (see :mod:`allscan.bench.child`) and sample its memory."""
    cmd = [sys.executable, "-m", "allscan.bench.child", json.dumps(args)]
    # Files, not pipes: a chatty child must not block on a full pipe while it is being sampled.
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        proc = subprocess.Popen(cmd, stdout=out_file, stderr=err_file, text=True)
        sampler = TreeSampler(proc.pid)
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None:
            sampler.sample()
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
    main_peak = max(sampler.main_peak, float(report.get("main_hwm_mb") or 0.0))
    return MemoryRun(
        images=int(report["images"]),
        wall_s=float(report["wall_s"]),
        tree_peak_mb=max(sampler.tree_peak, main_peak),
        main_peak_mb=main_peak,
        worker_peak_mb=sampler.worker_peak,
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
    """The JSON the child reads; a heatmap for every image, the heaviest run."""
    return {
        "images_dir": str(images_dir),
        "out": str(out),
        "model": model,
        "backend": backend,
        "batch_size": batch_size,
        "heatmaps": "all",
        "workers": workers,
        "engines_root": str(engines_root) if engines_root else None,
    }
