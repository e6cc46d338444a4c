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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from allscan.io.atomic import blame
from allscan.io.names import escape_name, printable, unescape_name

TABLES_VERSION = 2  # 2: names escaped (io.names), heatmap names keep the image's extension
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Column names made per class or per flag (the records expand their per-class and per-flag fields with these).
PROB = "prob_{}"
CLASS_COUNT = "n_{}"
MEAN_PROB = "mean_prob_{}"
FLAG_COUNT = "n_{}"
LIST_SEPARATOR = ";"


class Flag(str, Enum):
    """Why an image's call is not to be trusted (images.csv ``flags``, slides.csv ``n_<flag>``), in table order.

    ``str`` mixin rather than ``enum.StrEnum``: the package supports Python 3.10, which has no StrEnum."""

    NO_CELLS = "no_cells"
    OUT_OF_DISTRIBUTION = "out_of_distribution"
    LOW_CONFIDENCE = "low_confidence"

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


@dataclass(frozen=True)
class Column:
    """One column: its name and kind: text, name (a file or slide name, escaped), list (names joined by ';'), int,
    prob (4 decimals), float (2 decimals), score (6 digits)."""

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
    if kind == "list":
        if isinstance(value, str):  # joining a string would write its characters one by one
            raise ValueError(f"a list cell takes a sequence of names, not the string {value!r}")
        return safe_text(printable(LIST_SEPARATOR.join(value)))  # type: ignore[arg-type]
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


def unguard(text: str) -> str:
    """Undo :func:`safe_text`: ``'=cmd`` was written for ``=cmd`` (a text that itself began ``'=`` reads back
    without its quote)."""
    return text[1:] if len(text) >= 2 and text[0] == "'" and text.startswith(_FORMULA_START, 1) else text


def parse_value(text: str, kind: str) -> object:
    """The value a cell of this kind was written from: the inverse of :func:`format_value` (numbers as rounded
    in the table; an empty number cell is None, an empty list ())."""
    if kind == "text":
        return unguard(text)
    if kind == "name":
        return unescape_name(unguard(text))
    if kind == "list":
        return tuple(unguard(text).split(LIST_SEPARATOR)) if text else ()
    if kind not in ("int", "prob", "float", "score"):
        raise ValueError(f"unknown column kind {kind!r}")
    if text == "":
        return None
    return int(text) if kind == "int" else float(text)


def image_columns(classes: Sequence[str]) -> tuple[Column, ...]:
    """images.csv: the contract's first columns, then extras (flags, shortcut check, sizes, provenance)."""
    return (
        Column("slide", "name"),
        Column("image", "name"),
        Column("status"),
        Column("error"),
        Column("label"),
        Column("confidence", "prob"),
        *(Column(PROB.format(c), "prob") for c in classes),
        Column("n_cells", "int"),
        Column("heatmap"),
        Column("flags", "list"),
        Column("cell_focus", "prob"),
        Column("ood", "score"),
        Column("width", "int"),
        Column("height", "int"),
        Column("cell_area_fraction", "prob"),
        Column("model_id"),
        Column("notes"),
    )


# A segmented cell's measurements (allscan.pipeline.segment.Cell's fields, in its order: tested).
CELL_MEASURES: tuple[Column, ...] = (
    Column("cell_id", "int"),
    Column("x", "int"),
    Column("y", "int"),
    Column("width", "int"),
    Column("height", "int"),
    Column("area_px", "int"),
    Column("perimeter", "float"),
    Column("circularity", "prob"),
    Column("equivalent_diameter", "float"),
    Column("mean_h", "float"),
    Column("mean_s", "float"),
    Column("mean_v", "float"),
    Column("nucleus_share", "prob"),
    Column("centroid_x", "float"),
    Column("centroid_y", "float"),
)
CELL_TABLE_COLUMNS: tuple[Column, ...] = (
    Column("slide", "name"),
    Column("image", "name"),
    *CELL_MEASURES,
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
        *(Column(CLASS_COUNT.format(c), "int") for c in classes),
        *(Column(MEAN_PROB.format(c), "prob") for c in classes),
        Column("n_flagged", "int"),
        *(Column(FLAG_COUNT.format(f), "int") for f in Flag),
        Column("evidence"),
    )


def format_row(columns: Sequence[Column], values: Mapping[str, object]) -> list[str]:
    """Values by column name -> text cells in column order. A name the columns lack, or a column without a
    value (None for an empty cell), is a bug that would silently blank a column: ValueError."""
    if len(values) != len(columns) or any(col.name not in values for col in columns):
        names = {col.name for col in columns}
        unknown = sorted(set(values) - names)
        missing = [col.name for col in columns if col.name not in values]
        raise ValueError(f"row does not fit its table: unknown {unknown or 'none'}, missing {missing or 'none'}")
    return [format_value(values[col.name], col.kind) for col in columns]


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
