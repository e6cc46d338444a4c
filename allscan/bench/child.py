"""A pipeline run in a process of its own, so that its peak memory is its own and not the benchmark's.

``python -m allscan.bench.child '<json>'`` prints one JSON line: the run's counts, its wall time and the main
process's high-water mark (``VmHWM``; the parent samples the workers).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from allscan.bench.pipeline import run_once
from allscan.bench.rss import status_mb


def main(argv: list[str]) -> int:
    args = json.loads(argv[0])
    run = run_once(
        images_dir=Path(args["images_dir"]),
        out=Path(args["out"]),
        model=args["model"],
        backend=args["backend"],
        batch_size=int(args["batch_size"]),
        heatmaps=str(args["heatmaps"]),
        workers=int(args["workers"]),
        engines_root=Path(args["engines_root"]) if args.get("engines_root") else None,
    )
    report = {
        "images": run.images,
        "processed": run.processed,
        "errors": run.errors,
        "wall_s": run.wall_s,
        "main_hwm_mb": status_mb("self").get("VmHWM"),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
