"""The run journal: what was done to which file, so a rerun does only what is new and a crash loses nothing.

An SQLite file in ``--out`` (embedded, transactional, survives SIGKILL and power cuts in WAL mode). Each
result is keyed by the image's absolute path, size, modification time (ns), inode and change time (ns; set by the
kernel on every write, so a file replaced with its mtime restored is still new) and the model id, plus a ``config``
string for the options that change the outputs (heatmap mode, pixel limit). Rows are stored as the exact text
cells of the tables, so the tables can be rebuilt at any time, byte for byte, from the journal alone in
discovery order: a rerun with nothing to do, a resumed run and an uninterrupted run publish the same bytes.

A journal that is damaged (truncated, overwritten, another schema) is moved aside to
``.allscan-journal.damaged-<time>`` and a new one is started: the results are rebuilt from the inputs, and the
run says so in one warning line instead of failing every night.

Names (paths, slides) are stored escaped by :func:`allscan.io.names.escape_name`: a file name that is not valid
UTF-8 is bytes SQLite cannot hold as text, and the escape keeps distinct names distinct.

The images of *this* run are listed in the ``current`` table (streamed in, never held in memory), marked
``todo`` where the journal has no matching result, and the tables are published from ``current`` joined with
``results``.

The schema and its checks are :mod:`allscan.pipeline.journal_schema`; the lock that keeps a second run off the
same ``--out`` is :mod:`allscan.pipeline.run_lock` (both re-exported here, where callers import them).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from allscan.io.names import escape_name, printable, unescape_name
from allscan.pipeline.discover import JOURNAL_NAME, Found
from allscan.pipeline.journal_schema import SCHEMA_VERSION, JournalDamaged, open_journal
from allscan.pipeline.run_lock import LOCK_NAME, JournalLocked, RunLock

PAGE = 512  # rows per read of the todo list
DAMAGED_PREFIX = ".allscan-journal.damaged-"


def _key(name: str) -> str:
    """A name as the journal stores it: escaped, so any byte sequence is valid text (and keys stay distinct)."""
    return escape_name(name)


def _name(key: str) -> str:
    """The name a journal key stands for (os.fsdecode's form, usable to open the file)."""
    return unescape_name(key)


@dataclass(frozen=True)
class Stored:
    """One published row: the image's slide and its journaled result."""

    slide: str
    status: str
    label_index: int | None
    probs: list[float] | None
    flags: tuple[str, ...]
    image_row: list[str]
    cell_rows: list[list[str]]
    seq: int = 0  # place in the discovery: a shard keeps the full run's places, so merge can interleave shards


class Journal:
    """The SQLite journal of one output folder (hold the :class:`RunLock` while using it)."""

    def __init__(self, out_dir: Path, model_id: str, config: str) -> None:
        self.path = Path(out_dir) / JOURNAL_NAME
        self.model_id = model_id
        self.config = config
        self.warning = ""  # set when a damaged journal was moved aside
        try:
            self.db = open_journal(self.path)
        except JournalDamaged as exc:
            self.warning = self._move_aside(str(exc))
            self.db = open_journal(self.path)

    @classmethod
    def existing(cls, out_dir: Path, model_id: str, config: str) -> Journal:
        """A finished run's journal, opened to read its rows (``allscan merge``): a missing or damaged file
        raises :class:`JournalDamaged` and nothing is moved aside, since the folder is not ours to repair."""
        path = Path(out_dir) / JOURNAL_NAME
        if not path.is_file():
            raise JournalDamaged(f"no {JOURNAL_NAME}")
        journal = cls.__new__(cls)
        journal.path, journal.model_id, journal.config, journal.warning = path, model_id, config, ""
        journal.db = open_journal(path)
        return journal

    def _move_aside(self, reason: str) -> str:
        """Keep the damaged file (and its WAL) for a post-mortem; the rerun rebuilds results from the inputs."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        aside = self.path.with_name(f"{DAMAGED_PREFIX}{stamp}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                os.replace(source, f"{aside}{suffix}")
        return f"journal {self.path} is damaged ({reason}): moved aside to {aside.name}, rebuilding from the inputs"

    def close(self) -> None:
        """Commit what is finished and close (the connection is closed even when the commit fails)."""
        try:
            self.db.commit()
        finally:
            self.db.close()

    # -- this run's images --
    def load_current(self, found: Iterable[Found]) -> int:
        """Replace the list of this run's images (streamed; a path seen twice keeps its first place)."""
        try:
            self.db.execute("DELETE FROM current")
            self.db.executemany(
                "INSERT OR IGNORE INTO current (path, slide, image, in_slide, size, mtime_ns, error, inode, ctime_ns) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        _key(f.path),
                        _key(f.slide),
                        _key(f.image),
                        _key(f.in_slide),
                        f.size,
                        f.mtime_ns,
                        printable(f.error),
                        f.inode,
                        f.ctime_ns,
                    )
                    for f in found
                ),
            )
        except BaseException:
            self.db.rollback()  # a refused discovery leaves the journal as it was
            raise
        self.db.commit()
        return int(self.db.execute("SELECT COUNT(*) FROM current").fetchone()[0])

    def discovery(self) -> dict[str, object]:
        """Images, slides and a sha256 of the (slide, image) names of this run's images in discovery order: what
        every shard of one run must agree on (names, not absolute paths, so shards may mount INPUT elsewhere)."""
        digest = hashlib.sha256()
        for slide, image in self.db.execute("SELECT slide, image FROM current ORDER BY seq"):
            digest.update(json.dumps([slide, image], ensure_ascii=False).encode("utf-8") + b"\n")
        images, slides = self.db.execute("SELECT COUNT(*), COUNT(DISTINCT slide) FROM current").fetchone()
        return {"images": int(images), "slides": int(slides), "sha256": digest.hexdigest()}

    def keep_slides(self, keep: Callable[[str], bool]) -> int:
        """Drop this run's images whose slide (a discovered name) ``keep`` rejects; return how many are left.
        The others keep their places (``seq``) in the full discovery."""
        self.db.create_function("allscan_keep", 1, lambda key: int(keep(_name(key))), deterministic=True)
        self.db.execute("DELETE FROM current WHERE NOT allscan_keep(slide)")
        self.db.commit()
        return self.count_current()

    def mark_todo(self, resume: bool = True) -> int:
        """Mark what has no valid journaled result (everything when ``resume`` is False); return the count."""
        if not resume:
            self.db.execute("UPDATE current SET todo = 1")
        else:
            self.db.execute(
                """UPDATE current SET todo = current.error != '' OR NOT EXISTS (
                       SELECT 1 FROM results r WHERE r.path = current.path AND r.model_id = ? AND r.config = ?
                       AND r.size = current.size AND r.mtime_ns = current.mtime_ns AND r.inode = current.inode
                       AND r.ctime_ns = current.ctime_ns AND r.slide = current.slide
                       AND r.image = current.image AND r.retry = 0)""",
                (self.model_id, self.config),
            )
        self.db.commit()
        return int(self.db.execute("SELECT COUNT(*) FROM current WHERE todo = 1").fetchone()[0])

    def iter_todo(self) -> Iterator[Found]:
        """This run's images still to do, in discovery order, read page by page (flat memory)."""
        last = -1
        while True:
            rows = self.db.execute(
                "SELECT seq, slide, image, in_slide, path, size, mtime_ns, error, inode, ctime_ns FROM current "
                "WHERE todo = 1 AND seq > ? ORDER BY seq LIMIT ?",
                (last, PAGE),
            ).fetchall()
            if not rows:
                return
            for _, slide, image, in_slide, path, size, mtime_ns, error, inode, ctime_ns in rows:
                names = (_name(slide), _name(image), _name(in_slide), _name(path))
                yield Found(*names, size, mtime_ns, error, inode=inode, ctime_ns=ctime_ns)
            last = rows[-1][0]

    # -- results --
    def put(
        self,
        found: Found,
        *,
        status: str,
        label_index: int | None,
        probs: Sequence[float] | None,
        flags: Sequence[str],
        image_row: Sequence[str],
        cell_rows: Sequence[Sequence[str]],
        retry: bool = False,
    ) -> None:
        """Record one image's result (committed by :meth:`commit`)."""
        self.db.execute(
            "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                _key(found.path),
                self.model_id,
                self.config,
                found.size,
                found.mtime_ns,
                _key(found.slide),
                _key(found.image),
                int(retry),
                status,
                label_index,
                json.dumps([float(p) for p in probs]) if probs is not None else None,
                ";".join(flags),
                json.dumps(list(image_row), ensure_ascii=False),
                json.dumps([list(r) for r in cell_rows], ensure_ascii=False),
                found.inode,
                found.ctime_ns,
            ),
        )

    def commit(self) -> None:
        self.db.commit()

    # -- which run made the rows --
    def _producer_key(self) -> str:
        return f"produced_by {self.model_id} {self.config}"

    def set_producer(self, record: dict[str, object]) -> None:
        """Remember ``record`` (run.json's facts) as the last run that made rows for this model and options, so
        a later run with nothing new can still say how the published rows were made."""
        value = json.dumps(record, sort_keys=True)
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (self._producer_key(), value))
        self.db.commit()

    def producer(self) -> dict[str, object] | None:
        """The record stored by :meth:`set_producer` for this model and options, or None (none, or unreadable)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (self._producer_key(),)).fetchone()
        try:
            record = json.loads(row[0]) if row else None
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    def published(self) -> Iterator[Stored]:
        """This run's rows in discovery order, from the journal alone."""
        cursor = self.db.execute(
            """SELECT c.seq, c.slide, r.status, r.label_index, r.probs, r.flags, r.image_row, r.cell_rows
               FROM current c JOIN results r ON r.path = c.path AND r.model_id = ? AND r.config = ?
               ORDER BY c.seq""",
            (self.model_id, self.config),
        )
        for seq, slide, status, label_index, probs, flags, image_row, cell_rows in cursor:
            yield Stored(
                seq=seq,
                slide=_name(slide),
                status=status,
                label_index=label_index,
                probs=json.loads(probs) if probs is not None else None,
                flags=tuple(f for f in flags.split(";") if f),
                image_row=json.loads(image_row),
                cell_rows=json.loads(cell_rows),
            )

    def count_under(self, root: str) -> tuple[int, int]:
        """(images of this run, journaled results of any run) at or under the absolute path ``root``."""
        key = _key(root)
        low = key if key.endswith("/") else key + "/"
        high = low[:-1] + "0"  # '0' follows '/': [low, high) is every path below root
        found = self.db.execute(
            "SELECT COUNT(*) FROM current WHERE error = '' AND (path = ? OR (path >= ? AND path < ?))",
            (key, low, high),
        ).fetchone()[0]
        journaled = self.db.execute(
            "SELECT COUNT(*) FROM results WHERE path = ? OR (path >= ? AND path < ?)", (key, low, high)
        ).fetchone()[0]
        return int(found), int(journaled)

    def count_current(self) -> int:
        """Images of this run (after ``keep_slides``)."""
        return int(self.db.execute("SELECT COUNT(*) FROM current").fetchone()[0])

    def count_missing(self) -> int:
        """Images of this run without a result (0 after a complete run; anything else is a bug)."""
        return int(
            self.db.execute(
                """SELECT COUNT(*) FROM current c WHERE NOT EXISTS (SELECT 1 FROM results r
                   WHERE r.path = c.path AND r.model_id = ? AND r.config = ?)""",
                (self.model_id, self.config),
            ).fetchone()[0]
        )


__all__ = [
    "DAMAGED_PREFIX",
    "JOURNAL_NAME",
    "LOCK_NAME",
    "SCHEMA_VERSION",
    "Journal",
    "JournalDamaged",
    "JournalLocked",
    "RunLock",
    "Stored",
]
