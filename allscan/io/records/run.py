"""run.json as a typed record: what ran, on what, with which options, and what it made.

``allscan run`` and ``allscan merge`` write it through :func:`write_run`; the report and merge read it through
:func:`read_run`, which names the file and the key when one is missing or has the wrong type, so no reader
guesses between aliases. The keys are those run.json always had; ``model.class_labels``, ``model.flags`` (the
card's flag thresholds) and ``input_roots`` (the INPUTs as absolute paths) were added with these records and
are optional when reading, so a run.json written before them still reads.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from allscan.io.atomic import write_text_atomic
from allscan.io.records.rows import RecordError

T = TypeVar("T")
_OMIT_NONE = {"omit_none": True}  # written only when set (a shard's, a merge's, a rerun's extra keys)


@dataclass(frozen=True, kw_only=True)
class RunFlags:
    """The model card's flag thresholds the rows were made with (``allscan.models.card.FlagThresholds``)."""

    low_confidence: float
    ood: float | None = None


@dataclass(frozen=True, kw_only=True)
class ModelRef:
    """Which model made the rows (``produced_by.model``; keys sorted, as the journal stores them)."""

    architecture: str
    id: str
    name: str


@dataclass(frozen=True, kw_only=True)
class ModelRecord:
    """run.json ``model``: the model, its classes in the card's order, and the hashes of its files."""

    name: str
    id: str
    architecture: str
    classes: tuple[str, ...]
    input_mode: str
    heatmap_method: str
    files: dict[str, str]
    class_labels: dict[str, str] = field(default_factory=dict)  # short name -> human label, from the card
    flags: RunFlags | None = field(default=None, metadata=_OMIT_NONE)  # None: a run.json from before the key

    def human(self, cls: str) -> str:
        return self.class_labels.get(cls) or cls


@dataclass(frozen=True, kw_only=True)
class Counts:
    """run.json ``counts``: over the published tables, except ``processed`` (by this run) and ``reused``."""

    images: int
    ok: int
    error: int
    processed: int
    reused: int
    flagged: int
    slides: int
    per_class: dict[str, int]


@dataclass(frozen=True, kw_only=True)
class Producer:
    """run.json ``produced_by``: the last run that processed images, whose backend and speed describe the rows.
    Its keys are sorted (the journal keeps it as sorted JSON between runs)."""

    backend: str
    backend_reason: str
    finished: str
    images_per_s: float
    model: ModelRef
    precision: str
    processed: int
    started: str
    versions: dict[str, str]
    wall_s: float
    workers_used: int


@dataclass(frozen=True, kw_only=True)
class ShardInfo:
    """run.json ``shard`` of an ``allscan run --shard K/N``: which shard, and the full discovery merge checks."""

    k: int
    n: int
    discovered: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """The whole of run.json, in its key order."""

    tables_version: int
    started: str
    finished: str
    versions: dict[str, str]
    model: ModelRecord
    backend: str
    backend_reason: str
    precision: str
    args: dict[str, Any]  # the command's options as given (RunConfig.args)
    input_roots: tuple[str, ...] = ()  # the INPUTs, absolute; () in a run.json from before the key
    workers_used: int
    counts: Counts
    timings_s: dict[str, float]
    wall_s: float
    images_per_s: float
    exit_code: int
    warnings: tuple[str, ...]
    produced_by: Producer | None = field(default=None, metadata=_OMIT_NONE)
    shard: ShardInfo | None = field(default=None, metadata=_OMIT_NONE)
    shards: tuple[dict[str, Any], ...] | None = field(default=None, metadata=_OMIT_NONE)  # allscan merge's

    def made_by(self) -> RunRecord | Producer:
        """Whose backend, speed and versions describe the published rows: ``produced_by`` when this run processed
        nothing (a no-op rerun says backend 'none', 0 images/s), else this run."""
        return self.produced_by if self.counts.processed == 0 and self.produced_by else self


def to_json(value: Any) -> Any:
    """A record as JSON data, keys in field order; unset optional keys are left out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_json(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not (getattr(value, f.name) is None and f.metadata.get("omit_none"))
        }
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def from_json(kind: type[T], data: Any, where: str = "") -> T:
    """``kind`` from JSON data; :class:`RecordError` naming the key (dotted, below ``where``) that is missing,
    unknown or of the wrong type."""
    if not isinstance(data, dict):
        raise RecordError(f"{_key(where)} is not an object")
    known = {f.name: f for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise RecordError(f"unknown {_key(_join(where, unknown[0]))} (not written by this allscan)")
    hints = typing.get_type_hints(kind)
    kwargs = {}
    for name, f in known.items():
        if name in data:
            kwargs[name] = _decode(hints[name], data[name], _join(where, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecordError(f"{_key(_join(where, name))} is missing")
    return kind(**kwargs)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _key(where: str) -> str:
    return f"key {where!r}" if where else "the document"


def _decode(hint: Any, value: Any, where: str) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None:
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if dataclasses.is_dataclass(hint):
        return from_json(hint, value, where)  # type: ignore[arg-type]
    origin = typing.get_origin(hint) or hint
    expected: Any = {tuple: list, float: (int, float)}.get(origin, origin)
    if origin is Any or (isinstance(value, expected) and not (origin in (int, float) and isinstance(value, bool))):
        return tuple(value) if origin is tuple else value
    raise RecordError(f"{_key(where)} is {type(value).__name__}, not {getattr(origin, '__name__', origin)}")


def read_run(path: Path) -> RunRecord:
    """``path`` (a run.json) as a record; :class:`RecordError` in one line naming the file and the key."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RecordError(f"{path}: not JSON ({exc})") from None
    try:
        return from_json(RunRecord, data)
    except RecordError as exc:
        raise RecordError(f"{path}: {exc}") from None


def write_run(path: Path, record: RunRecord) -> None:
    """Publish run.json (indented, one trailing newline) with one atomic rename."""
    write_text_atomic(path, json.dumps(to_json(record), indent=2) + "\n")
