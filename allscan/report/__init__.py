"""The HTML report of a run: one self-contained page built from the run's tables alone.

`write_report(out_dir)` is called by `allscan run` at the end of every run and by `allscan report OUT_DIR`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_report"]


def write_report(out_dir: Path) -> Path:
    """Write `<out_dir>/report.html` (and missing thumbnails under `<out_dir>/report/`); return its path.

    Raises FileNotFoundError when `out_dir` has no images.csv. OpenCV is imported only when a report is made.
    """
    from allscan.report.build import build

    return build(Path(out_dir))
