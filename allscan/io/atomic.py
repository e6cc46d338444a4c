"""Publishing a file all at once: write a temporary file beside it, then one ``os.replace``.

A reader (a spreadsheet, the report, the next run) sees the old file or the new one, never half of either, and a
killed run or a full disk leaves no temporary file behind. Every small file allscan publishes goes through here;
the CSV tables stream through :class:`allscan.io.tables.AtomicTable`, which names its failures the same way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from allscan.io.names import fit_name


def blame(exc: OSError, path: Path | str) -> OSError:
    """``exc`` naming ``path`` when it names no file (a failed write or fsync on an open handle names none)."""
    if exc.filename is None:
        exc.filename = os.fspath(path)
    return exc


def temporary_name(path: Path) -> Path:
    """The hidden temporary beside ``path`` (per process, so two writers never share one)."""
    return path.with_name(f".{fit_name(path.name)}.{os.getpid()}.tmp")


@contextlib.contextmanager
def replacing(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path to fill; on success it replaces ``path``, on any failure it is removed and an
    OSError names the file."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise blame(exc, tmp) from None
        raise


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    """Publish a small file (run.json, a heatmap PNG, a sidecar) by write-to-temp and rename."""
    with replacing(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)


def write_text_atomic(path: Path | str, text: str) -> None:
    """:func:`write_bytes_atomic` for UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"))


def link_atomic(source: Path, dest: Path) -> None:
    """Publish ``source`` at ``dest`` as a hard link where the file system allows, else as a copy."""
    with replacing(dest) as tmp:
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copy2(source, tmp)
