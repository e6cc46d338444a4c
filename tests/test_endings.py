"""How a run ends when it cannot finish: exit codes 3 (bug), 4 (storage), 130 / 143 (signals), each resumable."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pipeline_synth import make_slides
from typer.testing import CliRunner

import allscan.io.tables as tables_module
import allscan.pipeline.run as run_module
from allscan.cli import app
from allscan.pipeline.faults import storage_fault
from allscan.pipeline.journal import JOURNAL_NAME
from allscan.pipeline.run import RunConfig, run_batch

TABLES = ("images.csv", "cells.csv", "slides.csv")


def _bytes(out: Path) -> dict[str, bytes]:
    return {t: (out / t).read_bytes() for t in TABLES}


def _cli(inp: Path, out: Path, *extra: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(app, ["run", str(inp), "-m", "tiny", "-o", str(out), "-q", "--no-report", *extra])
    return result.exit_code, result.output.strip().splitlines()


def _reference(inp: Path, tmp_path: Path) -> dict[str, bytes]:
    ref = tmp_path / "reference"
    run_batch(RunConfig(inputs=[inp], out=ref, model="tiny", workers=0, heatmaps="all", report=False))
    return _bytes(ref)


def _no_temp_files(out: Path) -> bool:
    return not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_unexpected_exception_exits_3_with_one_line_and_a_traceback_log(
    tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_slides(tmp_path / "in", 3)

    def broken(*_args: object) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(run_module, "publish_journal", broken)
    code, lines = _cli(tmp_path / "in", tmp_path / "out")
    assert code == 3
    last = lines[-1]
    assert last.startswith("allscan run: internal error (a bug): RuntimeError: boom (traceback in ")
    assert not any("Traceback" in line for line in lines)
    log = Path(last.split("(traceback in ")[1].rstrip(")"))
    assert log.parent == tmp_path / "out" and "Traceback" in log.read_text() and "second line" in log.read_text()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO, errno.EROFS, errno.EDQUOT])
def test_storage_errors_are_recognised(code: int, tmp_path: Path) -> None:
    assert storage_fault(OSError(code, os.strerror(code), "/x/images.csv.tmp"), tmp_path) == (
        f"/x/images.csv.tmp: {os.strerror(code)}"
    )
    assert storage_fault(OSError(errno.EACCES, "Permission denied"), tmp_path) is None
    assert storage_fault(RuntimeError("no"), tmp_path) is None


def test_sqlite_disk_full_is_a_storage_fault(tmp_path: Path) -> None:
    exc = sqlite3.OperationalError("database or disk is full")
    exc.sqlite_errorcode = 13  # type: ignore[attr-defined]
    assert storage_fault(exc, tmp_path) == f"{tmp_path / JOURNAL_NAME}: no space left on device (disk full)"


def test_disk_full_while_publishing_exits_4_leaves_no_tmp_and_rerun_publishes_the_same_tables(
    tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Case 8: a full disk ended in two tracebacks and left a .tmp file behind."""
    make_slides(tmp_path / "in", 6)
    reference = _reference(tmp_path / "in", tmp_path)

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(tables_module.os, "fsync", full)
        code, lines = _cli(tmp_path / "in", out, "--heatmaps", "all")
    assert code == 4
    assert lines[-1] == f"allscan run: storage fault: {out / 'images.csv.tmp'}: No space left on device; " + (
        "finished images are journaled, rerun once it is fixed"
    )
    assert not any("Traceback" in line for line in lines)
    assert _no_temp_files(out) and not (out / "images.csv").exists()
    code, _ = _cli(tmp_path / "in", out, "--heatmaps", "all")
    assert code == 0 and _bytes(out) == reference


def test_disk_full_writing_a_heatmap_exits_4_and_the_rerun_completes(
    tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_slides(tmp_path / "in", 6)
    reference = _reference(tmp_path / "in", tmp_path)
    real_replace = os.replace
    written: list[str] = []

    def full_after_two(src: str, dst: str) -> None:
        if str(dst).endswith(".png") and len(written) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(str(dst))
        real_replace(src, dst)

    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(tables_module.os, "replace", full_after_two)
        code, lines = _cli(tmp_path / "in", out, "--heatmaps", "all")
    assert code == 4 and "storage fault:" in lines[-1] and ".png" in lines[-1] and "No space left" in lines[-1]
    assert _no_temp_files(out)
    code, _ = _cli(tmp_path / "in", out, "--heatmaps", "all")
    assert code == 0 and _bytes(out) == reference


def _journaled(out: Path) -> int:
    try:
        with sqlite3.connect(out / JOURNAL_NAME, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    except sqlite3.Error:
        return 0


def _start(inp: Path, out: Path, **popen: object) -> subprocess.Popen[str]:
    command = [sys.executable, "-c", "from allscan.cli import main; main()", "run", str(inp), "-m", "tiny", "-o",
               str(out), "--workers", "1", "--heatmaps", "all", "-q", "--no-report", "--batch-size", "2"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)  # type: ignore[call-overload]


def _interrupt(tmp_path: Path, send: object, expected: int) -> None:
    """Start a run of 300 images, signal it once some are journaled; check the ending, then resume."""
    inp = tmp_path / "in"
    make_slides(inp, 300, n_slides=3)
    out = tmp_path / "out"
    proc = _start(inp, out, start_new_session=True)
    deadline = time.monotonic() + 120
    # signal at the first committed batch: a fast machine finishes 300 tiny images in well under a second
    while _journaled(out) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    send(proc)  # type: ignore[operator]
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == expected, f"journaled {_journaled(out)}, tables {(out / 'images.csv').exists()}: {stderr}"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "rerun to resume" in lines[0], stderr  # no worker tracebacks, no leak warnings
    done = _journaled(out)
    assert 0 < done < 300 and not (out / "images.csv").exists() and _no_temp_files(out)
    resumed = _start(inp, out)
    resumed.communicate(timeout=300)
    assert resumed.returncode == 0
    assert _bytes(out) == _reference(inp, tmp_path)


def test_sigterm_stops_quietly_with_143_and_the_rerun_completes(tiny_store: Path, tmp_path: Path) -> None:
    """Case 13: SIGTERM killed the process by the signal, with a semaphore-leak warning."""
    _interrupt(tmp_path, lambda p: p.send_signal(signal.SIGTERM), 143)


def test_ctrl_c_to_the_process_group_gives_130_without_worker_tracebacks(tiny_store: Path, tmp_path: Path) -> None:
    """Case 13: Ctrl-C reaches every process of the group; only the main process may speak."""
    _interrupt(tmp_path, lambda p: os.killpg(p.pid, signal.SIGINT), 130)
