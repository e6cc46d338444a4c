"""`allscan report OUT_DIR`: rebuild a run's report.html from its tables alone (no model needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from allscan.cli.errors import fail, reported


def report(
    out_dir: Annotated[Path, typer.Argument(help="A run's output folder (the one holding images.csv).")],
) -> None:
    """Rebuild OUT_DIR/report.html from images.csv, slides.csv and run.json; thumbnails are kept."""
    if not (out_dir / "images.csv").is_file():
        raise fail("report", f"no images.csv in {out_dir}; is it an 'allscan run' output folder?")
    from allscan.report import write_report

    # a table missing or not the contract's (RecordError): one line, no trace
    with reported("report", usage=(FileNotFoundError,)):
        typer.echo(str(write_report(out_dir)))
