"""The HTML report of a run: one self-contained page built from the run's tables alone.

`write_report(out_dir)` is called by `allscan run` at the end of every run and by `allscan report OUT_DIR`.
"""

from __future__ import annotations

import html
from pathlib import Path

__all__ = ["write_report"]


def write_report(out_dir: Path) -> Path:
    """Write `<out_dir>/report.html` from the tables in `out_dir` and return its path."""
    out_dir = Path(out_dir)
    path = out_dir / "report.html"
    path.write_text(
        "<!doctype html><meta charset='utf-8'><title>allscan report</title>"
        f"<p>Report for {html.escape(str(out_dir.name))} (placeholder).</p>",
        encoding="utf-8",
    )
    return path
