"""``allscan slurm INPUT... -o OUT --shards N``: an sbatch job array of shards plus a merge job that waits for it.

Writes the two scripts and prints the sbatch commands; with ``--submit`` it runs them (``sbatch --parsable``) and
prints the two job ids. Exit 2 on usage errors and when sbatch is missing or refuses a script.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from allscan.cli.errors import fail
from allscan.cli.options import Backend, BackendOpt, Heatmaps, HeatmapsOpt, Inputs, ModelName, ResultsOut
from allscan.models.store import DEFAULT_MODEL


def _fail(message: str) -> typer.Exit:
    return fail("slurm", message)


def _allscan_command() -> str:
    """How the nodes start allscan: this installation's own entry point (the nodes share its file system).

    The one beside this interpreter, never the first ``allscan`` on PATH: an sbatch job starts with the submitter's
    PATH, which need not hold this installation (a venv used without activating it, pytest, cron) or may hold
    another one first. Without an entry point there (``pip install --user``), this interpreter runs the CLI.
    """
    beside = Path(sys.executable).parent / "allscan"  # not resolved: a venv's python links out of the venv
    if beside.is_file() and os.access(beside, os.X_OK):
        return shlex.quote(str(beside))
    return f"{shlex.quote(sys.executable)} -c 'from allscan.cli import main; main()'"


def slurm(
    inputs: Inputs,
    *,
    out: ResultsOut,
    shards: Annotated[int, typer.Option("--shards", min=1, help="Number of array tasks (shards).")],
    model: ModelName = DEFAULT_MODEL,
    heatmaps: HeatmapsOpt = Heatmaps.flagged,
    backend: BackendOpt = Backend.auto,
    partition: Annotated[str | None, typer.Option("--partition", help="Slurm partition for both jobs.")] = None,
    gpus_per_task: Annotated[int | None, typer.Option("--gpus-per-task", min=1, help="GPUs per array task.")] = None,
    cpus_per_task: Annotated[int | None, typer.Option("--cpus-per-task", min=1, help="CPUs per array task.")] = None,
    time_limit: Annotated[
        str | None, typer.Option("--time", help="Time limit per task (Slurm format, e.g. 2:00:00).")
    ] = None,
    script: Annotated[
        Path | None,
        typer.Option(
            "--script",
            help="Where to write the array script (default OUT/slurm/allscan.sbatch); the merge script goes next "
            "to it as <name>-merge.sbatch.",
        ),
    ] = None,
    submit: Annotated[
        bool, typer.Option("--submit", help="Submit both jobs with sbatch (else print the commands).")
    ] = False,
) -> None:
    """Write an sbatch job array (task K: allscan run --shard K/N into OUT/shards/K) and a merge job into OUT."""
    from allscan.pipeline.slurm import SlurmPlan, array_script, merge_script, submit_commands

    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        raise _fail(f"input not found: {missing[0]}")
    plan = SlurmPlan(
        inputs=[p.resolve() for p in inputs],
        out=out.resolve(),
        shards=shards,
        allscan=_allscan_command(),
        run_options=["-m", model, "--heatmaps", heatmaps.value, "--backend", backend.value],
        partition=partition,
        gpus_per_task=gpus_per_task,
        time=time_limit,
        cpus_per_task=cpus_per_task,
    )
    array = (script or plan.out / "slurm" / "allscan.sbatch").resolve()
    merge = array.with_name(f"{array.stem}-merge.sbatch")
    (plan.out / "slurm").mkdir(parents=True, exist_ok=True)  # the tasks' logs go there
    array.parent.mkdir(parents=True, exist_ok=True)
    array.write_text(array_script(plan), encoding="utf-8")
    merge.write_text(merge_script(plan), encoding="utf-8")
    first, second = submit_commands(array, merge)
    if not submit:
        typer.echo(f"# wrote {array} and {merge}; submit with:")
        typer.echo(f"array=$(sbatch --parsable {array} | cut -d';' -f1) && " + " ".join(second))
        return
    array_id = _sbatch(first)
    merge_id = _sbatch(submit_commands(array, merge, array_id)[1])
    typer.echo(f"submitted array job {array_id} ({shards} tasks) and merge job {merge_id} (afterok:{array_id})")


def _sbatch(command: list[str]) -> str:
    """Run one sbatch call; its job id, or exit 2 with sbatch's own reason."""
    from allscan.pipeline.slurm import job_id

    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise _fail("sbatch not found: run this on a Slurm login node, or drop --submit") from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise _fail(f"{' '.join(command)} failed: {reason}")
    return job_id(done.stdout)
