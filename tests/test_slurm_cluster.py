"""``allscan slurm --submit`` on a real Slurm: the job array and the merge job, end to end, and a requeued task.

Needs a running cluster with an idle node (CI starts a one-node one on localhost with ``.ci/slurm-up``, as root);
skipped, with the reason, where there is none. The jobs inherit this process's environment (sbatch's default
``--export=ALL``), so ``$ALLSCAN_ENGINES`` reaches them and they use the tiny test model; they run as the
submitting user on this machine, so ``tmp_path`` is their shared file system.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_synth import make_slides
from typer.testing import CliRunner

from allscan.cli import app
from allscan.pipeline.discover import JOURNAL_NAME
from allscan.pipeline.shards import shard_of

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TABLES = ("images.csv", "cells.csv", "slides.csv")
SHARDS = 3
WAIT_S = 120  # for the merge job, from submission
DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def _slurm(*args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)


def _no_cluster() -> str | None:
    """Why there is no usable cluster here, or None."""
    for tool in ("sinfo", "sbatch", "scontrol", "scancel"):
        if shutil.which(tool) is None:
            return f"{tool} not found: no Slurm here (as root, .ci/slurm-up starts a one-node one)"
    try:
        done = _slurm("sinfo", "-h", "-N", "-o", "%N %t")
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 15 s: slurmctld unreachable"
    if done.returncode != 0:
        return f"sinfo failed: {done.stderr.strip() or done.returncode} (as root, .ci/slurm-up starts a cluster)"
    states = done.stdout.split()[1::2]
    if not any(s in ("idle", "mix") for s in states):
        return f"no idle Slurm node (sinfo: {done.stdout.strip() or 'no nodes'})"
    return None


@pytest.fixture(scope="module")
def no_cluster() -> str | None:
    """Asked once: with slurmctld down, sinfo takes ~10 s to give up."""
    return _no_cluster()


@pytest.fixture()
def cluster(no_cluster: str | None) -> Iterator[list[str]]:
    """Skips without a cluster; yields a list for the job ids a test submits, all cancelled at the end."""
    reason = no_cluster
    if reason:
        pytest.skip(reason)
    jobs: list[str] = []
    yield jobs
    for job in jobs:  # no-ops for finished jobs; never leave a test's jobs in the queue
        _slurm("scancel", job)


def _job(job: str) -> list[dict[str, str]]:
    """``scontrol show job -o``: one dict per job (per array task) of the fields without spaces in their values."""
    done = _slurm("scontrol", "show", "job", "-o", job)
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in done.stdout.splitlines() if line.strip()]


def _logs(out: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')}" for p in sorted((out / "slurm").glob("*.log")))


def _wait(job: str, deadline: float, out: Path) -> dict[str, str]:
    """Poll until ``job`` has ended; its fields. Fails (with the task logs) at the deadline."""
    while time.monotonic() < deadline:
        fields = _job(job)
        if fields and fields[0].get("JobState") in DONE:
            return fields[0]
        time.sleep(0.5)
    pytest.fail(f"job {job} not done in {WAIT_S} s: {_job(job)}\n{_logs(out)}")


def _submit(inputs: Path, out: Path, jobs: list[str]) -> tuple[str, str]:
    result = CliRunner().invoke(
        app, ["slurm", str(inputs), "-o", str(out), "--shards", str(SHARDS), "-m", "tiny", "--submit"]
    )
    assert result.exit_code == 0, result.output
    found = re.search(r"submitted array job (\d+) \(3 tasks\) and merge job (\d+) \(afterok:\1\)", result.output)
    assert found, result.output
    jobs.extend(found.groups())
    return found.group(1), found.group(2)


def _local(inputs: Path, out: Path) -> dict[str, bytes]:
    """A plain ``allscan run`` of the same inputs with the same options: the tables the merge must equal."""
    result = CliRunner().invoke(app, ["run", str(inputs), "-m", "tiny", "-o", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return {t: (out / t).read_bytes() for t in TABLES}


def _tables(out: Path) -> dict[str, bytes]:
    return {t: (out / t).read_bytes() for t in TABLES}


def test_slurm_array_and_merge_publish_one_runs_tables(cluster: list[str], tiny_store: Path, tmp_path: Path) -> None:
    make_slides(tmp_path / "in", 18, n_slides=6)
    t0 = time.monotonic()
    array, merge = _submit(tmp_path / "in", tmp_path / "night", cluster)
    expected = _local(tmp_path / "in", tmp_path / "single")
    ended = _wait(merge, t0 + WAIT_S, tmp_path / "night")
    assert ended["JobState"] == "COMPLETED", f"{ended}\n{_logs(tmp_path / 'night')}"
    tasks = _job(array)
    assert sorted(t["ArrayTaskId"] for t in tasks) == ["1", "2", "3"]
    assert {t["JobState"] for t in tasks} == {"COMPLETED"} and {t["ExitCode"] for t in tasks} == {"0:0"}
    assert _tables(tmp_path / "night") == expected
    for k in range(1, SHARDS + 1):
        assert (tmp_path / "night" / "shards" / str(k) / "run.json").is_file()


def _biggest_shard(n_slides: int) -> tuple[int, int]:
    """(K, slides in it) for the shard that gets the most of ``slide-0`` ... ``slide-{n_slides-1}``."""
    counts = {k: sum(shard_of(f"slide-{i}", SHARDS) == k for i in range(n_slides)) for k in range(1, SHARDS + 1)}
    big = max(counts, key=lambda k: counts[k])
    return big, counts[big]


def _under_way(journal: Path, task: str, deadline: float, out: Path) -> None:
    """Wait until the task's first batch is journaled: it is well under way (shard of 120+ images, batches of 16)."""
    while _committed(journal) < 16:
        assert time.monotonic() < deadline, f"task {task} never started\n{_job(task)}\n{_logs(out)}"
        time.sleep(0.05)


def _committed(journal: Path) -> int:
    """Images committed to a shard's journal so far (0 while it does not exist or is being created)."""
    if not journal.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=0.2) as db:
            return int(db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_a_task_stopped_and_requeued_resumes_and_the_merge_still_equals_one_run(
    cluster: list[str], tiny_store: Path, tmp_path: Path
) -> None:
    """Slurm's time-limit warning (USR1 to the batch shell, as ``--signal=B:USR1@120`` sends it) reaches the task
    mid-shard: the script stops allscan with SIGTERM (it journals what it finished, exit 143) and requeues the task;
    the requeued task resumes from the journal, the merge waits for it and publishes one run's tables."""
    make_slides(tmp_path / "in", 360, n_slides=6)
    big, n_slides = _biggest_shard(6)
    size = 60 * n_slides
    night = tmp_path / "night"
    t0 = time.monotonic()
    array, merge = _submit(tmp_path / "in", night, cluster)
    task = f"{array}_{big}"
    journal = night / "shards" / str(big) / JOURNAL_NAME
    _under_way(journal, task, t0 + WAIT_S, night)
    stopped = _slurm("scancel", "--batch", "--signal=USR1", task)
    assert stopped.returncode == 0, stopped.stderr
    at_stop = _committed(journal)
    while not (_job(task) and _job(task)[0].get("Restarts") == "1" and _job(task)[0]["JobState"] == "PENDING"):
        assert time.monotonic() < t0 + WAIT_S, f"task {task} not requeued: {_job(task)}\n{_logs(night)}"
        time.sleep(0.2)
    # A requeued batch job may only start again ~2 min later (its begin time); a test need not wait for that.
    assert _slurm("scontrol", "update", f"JobId={task}", "StartTime=now").returncode == 0
    local = _local(tmp_path / "in", tmp_path / "single")
    ended = _wait(merge, t0 + WAIT_S, night)
    assert ended["JobState"] == "COMPLETED", f"{ended}\n{_logs(night)}"
    again = _job(task)[0]
    assert (again["JobState"], again["Restarts"], again["ExitCode"]) == ("COMPLETED", "1", "0:0")
    assert _tables(night) == local
    log = (night / "slurm" / f"shard-{big}.log").read_text()
    assert "interrupted by SIGTERM; finished images are journaled" in log  # the first attempt stopped cleanly
    counts = json.loads((night / "shards" / str(big) / "run.json").read_text())["counts"]
    assert counts["images"] == size and 16 <= at_stop <= counts["reused"] < size  # resumed, not redone
    assert counts["processed"] == size - counts["reused"]


def test_a_task_stopped_by_scancel_is_not_requeued_and_the_merge_is_dropped(
    cluster: list[str], tiny_store: Path, tmp_path: Path
) -> None:
    """``scancel --batch --signal=TERM`` (a person stopping the task): allscan stops cleanly (143, the finished images
    journaled), the task is not requeued, and Slurm drops the merge instead of leaving it pending forever."""
    make_slides(tmp_path / "in", 360, n_slides=6)
    big, n_slides = _biggest_shard(6)
    night = tmp_path / "night"
    t0 = time.monotonic()
    array, merge = _submit(tmp_path / "in", night, cluster)
    task = f"{array}_{big}"
    journal = night / "shards" / str(big) / JOURNAL_NAME
    _under_way(journal, task, t0 + WAIT_S, night)
    assert _slurm("scancel", "--batch", "--signal=TERM", task).returncode == 0
    ended = _wait(merge, t0 + WAIT_S, night)
    assert (ended["JobState"], ended["Reason"]) == ("CANCELLED", "DependencyNeverSatisfied"), ended
    stopped = _job(task)[0]
    assert (stopped["JobState"], stopped["Restarts"], stopped["ExitCode"]) == ("FAILED", "0", "143:0")
    assert "interrupted by SIGTERM; finished images are journaled" in (night / "slurm" / f"shard-{big}.log").read_text()
    assert 16 <= _committed(journal) < 60 * n_slides
    assert not (night / "images.csv").exists()
