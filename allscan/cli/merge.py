"""``allscan merge OUT_1 ... OUT_N -o OUT``: the shards of ``allscan run --shard K/N`` -> the tables of one run.

Exit codes as for ``allscan run``: 0 merged, no image failed; 1 merged, some images failed (their rows say why);
2 shards that cannot be merged (different models, options or inputs, overlapping, missing, unfinished or still
running: one line naming the shard); 3 internal error; 4 storage fault.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from allscan.cli.errors import reported
from allscan.cli.options import NoReport, ResultsOut
from allscan.cli.reporting import report_or_warn


def merge(
    shards: Annotated[
        list[Path],
        typer.Argument(metavar="OUT_1 ... OUT_N", help="The --out folders of allscan run --shard K/N, every K once."),
    ],
    *,
    out: ResultsOut,
    no_report: NoReport = False,
) -> None:
    """Merge shards into images.csv, cells.csv and slides.csv byte-identical to one run over the same inputs."""
    from allscan.pipeline.merge import MergeConfig, merge_shards

    console = Console()

    def log(message: str) -> None:
        console.print(f"allscan: {message}", highlight=False, soft_wrap=True)

    with reported("merge", out):  # MergeError: 2; storage faults and bugs: their documented exit codes
        summary = merge_shards(MergeConfig(shards=list(shards), out=out, log=log))
        if not no_report:
            report_or_warn(out, summary)
    for warning in summary.warnings:
        log(f"warning: {warning}")
    if summary.n_error:
        log(f"{summary.n_error} images failed: see the 'error' column of {out / 'images.csv'}")
    raise typer.Exit(summary.exit_code)
