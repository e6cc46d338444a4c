"""The run lock: one ``allscan run`` (or merge) at a time per output folder.

A second run on the same ``--out`` while one is active would interleave two runs' tables; an exclusive ``flock``
on the ``--out`` folder itself refuses it at once. The kernel drops the lock when the holder dies, even by SIGKILL.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = ".allscan.lock"


class JournalLocked(Exception):
    """Another run holds ``--out``; the message is one line for the user."""


class RunLock:
    """Exclusive, non-blocking lock on an output folder for the lifetime of a run.

    The lock is an ``flock`` on the folder itself, which every run must open: deleting ``.allscan.lock`` (which
    only names the holder's pid) cannot let a second run in. Where a file system cannot lock a folder (some
    network file systems), the lock file is locked instead, as before.
    """

    def __init__(self, out_dir: Path) -> None:
        self.folder = Path(out_dir)
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._busy() from None
        except OSError:  # no locks on folders here: lock the lock file
            os.close(fd)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._busy() from None
        self.fd = fd
        self._write_pid()

    def _write_pid(self) -> None:
        """Name the holder in the lock file, for the message a refused run prints."""
        with open(self.path, "w", encoding="ascii") as handle:
            handle.write(str(os.getpid()))

    def _busy(self) -> JournalLocked:
        try:
            holder = self.path.read_text(encoding="ascii", errors="replace").strip() or "unknown"
        except OSError:
            holder = "unknown"
        return JournalLocked(
            f"another allscan run (pid {holder}) is writing to {self.folder}; wait for it to finish "
            "or choose another --out"
        )

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = ["LOCK_NAME", "JournalLocked", "RunLock"]
