"""Slurm job arrays for ``allscan run --shard K/N`` plus a dependent ``allscan merge``: text only, no scheduling.

Slurm does the distribution; allscan only writes two sbatch scripts. Task K runs shard K/N into
``OUT/shards/K``; the merge job starts once every task has succeeded (``afterok``) and is dropped by Slurm when
one fails (``--kill-on-invalid-dep=yes``; without it the merge waits forever). A shard that finished with some
unusable images (exit 1, the rows say why) counts as done, so one bad JPEG does not block the merge.

Stopping: Slurm sends ``USR1`` to the batch shell two minutes before the time limit (``--signal=B:USR1@120``);
the script passes it on to allscan as ``SIGTERM`` (allscan commits what it finished and exits 143) and requeues
the task, which resumes from its journal (``--requeue``). A ``scancel`` (``SIGTERM``) stops the task the same way
but is not requeued.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

WARN_S = 120  # seconds before the time limit at which a task is asked to stop and is requeued


@dataclass(frozen=True)
class SlurmPlan:
    """What ``allscan slurm`` was asked for; paths absolute, since tasks may start in another folder."""

    inputs: list[Path]
    out: Path
    shards: int
    allscan: str  # the command that runs allscan on the nodes
    run_options: list[str]  # passed to every ``allscan run`` (model, heatmaps, backend, ...)
    partition: str | None = None
    gpus_per_task: int | None = None
    time: str | None = None
    cpus_per_task: int | None = None

    def shard_out(self, k: int | str) -> str:
        return f"{self.out}/shards/{k}"


def _headers(plan: SlurmPlan, name: str, log: str) -> list[str]:
    lines = [f"#SBATCH --job-name={name}", f"#SBATCH --output={plan.out}/slurm/{log}", "#SBATCH --open-mode=append"]
    if plan.partition:
        lines.append(f"#SBATCH --partition={plan.partition}")
    if plan.time:
        lines.append(f"#SBATCH --time={plan.time}")
    return lines


def array_script(plan: SlurmPlan) -> str:
    """The job array: task K runs ``allscan run ... --shard K/N -o OUT/shards/K``."""
    head = _headers(plan, "allscan", "shard-%a.log")
    head[1:1] = [f"#SBATCH --array=1-{plan.shards}", "#SBATCH --requeue", f"#SBATCH --signal=B:USR1@{WARN_S}"]
    if plan.gpus_per_task:
        head.append(f"#SBATCH --gpus-per-task={plan.gpus_per_task}")
    if plan.cpus_per_task:
        head.append(f"#SBATCH --cpus-per-task={plan.cpus_per_task}")
    command = [
        plan.allscan,
        "run",
        *(shlex.quote(str(p)) for p in plan.inputs),
        *(shlex.quote(o) for o in plan.run_options),
        "--shard",
        f'"$SLURM_ARRAY_TASK_ID/{plan.shards}"',
        "-o",
        f'{shlex.quote(str(plan.out))}/shards/"$SLURM_ARRAY_TASK_ID"',
        "--quiet",
    ]
    body = f"""set -u
# Time limit near (USR1): stop allscan cleanly (SIGTERM: finished images are journaled) and requeue this task,
# which resumes where it stopped. scancel (TERM): stop cleanly, no requeue.
requeue=0
{" ".join(command)} &
child=$!
trap 'requeue=1; kill -TERM "$child" 2>/dev/null' USR1
trap 'kill -TERM "$child" 2>/dev/null' TERM
while :; do  # a trap interrupts wait: wait again until allscan has really ended
    wait "$child"; code=$?
    kill -0 "$child" 2>/dev/null || break
done
wait "$child" 2>/dev/null && code=0 || {{ c=$?; [ "$c" = 127 ] || code=$c; }}  # status not yet collected
if [ "$requeue" = 1 ]; then
    scontrol requeue "${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
fi
# 1: the shard is finished, some images were unusable (their rows say why): the merge may go ahead.
if [ "$code" = 1 ]; then code=0; fi
exit "$code"
"""
    return "#!/bin/bash\n" + "\n".join(head) + "\n\n" + body


def merge_script(plan: SlurmPlan) -> str:
    """The merge job (submitted with ``--dependency=afterok:<array>``): every shard -> the tables in OUT."""
    head = _headers(plan, "allscan-merge", "merge.log")
    shards = " ".join(shlex.quote(plan.shard_out(k)) for k in range(1, plan.shards + 1))
    body = f"""set -u
{plan.allscan} merge {shards} -o {shlex.quote(str(plan.out))}
code=$?
# 1: merged, some images were unusable (their rows say why): the night's work is done.
if [ "$code" = 1 ]; then code=0; fi
exit "$code"
"""
    return "#!/bin/bash\n" + "\n".join(head) + "\n\n" + body


def submit_commands(array: Path, merge: Path, array_id: str = "$array") -> list[list[str]]:
    """The two sbatch calls: the array, then the merge that waits for all of it (or is dropped on a failure)."""
    return [
        ["sbatch", "--parsable", str(array)],
        ["sbatch", "--parsable", f"--dependency=afterok:{array_id}", "--kill-on-invalid-dep=yes", str(merge)],
    ]


def job_id(parsable: str) -> str:
    """The job id in ``sbatch --parsable``'s output (``id`` or ``id;cluster``)."""
    return parsable.strip().split(";")[0]


__all__ = ["SlurmPlan", "array_script", "job_id", "merge_script", "submit_commands"]
