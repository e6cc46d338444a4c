"""A pipeline run in a process of its own, so its peak memory is its own and not the benchmark's (which may
hold torch and the naive network). ``python -m allscan.bench.child '<json>'`` prints one JSON line: the
run's counts and wall time, and the peak RSS of the main process and of the largest worker, from
``getrusage``.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

from allscan.bench.pipeline import run_once


def _peak_mb(who: int) -> float:
    # ru_maxrss is in KiB on Linux, in bytes on macOS
    divisor = 1024 * 1024 if sys.platform == "darwin" else 1024
    return resource.getrusage(who).ru_maxrss / divisor


def main(argv: list[str]) -> int:
    args = json.loads(argv[0])
    run = run_once(
        images_dir=Path(args["images_dir"]),
        out=Path(args["out"]),
        model=args["model"],
        backend=args["backend"],
        batch_size=int(args["batch_size"]),
        heatmaps=bool(args["heatmaps"]),
        workers=int(args["workers"]),
        engines_root=Path(args["engines_root"]) if args.get("engines_root") else None,
    )
    print(
        json.dumps(
            {
                "images": run.images,
                "processed": run.processed,
                "errors": run.errors,
                "wall_s": run.wall_s,
                "main_peak_mb": _peak_mb(resource.RUSAGE_SELF),
                "worker_peak_mb": _peak_mb(resource.RUSAGE_CHILDREN),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
