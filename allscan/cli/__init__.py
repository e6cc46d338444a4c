"""The ``allscan`` command line: one Typer app, one module per command group.

Only this package talks to the terminal. Heavy libraries (torch, TensorRT) are imported inside the commands that
need them, so ``allscan run`` on a CPU never loads them.
"""

from __future__ import annotations

import typer

from allscan import __version__

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


def _register() -> None:
    # Each module adds its commands to `app`; imported here so that `allscan.cli` is the one entry point.
    from allscan.cli import bench, engines, merge, report, run, slurm, train  # noqa: F401


_register()


def main() -> None:
    app()
