"""The ``allscan`` command line: one Typer app, one module per command group, registered here by hand.

Only this package talks to the terminal. The command modules import nothing heavy at the top (torch, TensorRT,
scikit-learn, OpenCV's users come inside the commands), so ``allscan --help`` stays fast and ``allscan run`` on a
CPU never loads torch (tested). Options shared by several commands live in :mod:`allscan.cli.options`, the one
error path in :mod:`allscan.cli.errors`.
"""

from __future__ import annotations

import typer

from allscan import __version__
from allscan.cli import bench, doctor, engines, evaluate, merge, models, report, run, slurm, train

app = typer.Typer(
    name="allscan",
    help="Find white cells in blood-smear images, call each image Benign / Early Pre-B / Pre-B / Pro-B ALL, and "
    "write tables and heatmaps a lab can read. Research tool, not a diagnostic device.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"allscan {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """allscan: batch ALL classification of blood-smear images."""


# The commands, in the order `allscan --help` lists them: the nightly job first, the data scientist's last.
app.command("run")(run.run)
app.command("merge")(merge.merge)
app.command("slurm")(slurm.slurm)
app.command("report")(report.report)
app.command("build-engine")(engines.build_engine_cmd)
app.command("fp16-check", hidden=True)(engines.fp16_check_cmd)
app.command("models")(models.models_cmd)
app.command("doctor")(doctor.doctor)
app.command("train")(train.train_command)
app.command("evaluate")(evaluate.evaluate_command)
app.command("bench")(bench.bench)


def main() -> None:
    app()
