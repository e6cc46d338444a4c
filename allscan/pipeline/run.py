"""The batch run, without any terminal: discover -> journal -> process -> publish.

``run_batch(RunConfig(...))`` is the whole of ``allscan run`` except the HTML report, which the caller starts
from the published tables (the CLI does; a report is a view, and the pipeline does not depend on it). It is
also what ``allscan bench`` times. Results stream into the journal as they are made; the tables are then
published from the journal in discovery order, so memory does not grow with the number of images and every run
over the same inputs publishes the same bytes, however often it was interrupted.

The steps live in modules named after their job: :mod:`config` (what was asked), :mod:`processing` (the local
and Ray loops), :mod:`finishing` (rows and heatmaps of one image), :mod:`publishing` (tables and run.json),
:mod:`summary` (what the run did, built from the steps' results).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from allscan.models.store import ModelStoreError, StoredModel, load_model
from allscan.pipeline.config import (
    EXECUTORS,
    HEATMAP_MODES,
    Progress,
    RunConfig,
    RunError,
    RunLocked,
    config_key,
    validate,
)
from allscan.pipeline.discover import DiscoveryError, discover
from allscan.pipeline.faults import storage_fault
from allscan.pipeline.journal import Journal, JournalLocked, RunLock
from allscan.pipeline.processing import process
from allscan.pipeline.publishing import publish_journal, publish_tables, write_run_json
from allscan.pipeline.summary import NOTHING_TO_DO, STAGES, Processed, RunSummary, summarize
from allscan.runtime.base import RunnerError
from allscan.runtime.conformance import check_model


@dataclass
class _Found:
    """This run's images after discovery (and ``--shard``): how many, how many to do, and what to say."""

    total: int
    todo: int
    warnings: list[str] = field(default_factory=list)
    discovered: dict[str, object] = field(default_factory=dict)  # the full discovery, for a shard's run.json


def run_batch(config: RunConfig) -> RunSummary:
    """Run the pipeline over ``config.inputs`` into ``config.out``; :class:`RunError` on usage errors."""
    started = datetime.now(timezone.utc)
    t_start = time.perf_counter()
    validate(config)
    model = _load(config)
    config.out = Path(config.out)
    lock = _lock(config.out)
    try:
        journal = Journal(config.out, model.card.model_id, config_key(config.heatmaps, config.max_pixels))
    except BaseException:
        lock.release()
        raise
    if journal.warning:
        config.say(f"warning: {journal.warning}")
    try:
        return _run(config, model, journal, started, t_start)
    finally:
        journal.close()
        lock.release()


def _load(config: RunConfig) -> StoredModel:
    """The model; a card that disagrees with its ONNX stops here, before any image is read."""
    try:
        model = load_model(config.model, root=config.engines_root)
        check_model(model)
    except ModelStoreError as exc:
        raise RunError(str(exc)) from None
    return model


def _lock(out: Path) -> RunLock:
    """Create ``--out`` and hold its lock; a second run on it, or an unwritable folder, is refused in one line."""
    lock = RunLock(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except JournalLocked as exc:
        raise RunLocked(str(exc)) from None
    except OSError as exc:
        if storage_fault(exc, out) is not None:
            raise  # a read-only or full disk is a storage fault (exit 4), not a usage error
        raise RunError(f"cannot write to --out {out}: {exc.strerror or exc}") from None
    return lock


def _run(config: RunConfig, model: StoredModel, journal: Journal, started: datetime, t_start: float) -> RunSummary:
    """Discover, process what is new, publish the tables and run.json; the summary from the steps' results."""
    card = model.card
    timings = dict.fromkeys(STAGES, 0.0)
    t0 = time.perf_counter()
    found = _discover(config, journal)
    timings["discover"] = time.perf_counter() - t0
    processed: Processed = NOTHING_TO_DO
    if found.todo:
        try:
            processed = process(config, model, journal, found.todo)
        except RunnerError as exc:
            raise RunError(str(exc)) from None
        timings.update(processed.timings)
    t0 = time.perf_counter()
    published = publish_journal(card.classes, config.out, journal)
    timings["write"] += time.perf_counter() - t0
    wall_s = time.perf_counter() - t_start
    timings["total"] = wall_s
    warnings = ([journal.warning] if journal.warning else []) + found.warnings
    summary = summarize(config.out, card.model_id, processed, published, wall_s, timings, warnings, found.discovered)
    write_run_json(config, model, journal, summary, started)
    return summary


def _discover(config: RunConfig, journal: Journal) -> _Found:
    """List this run's images in the journal (keeping only this shard's) and mark those still to do."""
    try:
        aliases: list[str] = []
        total = journal.load_current(discover(list(config.inputs), exclude=[config.out], aliases=aliases))
    except DiscoveryError as exc:
        raise RunError(str(exc)) from None
    found = _Found(total=total, todo=0)
    if aliases:
        found.warnings.append(
            f"{len(aliases)} images reached twice through symlink aliases are listed once (e.g. {aliases[0]})"
        )
    _refuse_vanished_inputs(config, journal)
    if config.shard is not None:
        found.discovered = journal.discovery()  # merge checks the shards against the full discovery
        found.total = journal.keep_slides(config.shard.holds)
        config.say(f"shard {config.shard}: {found.total} of {total} images")
    found.todo = journal.mark_todo(config.resume)
    done = found.total - found.todo
    config.say(f"{found.total} images found, {found.todo} to process, {done} already done ({journal.model_id})")
    if (found.discovered.get("images") if config.shard else found.total) == 0:
        found.warnings.append("no images found under the inputs")
    return found


def _refuse_vanished_inputs(config: RunConfig, journal: Journal) -> None:
    """An INPUT that yields no image although the journal holds results from it is most likely an unmounted share
    or a mistyped path: publishing would replace last night's tables with empty ones. Refuse unless asked."""
    if config.allow_empty:
        return
    for inp in config.inputs:
        root = os.path.abspath(inp)
        found, journaled = journal.count_under(root)
        if found == 0 and journaled:
            raise RunError(
                f"INPUT {inp} yields no image now, but the journal holds {journaled} results from it (an unmounted "
                "share?); the tables are left as they were; pass --allow-empty to publish without it"
            )


__all__ = [
    "EXECUTORS",
    "HEATMAP_MODES",
    "STAGES",
    "Progress",
    "RunConfig",
    "RunError",
    "RunLocked",
    "RunSummary",
    "config_key",
    "publish_tables",
    "run_batch",
]
