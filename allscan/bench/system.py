"""What machine the numbers were taken on: they mean little without it."""

from __future__ import annotations

import os


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask, which containers narrow), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def gpu_name() -> str | None:
    """The first CUDA device's name, or None (nvidia-smi may describe a device without bindings)."""
    from allscan.runtime.cuda import probe_cuda

    try:
        probe = probe_cuda(allow_nvidia_smi=True)
    except Exception:  # noqa: BLE001 - a broken driver means no GPU for the benchmark, not a crash
        return None
    return probe.devices[0].name if probe.devices else None


def load_average() -> float | None:
    """1-minute load average at the start, so a reader can tell a quiet machine from a busy one."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None
