"""Nightly-job behaviour: one run per --out at a time; a SIGKILLed run resumes to exactly the same tables."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pipeline_synth import make_slides

from allscan.pipeline.journal import JOURNAL_NAME, LOCK_NAME, RunLock
from allscan.pipeline.run import RunConfig, RunLocked, run_batch

REPO = Path(__file__).resolve().parents[1]
TABLES = ("images.csv", "cells.csv", "slides.csv")


def test_second_run_on_same_out_refuses_at_once(tiny_store: Path, tmp_path: Path) -> None:
    make_slides(tmp_path / "in", 2)
    out = tmp_path / "out"
    out.mkdir()
    with RunLock(out):  # a run in progress (this process holds the lock)
        with pytest.raises(RunLocked, match="another allscan run"):
            run_batch(RunConfig(inputs=[tmp_path / "in"], out=out, model="tiny", workers=0))
        cli = subprocess.run(
            [sys.executable, "-c", "from allscan.cli import main; main()", "run", str(tmp_path / "in"),
             "-m", "tiny", "-o", str(out), "--workers", "0"],
            capture_output=True, text=True, timeout=120, env=os.environ.copy(),
        )  # fmt: skip
        assert cli.returncode == 2
        message = cli.stderr.strip().splitlines()
        assert len(message) == 1 and f"(pid {os.getpid()}) is writing to {out}" in message[0]
        assert not (out / "images.csv").exists()
    summary = run_batch(RunConfig(inputs=[tmp_path / "in"], out=out, model="tiny", workers=0, report=False))
    assert summary.n_ok == 2  # the lock is free again once its holder is done


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from allscan.pipeline.run import RunConfig, run_batch

    kill_after = int(sys.argv[3])

    def progress(event):
        if event.done >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: like a power cut for the process

    run_batch(RunConfig(inputs=[Path(sys.argv[1])], out=Path(sys.argv[2]), model="tiny", batch_size=4,
                        workers=1, heatmaps="all", progress=progress, report=False))
    """
)


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_tables(tiny_store: Path, tmp_path: Path) -> None:
    make_slides(tmp_path / "in", 40, n_slides=3)
    (tmp_path / "in" / "slide-1" / "broken.jpg").write_bytes(b"not an image")
    reference = tmp_path / "reference"
    run_batch(RunConfig(inputs=[tmp_path / "in"], out=reference, model="tiny", batch_size=4, workers=0,
                        heatmaps="all", report=False))  # fmt: skip

    out = tmp_path / "out"
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(tmp_path / "in"), str(out), "14"],
        capture_output=True, text=True, timeout=120, env=os.environ.copy(),
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with sqlite3.connect(out / JOURNAL_NAME) as db:
        journaled = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    assert 0 < journaled < 41  # it really stopped midway, with part of its work committed
    assert not (out / "images.csv").exists()

    resumed = run_batch(RunConfig(inputs=[tmp_path / "in"], out=out, model="tiny", batch_size=4, workers=0,
                                  heatmaps="all", report=False))  # fmt: skip
    assert resumed.n_reused == journaled and resumed.n_processed == 41 - journaled
    for table in TABLES:
        assert (out / table).read_bytes() == (reference / table).read_bytes(), table
    pngs = sorted(p.relative_to(out).as_posix() for p in (out / "heatmaps").rglob("*"))
    assert pngs == sorted(p.relative_to(reference).as_posix() for p in (reference / "heatmaps").rglob("*"))
    assert not list(out.rglob("*.tmp"))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not an SQLite file at all\n" * 100)


def _other_schema(path: Path) -> None:
    path.unlink()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE results (path TEXT PRIMARY KEY, verdict TEXT)")
        db.execute("INSERT INTO results VALUES ('/x.jpg', 'Benign')")


@pytest.mark.parametrize("damage", [_truncate, _garbage, _other_schema])
def test_damaged_journal_is_moved_aside_and_rebuilt(damage: object, tiny_store: Path, tmp_path: Path) -> None:
    """Case 9: a damaged journal ended in a traceback on every rerun."""
    make_slides(tmp_path / "in", 60, n_slides=3)
    out = tmp_path / "out"
    cfg = {"inputs": [tmp_path / "in"], "out": out, "model": "tiny", "workers": 0, "report": False}
    run_batch(RunConfig(**cfg))  # type: ignore[arg-type]
    before = {t: (out / t).read_bytes() for t in TABLES}
    damage(out / JOURNAL_NAME)  # type: ignore[operator]
    summary = run_batch(RunConfig(**cfg))  # type: ignore[arg-type]
    assert summary.n_processed == 60 and summary.exit_code == 0
    assert len(summary.warnings) == 1 and "is damaged" in summary.warnings[0]
    assert "rebuilding from the inputs" in summary.warnings[0]
    assert len(list(out.glob(".allscan-journal.damaged-*"))) >= 1
    assert {t: (out / t).read_bytes() for t in TABLES} == before
    again = run_batch(RunConfig(**cfg))  # type: ignore[arg-type]
    assert again.n_processed == 0 and not again.warnings


def test_deleting_the_lock_file_does_not_let_a_second_run_in(tiny_store: Path, tmp_path: Path) -> None:
    """Case 7: the lock was on .allscan.lock; deleting it let a second run write the same --out."""
    make_slides(tmp_path / "in", 2)
    out = tmp_path / "out"
    out.mkdir()
    with RunLock(out):
        (out / LOCK_NAME).unlink()
        with pytest.raises(RunLocked, match="another allscan run"):
            run_batch(RunConfig(inputs=[tmp_path / "in"], out=out, model="tiny", workers=0))
        assert not (out / "images.csv").exists()
