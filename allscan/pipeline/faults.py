"""How a run ends when it cannot finish: storage faults, signals, and everything else (a bug).

A scheduler must be able to tell these apart by the exit code alone (README, "Exit codes"): a full disk or a
failing device is the lab's to fix (exit 4, one line naming the path and the cause, nothing to report as a bug);
SIGINT / SIGTERM mean someone or something asked the run to stop (130 / 143, resumable); any other exception is
a bug (exit 3, one line plus a traceback log).
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import tempfile
import traceback
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType

from allscan.io.names import printable
from allscan.pipeline.discover import JOURNAL_NAME

EXIT_INTERNAL = 3
EXIT_STORAGE = 4
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EROFS, errno.EDQUOT})
# SQLite's primary result codes for the same faults (sqlite3.Error.sqlite_errorcode & 0xFF).
_SQLITE_CAUSES = {8: "read-only file system or file", 10: "I/O error", 13: "no space left on device (disk full)"}


class Interrupted(BaseException):
    """SIGTERM (or SIGINT) asked the run to stop; a BaseException so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    signal.signal(signum, signal.SIG_IGN)  # one stop request is enough; cleanup must not be cut short
    raise Interrupted(signum)


def stop_on_sigterm() -> None:
    """Turn SIGTERM (Slurm's and systemd's stop request) into :class:`Interrupted` in the main thread."""
    signal.signal(signal.SIGTERM, _raise_interrupted)


def storage_fault(exc: BaseException, out_dir: Path) -> str | None:
    """``'<path>: <cause>'`` when ``exc`` is a storage fault (disk full, I/O error, read-only, quota), else None."""
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        where = exc.filename if exc.filename is not None else out_dir
        return f"{printable(os.fsdecode(where))}: {exc.strerror or os.strerror(exc.errno)}"
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        cause = _SQLITE_CAUSES.get(code & 0xFF) if isinstance(code, int) else None
        if cause:
            return f"{Path(out_dir) / JOURNAL_NAME}: {cause}"
    return None


def write_crash_log(exc: BaseException, out_dir: Path) -> Path:
    """The traceback, in a log under ``out_dir`` (or the temp folder when ``out_dir`` cannot be written)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    for folder in (Path(out_dir), Path(tempfile.gettempdir())):
        path = folder / f"allscan-crash-{stamp}-{os.getpid()}.log"
        try:
            path.write_text(text, encoding="utf-8", errors="backslashreplace")
            return path
        except OSError:
            continue
    raise exc


def failure_line(exc: Exception, out_dir: Path) -> tuple[int, str]:
    """(exit code, one line for stderr) for an exception that ended a run."""
    where = storage_fault(exc, out_dir)
    if where is not None:
        return EXIT_STORAGE, f"storage fault: {where}; finished images are journaled, rerun once it is fixed"
    log = write_crash_log(exc, out_dir)
    message = printable(str(exc).strip().splitlines()[0]) if str(exc).strip() else ""
    return EXIT_INTERNAL, f"internal error (a bug): {type(exc).__name__}: {message} (traceback in {log})"
