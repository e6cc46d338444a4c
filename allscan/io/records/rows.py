"""The rows of images.csv, cells.csv and slides.csv as typed records, written and read through the columns.

The columns (:mod:`allscan.io.tables`) say the order and the text form; a record says what a row holds. A field
maps to the column of its name, or, when it is per class or per flag, to one column per class or flag made by
its ``pattern`` (``prob_{}``). The pipeline builds records and formats them once (the journal keeps the text, so a
republished table is byte-identical); the report, merge and evaluate read them back with :func:`read_records`,
which refuses a table whose header is not the contract's. A typo in a field name fails here, not as a blank
column in a lab's spreadsheet.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from allscan.io.tables import (
    CELL_TABLE_COLUMNS,
    CLASS_COUNT,
    FLAG_COUNT,
    LIST_SEPARATOR,
    MEAN_PROB,
    PROB,
    Column,
    Flag,
    format_row,
    image_columns,
    parse_value,
    slide_columns,
)

Status = Literal["ok", "error"]
R = TypeVar("R", "ImageRecord", "CellRecord", "SlideRecord")


class RecordError(ValueError):
    """A table or row that does not fit the contract; the message is one line naming the file when known."""


def _per(over: str, pattern: str) -> dict[str, str]:
    """Field metadata: one column per class (``over='class'``) or per flag, named by ``pattern``."""
    return {"over": over, "pattern": pattern}


def benign_class(classes: Sequence[str]) -> str:
    """The class that means 'no leukemia': the one named Benign (any case), else the card's first class."""
    for name in classes:
        if name.lower() == "benign":
            return name
    return classes[0]


@dataclass(frozen=True)
class ImageRecord:
    """One images.csv row: one input image, whatever happened to it."""

    slide: str
    image: str
    status: Status
    error: str = ""
    label: str = ""
    confidence: float | None = None
    probs: tuple[float, ...] | None = field(default=None, metadata=_per("class", PROB))
    n_cells: int | None = None
    heatmap: str = ""  # the PNG's path relative to --out, or empty
    flags: tuple[Flag, ...] = ()
    cell_focus: float | None = None
    ood: float | None = None
    width: int | None = None
    height: int | None = None
    cell_area_fraction: float | None = None
    model_id: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        if self.status not in ("ok", "error"):
            raise RecordError(f"image status must be ok or error, not {self.status!r}")
        object.__setattr__(self, "flags", _flags(self.flags))

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class CellRecord:
    """One cells.csv row: a segmented white cell, its measurements, and its share of the heatmap's evidence."""

    slide: str
    image: str
    cell_id: int
    x: int
    y: int
    width: int
    height: int
    area_px: int
    perimeter: float
    circularity: float
    equivalent_diameter: float
    mean_h: float
    mean_s: float
    mean_v: float
    nucleus_share: float
    centroid_x: float
    centroid_y: float
    evidence: float | None = None


@dataclass(frozen=True)
class SlideRecord:
    """One slides.csv row: counts, the slide's label by the rule of :mod:`allscan.pipeline.slides`, evidence."""

    slide: str
    n_images: int
    n_ok: int
    n_error: int
    label: str = ""  # empty when the slide has no ok image
    all_suspected: str = ""  # yes / no / '' (no label)
    counts: tuple[int, ...] = field(default=(), metadata=_per("class", CLASS_COUNT))  # over all ok images
    mean_probs: tuple[float | None, ...] = field(default=(), metadata=_per("class", MEAN_PROB))
    n_flagged: int = 0
    flag_counts: tuple[int, ...] = field(default=(), metadata=_per("flag", FLAG_COUNT))  # in Flag's order
    evidence: str = ""

    def count(self, cls: str, classes: Sequence[str]) -> int:
        return self.counts[list(classes).index(cls)]


def _flags(values: Sequence[str]) -> tuple[Flag, ...]:
    try:
        return tuple(Flag(v) for v in values)
    except ValueError:
        known = ", ".join(Flag)
        raise RecordError(f"unknown flag in {LIST_SEPARATOR.join(values)!r} (known: {known})") from None


def columns_of(kind: type[ImageRecord | CellRecord | SlideRecord], classes: Sequence[str]) -> tuple[Column, ...]:
    """The columns a record of this type is written to, in table order."""
    if kind is ImageRecord:
        return image_columns(classes)
    if kind is SlideRecord:
        return slide_columns(classes)
    return CELL_TABLE_COLUMNS


def _keys(spec: Mapping[str, Any], classes: Sequence[str]) -> list[str]:
    names = list(classes) if spec["over"] == "class" else [str(f) for f in Flag]
    return [spec["pattern"].format(name) for name in names]


def to_values(record: ImageRecord | CellRecord | SlideRecord, classes: Sequence[str]) -> dict[str, object]:
    """The record's values by column name (per-class and per-flag fields spread over their columns)."""
    values: dict[str, object] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if "over" not in f.metadata:
            values[f.name] = value
            continue
        keys = _keys(f.metadata, classes)
        items = (None,) * len(keys) if value is None else tuple(value)
        if len(items) != len(keys):
            raise RecordError(f"{type(record).__name__}.{f.name} holds {len(items)} values for {len(keys)} columns")
        values.update(zip(keys, items, strict=True))
    return values


def from_values(kind: type[R], values: Mapping[str, object], classes: Sequence[str]) -> R:
    """The record whose :func:`to_values` these are (an all-empty per-class field that may be None is None)."""
    kwargs: dict[str, object] = {}
    for f in dataclasses.fields(kind):
        if "over" not in f.metadata:
            kwargs[f.name] = values[f.name]
            continue
        items = tuple(values[key] for key in _keys(f.metadata, classes))
        kwargs[f.name] = None if f.default is None and all(v is None for v in items) else items
    return kind(**kwargs)  # type: ignore[arg-type]


def to_cells(record: ImageRecord | CellRecord | SlideRecord, classes: Sequence[str]) -> list[str]:
    """The record as the text cells of its table's row (what the journal keeps and the tables publish)."""
    return format_row(columns_of(type(record), classes), to_values(record, classes))


def from_cells(kind: type[R], cells: Sequence[str], classes: Sequence[str]) -> R:
    """A row's text cells (in its table's column order) back as a record."""
    columns = columns_of(kind, classes)
    if len(cells) != len(columns):
        raise RecordError(f"a {kind.__name__} row has {len(cells)} cells, its table {len(columns)} columns")
    try:
        values = {col.name: parse_value(cell, col.kind) for col, cell in zip(columns, cells, strict=True)}
    except ValueError as exc:
        raise RecordError(f"a {kind.__name__} row holds a bad number ({exc})") from None
    return from_values(kind, values, classes)


def header_classes(path: Path) -> tuple[str, ...]:
    """The classes of an images.csv, in the card's order, from its ``prob_<class>`` columns."""
    with open(path, encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle), [])
    prefix = PROB.format("")
    return tuple(h[len(prefix) :] for h in header if h.startswith(prefix) and len(h) > len(prefix))


def read_records(path: Path, kind: type[R], classes: Sequence[str]) -> Iterator[R]:
    """The rows of a published table as records; :class:`RecordError` (naming the file) when its header is not
    the contract's for these classes or a row does not parse."""
    expected = [col.name for col in columns_of(kind, classes)]
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != expected:
            got = header or []
            missing = [n for n in expected if n not in got]
            unknown = [n for n in got if n not in expected]
            raise RecordError(
                f"{path}: not the contract's columns (missing {missing or 'none'}, unknown {unknown or 'none'}"
                f"{', order differs' if not missing and not unknown else ''}); was it written by this allscan?"
            )
        for row, cells in enumerate(reader, start=1):
            try:
                yield from_cells(kind, cells, classes)
            except RecordError as exc:
                raise RecordError(f"{path}, row {row}: {exc}") from None
