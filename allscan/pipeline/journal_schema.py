"""The journal's SQLite schema: opening a file, checking it is a sound journal of this schema, migrating v1.

Kept apart from the queries (:mod:`allscan.pipeline.journal`) because it answers a different question: is this file
ours and whole? A file that is not raises :class:`JournalDamaged`, which the journal turns into a move-aside and a
rebuild; disk full, I/O errors and read-only files are re-raised as they are (storage faults, not damage).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from allscan.io.names import printable

SCHEMA_VERSION = "2"  # 2: inode and ctime_ns join the change key (a v1 journal is migrated in place)
_TABLES = ("meta", "results", "current")
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    path TEXT NOT NULL, model_id TEXT NOT NULL, config TEXT NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, slide TEXT NOT NULL, image TEXT NOT NULL,
    retry INTEGER NOT NULL,          -- 1: an error that may go away by itself (permission, I/O)
    status TEXT NOT NULL, label_index INTEGER, probs TEXT, flags TEXT NOT NULL,
    image_row TEXT NOT NULL,         -- JSON list: the images.csv cells
    cell_rows TEXT NOT NULL,         -- JSON list of lists: the cells.csv cells
    inode INTEGER NOT NULL DEFAULT 0, ctime_ns INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (path, model_id, config)
);
CREATE TABLE IF NOT EXISTS current (
    seq INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, slide TEXT NOT NULL, image TEXT NOT NULL,
    in_slide TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, error TEXT NOT NULL,
    todo INTEGER NOT NULL DEFAULT 1,
    inode INTEGER NOT NULL DEFAULT 0, ctime_ns INTEGER NOT NULL DEFAULT 0
);
"""


class JournalDamaged(Exception):
    """The journal file is not a usable allscan journal (truncated, overwritten, another schema)."""


def _expected_columns() -> dict[str, list[str]]:
    """Each table's column names, as this allscan's schema makes them."""
    with closing(sqlite3.connect(":memory:")) as db:
        db.executescript(_SCHEMA)
        return {t: [r[1] for r in db.execute(f"PRAGMA table_info({t})")] for t in _TABLES}


def open_journal(path: Path) -> sqlite3.Connection:
    """Open (or create) the journal; :class:`JournalDamaged` when the file is not a sound journal of our schema."""
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        check = db.execute("PRAGMA quick_check(1)").fetchone()[0]  # reads every page: finds a truncated file
        if check != "ok":
            raise JournalDamaged(printable(str(check)))
        db.executescript(_SCHEMA)
        _migrate(db)
        expected = _expected_columns()
        for table, columns in expected.items():
            found = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
            if found != columns:
                raise JournalDamaged(f"table {table} has columns {found}, not {columns}")
        version = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if version is None:
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        elif version[0] != SCHEMA_VERSION:
            raise JournalDamaged(f"journal schema {version[0]}, this allscan writes {SCHEMA_VERSION}")
        db.commit()
    except sqlite3.DatabaseError as exc:
        db.close()
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            raise JournalDamaged(str(exc)) from None
        raise  # disk full, I/O error, read-only: a storage fault, not damage
    except BaseException:
        db.close()
        raise
    return db


def _migrate(db: sqlite3.Connection) -> None:
    """A version 1 journal gains the inode and ctime_ns columns (0: its results are redone once, since nothing
    proves the files did not change in the ways v1 could not see)."""
    version = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    if version is None or version[0] != "1":
        return
    for table in ("results", "current"):
        have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        for column in ("inode", "ctime_ns"):
            if column not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (SCHEMA_VERSION,))


__all__ = ["SCHEMA_VERSION", "JournalDamaged", "open_journal"]
