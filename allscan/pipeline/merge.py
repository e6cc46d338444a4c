"""``allscan merge``: the shards of one run (``allscan run --shard K/N``) -> the tables of one run, byte for byte.

Every shard's journal keeps each image's place in the *full* discovery (``seq``), so the shards' rows are
interleaved back into the single run's order and written by the run's own table writer
(:func:`allscan.pipeline.publishing.publish_tables`); nothing is concatenated. Before anything is written the shards
must agree (same model, options, tables version and discovery), be complete (every K of N once, every image
with a result) and be idle (each shard's run lock is taken for the merge); otherwise :class:`MergeError` says
which shard is wrong, in one line, and the output is left as it was.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from allscan.io.atomic import link_atomic
from allscan.io.records import ImageRecord, RecordError, RunRecord, from_cells, read_run, write_run
from allscan.io.records.run import to_json
from allscan.pipeline.config import config_key
from allscan.pipeline.discover import JOURNAL_NAME
from allscan.pipeline.journal import Journal, JournalDamaged, JournalLocked, RunLock, Stored
from allscan.pipeline.publishing import publish_tables
from allscan.pipeline.shards import Shard
from allscan.pipeline.summary import Published, RunSummary

# run.json entries every shard must share with the first, and how a mismatch is named to the user.
_AGREE: tuple[tuple[Callable[[RunRecord], Any], str], ...] = (
    (lambda r: r.model.id, "model"),
    (lambda r: r.model.files, "model files"),
    (lambda r: r.tables_version, "tables version"),
    (lambda r: r.args.get("heatmaps"), "--heatmaps"),
    (lambda r: r.args.get("max_pixels"), "--max-pixels"),
    (lambda r: r.shard.n if r.shard else None, "N"),
    (lambda r: r.shard.discovered if r.shard else None, "inputs"),
)


class MergeError(Exception):
    """Shards that cannot be merged (exit code 2); the message is one line naming the offending shard."""


@dataclass
class ShardOut:
    """One shard's ``--out``: its run.json, and (once opened under its lock) its journal."""

    folder: Path
    run: RunRecord
    journal: Journal | None = None

    @property
    def shard(self) -> Shard:
        assert self.run.shard is not None  # read_shard refuses a run.json without one
        return Shard(self.run.shard.k, self.run.shard.n)


def read_shard(folder: Path) -> ShardOut:
    """A shard's run.json, or :class:`MergeError` when the folder is not a finished shard."""
    try:
        run = read_run(folder / "run.json")
    except FileNotFoundError:
        raise MergeError(f"{folder}: no run.json: not a finished allscan run; run its shard first") from None
    except OSError as exc:
        raise MergeError(f"{folder}: run.json unreadable: {exc}") from None
    except RecordError as exc:
        raise MergeError(f"run.json unusable: {exc}") from None
    if run.shard is None:
        raise MergeError(f"{folder} is not a shard: its run.json has no shard (made without --shard K/N)")
    return ShardOut(folder, run)


def check_shards(shards: list[ShardOut]) -> None:
    """The shards agree with the first one and are every K of N exactly once; else :class:`MergeError`."""
    first = shards[0]
    for other in shards[1:]:
        for key, what in _AGREE:
            if key(other.run) != key(first.run):
                remedy = (
                    "the INPUTs changed between the shards: rerun every shard (only new images are processed)"
                    if what == "inputs"
                    else "rerun it like the others"
                )
                raise MergeError(
                    f"shard {other.folder} was made with other {what} than {first.folder} "
                    f"({_short(key(other.run))} vs {_short(key(first.run))}); {remedy}"
                )
    seen: dict[int, Path] = {}
    for s in shards:
        if s.shard.k in seen:
            raise MergeError(f"shard {s.shard} given twice: {seen[s.shard.k]} and {s.folder}")
        seen[s.shard.k] = s.folder
    n = first.shard.n
    missing = [f"{k}/{n}" for k in range(1, n + 1) if k not in seen]
    if missing:
        given = ", ".join(f"{k}/{n}" for k in sorted(seen))
        raise MergeError(f"shards missing: {', '.join(missing)} (given: {given}); run them, or merge all N")


def _short(value: Any) -> str:
    if isinstance(value, dict) and "sha256" in value:
        return f"{value.get('images')} images in {value.get('slides')} slides"
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def open_journals(shards: list[ShardOut], stack: ExitStack) -> None:
    """Lock each shard (a running shard is refused) and open its journal; an unfinished shard is refused."""
    for s in shards:
        try:
            stack.enter_context(RunLock(s.folder))
        except JournalLocked as exc:
            raise MergeError(f"shard {s.folder} is still running: {exc}") from None
        key = config_key(s.run.args["heatmaps"], int(s.run.args["max_pixels"]))
        try:
            s.journal = Journal.existing(s.folder, s.run.model.id, key)
        except JournalDamaged as exc:
            raise MergeError(f"shard {s.folder}: journal unusable ({exc}); rerun the shard") from None
        stack.callback(s.journal.db.close)
        missing, listed = s.journal.count_missing(), s.journal.count_current()
        if missing or listed != s.run.counts.images:
            raise MergeError(
                f"shard {s.folder} is unfinished: its journal lists {listed} images, {missing} without a result, "
                f"its run.json {s.run.counts.images}; rerun the shard"
            )


def merged_rows(shards: list[ShardOut], link: Callable[[ShardOut, Stored], None]) -> Iterator[Stored]:
    """The shards' rows interleaved into discovery order; a slide or image in two shards is refused."""

    def tagged(i: int, journal: Journal) -> Iterator[tuple[int, int, Stored]]:
        return ((row.seq, i, row) for row in journal.published())

    streams = [tagged(i, s.journal) for i, s in enumerate(shards) if s.journal]
    owner: dict[str, int] = {}
    last = 0
    for seq, i, row in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
        first = owner.setdefault(row.slide, i)
        if first != i or seq == last:
            raise MergeError(
                f"slide {row.slide!r} is in two shards: {shards[first].folder} and {shards[i].folder}; "
                "were they made by different allscan versions?"
            )
        last = seq
        link(shards[i], row)
        yield row


def _heatmap_linker(out: Path, classes: tuple[str, ...]) -> Callable[[ShardOut, Stored], None]:
    """Puts each row's heatmap PNG into ``out``: a hard link where the file system allows, else a copy."""

    def link(shard: ShardOut, row: Stored) -> None:
        rel = from_cells(ImageRecord, row.image_row, classes).heatmap
        if not rel:
            return
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        link_atomic(shard.folder / rel, dest)

    return link


@dataclass
class MergeConfig:
    """``allscan merge``'s options (the report, a view of the merged tables, is the caller's to start)."""

    shards: list[Path]
    out: Path
    log: Callable[[str], None] | None = None


def _check_out(config: MergeConfig) -> None:
    if not config.shards:
        raise MergeError("no shard given")
    out = os.path.abspath(config.out)
    for folder in config.shards:
        if os.path.abspath(folder) == out:
            raise MergeError(f"--out {config.out} is one of the shards; choose another --out")
    if (Path(config.out) / JOURNAL_NAME).is_file():
        raise MergeError(f"--out {config.out} holds an allscan run's journal; merge into another folder")


def merge_shards(config: MergeConfig) -> RunSummary:
    """Publish the shards' tables, heatmaps and run.json into ``config.out`` as one run would."""
    t0, started = time.perf_counter(), datetime.now(timezone.utc)
    log = config.log or (lambda _msg: None)
    _check_out(config)
    shards = sorted((read_shard(Path(f)) for f in config.shards), key=lambda s: s.shard.k)
    check_shards(shards)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    first = shards[0].run
    classes = first.model.classes
    with ExitStack() as stack:
        try:
            stack.enter_context(RunLock(out))
        except JournalLocked as exc:
            raise MergeError(str(exc)) from None
        open_journals(shards, stack)
        listed = sum(s.journal.count_current() for s in shards if s.journal)
        discovered = first.shard.discovered["images"] if first.shard else None
        if listed != discovered:
            raise MergeError(f"the shards hold {listed} images, their discovery {discovered}; rerun the shards")
        published = publish_tables(out, classes, merged_rows(shards, _heatmap_linker(out, classes)))
        summary = _write_merged_run_json(out, shards, published, started, time.perf_counter() - t0)
    log(f"merged {len(shards)} shards: {summary.n_images} images in {summary.n_slides} slides")
    return summary


def _write_merged_run_json(
    out: Path, shards: list[ShardOut], published: Published, started: datetime, merge_s: float
) -> RunSummary:
    """run.json as one run writes it, plus ``shards``: each shard's counts, timings, versions and backend; returns
    the merge's summary."""
    runs = [s.run for s in shards]
    first = runs[0]
    timings: dict[str, float] = {}
    for run in runs:
        for stage, seconds in run.timings_s.items():
            timings[stage] = round(timings.get(stage, 0.0) + seconds, 4)
    processed = sum(r.counts.processed for r in runs)
    wall = max(r.wall_s for r in runs) + merge_s  # shards run side by side, then the merge
    backends = sorted({r.backend for r in runs} - {"none"}) or ["none"]
    precisions = sorted({r.precision for r in runs} - {""})
    summary = RunSummary(
        out_dir=out,
        model_id=first.model.id,
        backend="",
        backend_reason="",
        precision="",
        n_images=published.n_images,
        n_ok=published.n_ok,
        n_error=published.n_error,
        n_processed=processed,
        n_flagged=published.n_flagged,
        n_slides=published.n_slides,
        per_class=published.per_class,
        wall_s=wall,
        warnings=[f"shard {s.shard}: {w}" for s in shards for w in s.run.warnings],
    )
    record = dataclasses.replace(
        first,
        started=min(r.started for r in runs),
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        backend=",".join(backends),
        backend_reason=f"merged from {len(runs)} shards ({started.isoformat(timespec='seconds')})",
        precision=",".join(precisions),
        args={**first.args, "out": str(out), "shard": None},
        workers_used=max(r.workers_used for r in runs),
        counts=summary.counts(),
        timings_s=timings,
        wall_s=round(wall, 4),
        images_per_s=round(summary.images_per_s, 3),
        exit_code=summary.exit_code,
        warnings=tuple(summary.warnings),
        produced_by=None,
        shard=None,
        shards=tuple(_shard_entry(s) for s in shards),
    )
    write_run(out / "run.json", record)
    return summary


def _shard_entry(s: ShardOut) -> dict[str, Any]:
    doc = to_json(s.run)
    keys = ("started", "finished", "versions", "backend", "precision", "counts", "timings_s", "wall_s")
    return {
        "shard": str(s.shard),
        "out": str(s.folder),
        **{k: doc[k] for k in keys},
        "images_per_s": s.run.images_per_s,
        "exit_code": s.run.exit_code,
    }


__all__ = ["MergeConfig", "MergeError", "merge_shards"]
