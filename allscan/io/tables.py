"""The CSV tables of the output contract: their columns, declared once, and how values become text.

The column lists are a versioned API (the brief's output contract): scripts and spreadsheets index them by
name and the first columns by position. Every value is turned into text here, once, by its column's kind, so a
table rebuilt from the journal is byte-identical to the one first written. Text cells that a spreadsheet would
execute (``= + - @``, tab, CR at the start) get a leading ``'``; numbers are formatted by us and cannot carry
a formula. File and slide names (kind ``name``) are rendered losslessly by :func:`allscan.io.names.escape_name`
(an undecodable byte as ``\\xNN``); a cell holding a line break is quoted, so a reader never splits a row.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from allscan.io.names import escape_name, fit_name, printable
from allscan.pipeline.segment import CELL_COLUMNS

TABLES_VERSION = 2  # 2: names escaped (io.names), heatmap names keep the image's extension
FLAG_NAMES = ("no_cells", "out_of_distribution", "low_confidence")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Column:
    """One column: its name and kind: text, name (a file or slide name, escaped), int, prob (4 decimals), float
    (2 decimals), score (6 digits)."""

    name: str
    kind: str = "text"


def safe_text(value: str) -> str:
    """Neutralise spreadsheet formulas (CSV injection): prefix a cell that starts like one with ``'``."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def format_value(value: object, kind: str) -> str:
    """The one text form of a value; None and NaN become an empty cell."""
    if value is None:
        return ""
    if kind == "text":
        return safe_text(printable(str(value)))
    if kind == "name":
        return safe_text(escape_name(str(value)))
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    if kind == "int":
        return str(int(value))  # type: ignore[call-overload]
    if kind == "prob":
        return f"{float(value):.4f}"  # type: ignore[arg-type]
    if kind == "float":
        return f"{float(value):.2f}"  # type: ignore[arg-type]
    if kind == "score":
        return f"{float(value):.6g}"  # type: ignore[arg-type]
    raise ValueError(f"unknown column kind {kind!r}")


def image_columns(classes: Sequence[str]) -> tuple[Column, ...]:
    """images.csv: the contract's first columns, then extras (flags, shortcut check, sizes, provenance)."""
    return (
        Column("slide", "name"),
        Column("image", "name"),
        Column("status"),
        Column("error"),
        Column("label"),
        Column("confidence", "prob"),
        *(Column(f"prob_{c}", "prob") for c in classes),
        Column("n_cells", "int"),
        Column("heatmap"),
        Column("flags"),
        Column("cell_focus", "prob"),
        Column("ood", "score"),
        Column("width", "int"),
        Column("height", "int"),
        Column("cell_area_fraction", "prob"),
        Column("model_id"),
        Column("notes"),
    )


_CELL_KINDS = {
    "cell_id": "int",
    "x": "int",
    "y": "int",
    "width": "int",
    "height": "int",
    "area_px": "int",
    "circularity": "prob",
    "nucleus_share": "prob",
}
CELL_TABLE_COLUMNS: tuple[Column, ...] = (
    Column("slide", "name"),
    Column("image", "name"),
    *(Column(name, _CELL_KINDS.get(name, "float")) for name in CELL_COLUMNS),
    Column("evidence", "prob"),  # the cell's share of the called class's heatmap evidence (io.heatmap)
)


def slide_columns(classes: Sequence[str]) -> tuple[Column, ...]:
    """slides.csv: counts, the label, per-class counts and mean probabilities, flag counts, the evidence."""
    return (
        Column("slide", "name"),
        Column("n_images", "int"),
        Column("n_ok", "int"),
        Column("n_error", "int"),
        Column("label"),
        Column("all_suspected"),
        *(Column(f"n_{c}", "int") for c in classes),
        *(Column(f"mean_prob_{c}", "prob") for c in classes),
        Column("n_flagged", "int"),
        *(Column(f"n_{f}", "int") for f in FLAG_NAMES),
        Column("evidence"),
    )


def format_row(columns: Sequence[Column], values: dict[str, object]) -> list[str]:
    """Values by column name -> text cells in column order (missing names give empty cells)."""
    return [format_value(values.get(col.name), col.kind) for col in columns]


def csv_line(cells: Sequence[str]) -> str:
    """One CSV record, exactly as written to the file (RFC 4180 quoting, '\\n' line end)."""
    buffer = io.StringIO()
    CsvWriter(buffer).writerow(cells)
    return buffer.getvalue()


class CsvWriter:
    """``csv.writer`` with '\\n' line ends that also quotes a cell holding a carriage return.

    The csv module quotes only the line terminator's characters, so with '\\n' a bare CR stays unquoted and most
    readers end the row there. Rows with a CR (rare: a name or message holding one) take a writer whose terminator
    is '\\r\\n', which quotes both, and get their '\\n' back.
    """

    def __init__(self, handle: io.TextIOBase) -> None:
        self.handle = handle
        self.plain = csv.writer(handle, lineterminator="\n")

    def writerow(self, cells: Sequence[str]) -> None:
        if "\r" not in "".join(cells):
            self.plain.writerow(cells)
            return
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\r\n").writerow(cells)
        self.handle.write(buffer.getvalue()[:-2] + "\n")

    def writerows(self, rows: Iterable[Sequence[str]]) -> None:
        for row in rows:
            self.writerow(row)


class AtomicTable:
    """Write a CSV to ``<name>.tmp``, publish it with one ``os.replace``: readers never see half a table.

    A failed write (disk full, I/O error) names the table in its OSError and leaves no ``.tmp`` behind once
    :meth:`abandon` is called.
    """

    def __init__(self, path: Path, columns: Sequence[Column]) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.columns = tuple(columns)
        self.handle = open(self.tmp, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed by publish/abandon
        self.writer = CsvWriter(self.handle)
        self.write_cells([c.name for c in self.columns])

    def write_cells(self, cells: Sequence[str]) -> None:
        try:
            self.writer.writerow(cells)
        except OSError as exc:
            raise blame(exc, self.tmp) from None

    def write_rows(self, rows: Iterable[Sequence[str]]) -> None:
        try:
            self.writer.writerows(rows)
        except OSError as exc:
            raise blame(exc, self.tmp) from None

    def publish(self) -> None:
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.replace(self.tmp, self.path)
        except OSError as exc:
            raise blame(exc, self.tmp) from None

    def abandon(self) -> None:
        """Drop the unpublished table (never raises: it runs while another error is on its way out)."""
        with contextlib.suppress(OSError):
            self.handle.close()  # flushing the buffer may fail again on a full disk
        with contextlib.suppress(OSError):
            self.tmp.unlink(missing_ok=True)


def blame(exc: OSError, path: Path | str) -> OSError:
    """``exc`` naming ``path`` when it names no file (a failed write or fsync on an open handle names none)."""
    if exc.filename is None:
        exc.filename = os.fspath(path)
    return exc


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Publish a small file (run.json, a heatmap PNG) by write-to-temp and rename; a failure leaves no temp."""
    path = Path(path)
    tmp = path.with_name(f".{fit_name(path.name)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise blame(exc, tmp) from None
        raise
