"""`allscan report OUT_DIR`: rebuild a run's report.html from its tables alone (no model needed)."""

from __future__ import annotations

from pathlib import Path

import typer

from allscan.cli import app


@app.command("report")
def report(
    out_dir: Path = typer.Argument(..., help="A run's output folder (the one holding images.csv)."),
) -> None:
    """Rebuild OUT_DIR/report.html from images.csv, slides.csv and run.json; thumbnails are kept."""
    if not (out_dir / "images.csv").is_file():
        typer.echo(f"allscan report: no images.csv in {out_dir}; is it an 'allscan run' output folder?", err=True)
        raise typer.Exit(2)
    from allscan.io.records import RecordError
    from allscan.report import write_report

    try:
        typer.echo(str(write_report(out_dir)))
    except (RecordError, FileNotFoundError) as exc:  # a table missing or not the contract's: one line, no trace
        typer.echo(f"allscan report: {exc}", err=True)
        raise typer.Exit(2) from None
