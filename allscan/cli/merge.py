"""``allscan merge OUT_1 ... OUT_N -o OUT``: the shards of ``allscan run --shard K/N`` -> the tables of one run.

Exit codes as for ``allscan run``: 0 merged, no image failed; 1 merged, some images failed (their rows say why);
2 shards that cannot be merged (different models, options or inputs, overlapping, missing, unfinished or still
running: one line naming the shard); 3 internal error; 4 storage fault.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from allscan.cli import app


@app.command("merge")
def merge(
    shards: list[Path] = typer.Argument(
        ..., metavar="OUT_1 ... OUT_N", help="The --out folders of allscan run --shard K/N, every K once."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the merged tables, heatmaps and report."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not write report.html."),
) -> None:
    """Merge shards into images.csv, cells.csv and slides.csv byte-identical to one run over the same inputs."""
    from allscan.pipeline.faults import failure_line
    from allscan.pipeline.merge import MergeConfig, MergeError, merge_shards

    console = Console()

    def log(message: str) -> None:
        console.print(f"allscan: {message}", highlight=False, soft_wrap=True)

    try:
        summary = merge_shards(MergeConfig(shards=list(shards), out=out, report=not no_report, log=log))
    except MergeError as exc:
        print(f"allscan merge: error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    except Exception as exc:  # noqa: BLE001 - storage faults and bugs map to their documented exit codes
        code, line = failure_line(exc, out)
        print(f"allscan merge: {line}", file=sys.stderr)
        raise typer.Exit(code) from None
    for warning in summary.warnings:
        log(f"warning: {warning}")
    if summary.n_error:
        log(f"{summary.n_error} images failed: see the 'error' column of {out / 'images.csv'}")
    raise typer.Exit(summary.exit_code)
