"""The batch run, without any terminal: discover -> journal -> workers -> batches -> runner -> rows -> tables.

``run_batch(RunConfig(...))`` is the whole of ``allscan run`` (the CLI only draws progress) and is what
``allscan bench`` times. Results stream into the journal as they are made; the tables are then published from
the journal in discovery order, so memory does not grow with the number of images and every run over the same
inputs publishes the same bytes, however often it was interrupted.

Stage timings in ``run.json`` (seconds): ``decode``, ``segment`` and ``preprocess`` are summed over the worker
processes (CPU time spent, may exceed the wall time); ``infer``, ``heatmap`` and ``write`` are the main
process's wall time in the runner, in CAM upsampling + rendering + PNG writing, and in journal and table
writing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from allscan.io.heatmap import cell_evidence, class_map, render, strongest_cells, write_png
from allscan.io.heatmap import cell_focus as focus_share
from allscan.io.images import DEFAULT_MAX_PIXELS
from allscan.io.names import heatmap_relpath
from allscan.io.records import CellRecord, ImageRecord, to_cells, write_run
from allscan.io.records.run import to_json
from allscan.io.tables import CELL_TABLE_COLUMNS, TABLES_VERSION, AtomicTable, image_columns, slide_columns
from allscan.models.card import ModelCard
from allscan.models.conformance import check_model
from allscan.models.store import DEFAULT_MODEL, ModelStoreError, StoredModel, load_model
from allscan.pipeline.batching import infer_stream
from allscan.pipeline.discover import DiscoveryError, check_inputs, discover
from allscan.pipeline.faults import storage_fault
from allscan.pipeline.flags import predict, wants_heatmap
from allscan.pipeline.journal import Journal, JournalLocked, RunLock, Stored
from allscan.pipeline.run_record import producer_record, run_record, stored_producer
from allscan.pipeline.segment import CELL_COLUMNS, Cell
from allscan.pipeline.shards import Shard
from allscan.pipeline.slides import SlideTally
from allscan.pipeline.workers import Prepared, PrepareSettings, prepared_stream
from allscan.runtime.base import RunnerError
from allscan.runtime.select import select_runner

HEATMAP_MODES = ("all", "flagged", "none")
EXECUTORS = ("local", "ray")
# With the default --workers, runs of up to this many images decode in the main process: starting worker
# processes (seconds on a busy machine) costs more than it saves.
SMALL_RUN = 64
STAGES = ("decode", "segment", "preprocess", "infer", "heatmap", "write")
# Errors that may go away without the file changing (fixed permissions, a remounted share): retried every run.
_TRANSIENT = (
    "permission denied",
    "cannot read file",
    "cannot list folder",
    "cannot open folder",
    "cannot stat",
)


class RunError(Exception):
    """Usage or configuration error (exit code 2); the message is one line for the user."""


class RunLocked(RunError):
    """Another run is writing to the same ``--out``."""


@dataclass(frozen=True)
class Progress:
    """Sent to ``RunConfig.progress`` after each image is finished."""

    done: int
    total: int
    errors: int


@dataclass
class RunConfig:
    """Everything a run needs; the CLI's options map one to one onto these fields."""

    inputs: list[Path]
    out: Path = Path("allscan-results")
    model: str = DEFAULT_MODEL
    backend: str = "auto"
    batch_size: int = 16
    heatmaps: str = "flagged"
    resume: bool = True
    workers: int | None = None  # None: os.cpu_count() (in-process for small runs); 0: in this process
    max_pixels: int = DEFAULT_MAX_PIXELS
    allow_empty: bool = False  # publish even when an INPUT with journaled results yields no image now
    report: bool = True
    shard: Shard | None = None  # only the slides of shard K of N (allscan merge puts the shards together)
    executor: str = "local"  # local: worker processes + the runner here; ray: prepare + infer on Ray Data
    ray_address: str | None = None  # --executor ray: the cluster (None: $RAY_ADDRESS or a new local one)
    engines_root: Path | None = None  # None: $ALLSCAN_ENGINES or the checkout's engines/
    progress: Callable[[Progress], None] | None = field(default=None, repr=False)
    log: Callable[[str], None] | None = field(default=None, repr=False)

    def args(self) -> dict[str, object]:
        """The arguments as recorded in run.json."""
        return {
            "inputs": [str(p) for p in self.inputs],
            "out": str(self.out),
            "model": self.model,
            "backend": self.backend,
            "batch_size": self.batch_size,
            "heatmaps": self.heatmaps,
            "resume": self.resume,
            "workers": self.workers,  # None: the default (CPU cores; in-process for small runs)
            "max_pixels": self.max_pixels,
            "allow_empty": self.allow_empty,
            "report": self.report,
            "shard": str(self.shard) if self.shard else None,
            "executor": self.executor,
            "ray_address": self.ray_address,
        }

    @property
    def resolved_workers(self) -> int:
        return (os.cpu_count() or 1) if self.workers is None else self.workers


@dataclass
class RunSummary:
    """What a run did; also written, with more detail, to ``run.json``."""

    out_dir: Path
    model_id: str
    backend: str
    backend_reason: str
    precision: str
    n_images: int = 0
    n_ok: int = 0
    n_error: int = 0
    n_processed: int = 0  # done by this run
    n_reused: int = 0  # taken from the journal
    n_flagged: int = 0
    n_slides: int = 0
    workers_used: int = 0  # decode/segment processes this run started (0: in the main process)
    per_class: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    images_per_s: float = 0.0  # images processed by this run per second of the whole run
    report_path: Path | None = None
    warnings: list[str] = field(default_factory=list)
    discovered: dict[str, object] = field(default_factory=dict)  # the full discovery, for a shard's run.json

    @property
    def exit_code(self) -> int:
        """0: every image processed; 1: the run finished but some images failed (their rows say why)."""
        return 1 if self.n_error else 0


def _validate(config: RunConfig) -> None:
    if config.heatmaps not in HEATMAP_MODES:
        raise RunError(f"--heatmaps must be one of {', '.join(HEATMAP_MODES)}, not {config.heatmaps!r}")
    if config.batch_size < 1:
        raise RunError(f"--batch-size must be at least 1, not {config.batch_size}")
    if config.workers is not None and config.workers < 0:
        raise RunError(f"--workers must be 0 or more, not {config.workers}")
    if config.max_pixels < 1:
        raise RunError(f"--max-pixels must be positive, not {config.max_pixels}")
    if config.executor not in EXECUTORS:
        raise RunError(f"--executor must be one of {', '.join(EXECUTORS)}, not {config.executor!r}")
    if config.ray_address and config.executor != "ray":
        raise RunError("--ray-address needs --executor ray")
    if config.executor == "ray":
        from allscan.pipeline.ray_executor import ray_missing

        missing = ray_missing()
        if missing:
            raise RunError(missing)
    out = os.path.abspath(config.out)
    if any(os.path.abspath(inp) == out for inp in config.inputs):
        raise RunError(
            f"--out {config.out} is an INPUT: its results would be read back as slides; choose another --out"
        )
    try:
        check_inputs(list(config.inputs))
    except DiscoveryError as exc:
        raise RunError(str(exc)) from None


def cell_record(slide: str, image: str, cell: Cell, evidence: float) -> CellRecord:
    """A segmented cell as its cells.csv record (a shallow read: dataclasses.asdict deep-copies, far slower)."""
    measures = {name: getattr(cell, name) for name in CELL_COLUMNS}
    return CellRecord(slide=slide, image=image, **measures, evidence=evidence)


class _Finisher:
    """Turns a prepared image plus its network outputs (or its error) into journal rows and maybe a PNG."""

    def __init__(self, card: ModelCard, out_dir: Path, heatmaps: str, journal: Journal) -> None:
        self.card = card
        self.out_dir = out_dir
        self.heatmaps = heatmaps
        self.journal = journal
        self.timings = dict.fromkeys(STAGES, 0.0)

    def error(self, item: Prepared) -> None:
        found = item.found
        t0 = time.perf_counter()
        record = ImageRecord(
            slide=found.slide,
            image=found.image,
            status="error",
            error=item.error,
            model_id=self.card.model_id,
            notes=";".join(item.notes),
        )
        self.journal.put(
            found,
            status="error",
            label_index=None,
            probs=None,
            flags=(),
            image_row=to_cells(record, self.card.classes),
            cell_rows=[],
            retry=bool(found.error) or item.error.startswith(_TRANSIENT),
        )
        self.timings["write"] += time.perf_counter() - t0

    def ok(self, item: Prepared, outputs: dict[str, np.ndarray]) -> list[str]:
        found, card = item.found, self.card
        pred = predict(outputs["logits"], outputs.get("ood"), card, len(item.cells), item.colour)
        label = card.classes[pred.label_index]
        t0 = time.perf_counter()
        assert item.labels is not None
        mask = (item.labels > 0).astype(np.uint8)
        # At the working copy's size (labels, boxes and pixels share it), not the file's width x height.
        heat = class_map(outputs["cam"], pred.label_index, item.labels.shape[:2], item.boxes)
        focus = focus_share(heat, mask) if item.cells else None
        evidence = cell_evidence(heat, item.labels, len(item.cells))
        heatmap_rel = ""
        png_rel = heatmap_relpath(found.slide, found.in_slide)
        png = self.out_dir / png_rel
        if item.bgr is not None and wants_heatmap(self.heatmaps, label, pred.flags, card.classes):
            write_png(png, render(item.bgr, heat, mask, strongest_cells(item.labels, evidence)))
            heatmap_rel = png_rel
        else:
            png.unlink(missing_ok=True)  # a PNG left by an earlier run with another --heatmaps
        t1 = time.perf_counter()
        self.timings["heatmap"] += t1 - t0
        record = ImageRecord(
            slide=found.slide,
            image=found.image,
            status="ok",
            label=label,
            confidence=pred.confidence,
            probs=tuple(float(p) for p in pred.probs),
            n_cells=len(item.cells),
            heatmap=heatmap_rel,
            flags=pred.flags,
            cell_focus=focus,
            ood=pred.ood,
            width=item.width,
            height=item.height,
            cell_area_fraction=item.area_fraction,
            model_id=card.model_id,
            notes=";".join(item.notes),
        )
        cell_rows = [
            to_cells(cell_record(found.slide, found.image, c, float(e)), ())
            for c, e in zip(item.cells, evidence, strict=True)
        ]
        self.journal.put(
            found,
            status="ok",
            label_index=pred.label_index,
            probs=[float(p) for p in pred.probs],
            flags=pred.flags,
            image_row=to_cells(record, card.classes),
            cell_rows=cell_rows,
        )
        self.timings["write"] += time.perf_counter() - t1
        return list(pred.flags)


def _process(
    config: RunConfig, model: StoredModel, journal: Journal, total: int, summary: RunSummary
) -> dict[str, float]:
    """Run every todo image through workers, batches and the runner; results go to the journal."""
    if config.executor == "ray":
        return _process_ray(config, model, journal, total, summary)
    card = model.card
    choice = select_runner(model, config.backend, config.batch_size)
    summary.backend, summary.backend_reason = choice.runner.backend, choice.reason
    summary.precision = choice.runner.precision
    if config.log:
        config.log(f"backend {choice.reason}")
    finisher = _Finisher(card, config.out, config.heatmaps, journal)
    timings = finisher.timings
    settings = PrepareSettings(spec=card.input, max_pixels=config.max_pixels, keep_image=config.heatmaps != "none")
    done = errors = 0

    def note(n_errors: int = 0) -> None:
        nonlocal done, errors
        done += 1
        errors += n_errors
        if config.progress:
            config.progress(Progress(done=done, total=total, errors=errors))

    workers = 0 if config.workers is None and total <= SMALL_RUN else config.resolved_workers
    summary.workers_used = workers

    def ready(stream: Iterable[Prepared]) -> Iterator[Prepared]:
        """The images the runner gets; the others are finished (as errors) as they arrive."""
        for item in stream:
            for stage in ("decode", "segment", "preprocess"):
                timings[stage] += item.timings.get(stage, 0.0)
            if item.error:
                finisher.error(item)
                journal.commit()
                note(1)
            else:
                yield item

    stream = prepared_stream(journal.iter_todo(), settings, workers)
    with choice.runner as runner, runner.profile() as inference, closing(stream):
        pending = 0
        for item, outputs in infer_stream(ready(stream), runner.infer_many, config.batch_size):
            finisher.ok(item, outputs)
            note()
            pending += 1
            if pending >= config.batch_size:  # one commit per batch, as before
                t0 = time.perf_counter()
                journal.commit()
                timings["write"] += time.perf_counter() - t0
                pending = 0
        t0 = time.perf_counter()
        journal.commit()
        timings["write"] += time.perf_counter() - t0
    timings["infer"] += inference.seconds
    summary.n_processed = done
    return timings


def _process_ray(
    config: RunConfig, model: StoredModel, journal: Journal, total: int, summary: RunSummary
) -> dict[str, float]:
    """As ``_process``, with prepare + infer on Ray Data; rows, PNGs and the journal are still written here."""
    from allscan.pipeline.ray_executor import ray_results

    finisher = _Finisher(model.card, config.out, config.heatmaps, journal)
    timings = finisher.timings
    settings = PrepareSettings(
        spec=model.card.input, max_pixels=config.max_pixels, keep_image=config.heatmaps != "none"
    )
    done = errors = 0
    stream = ray_results(
        journal.iter_todo(), settings, model, config.backend, config.batch_size, config.ray_address, config.log
    )
    with closing(stream):
        for batch in stream:
            if not summary.backend:
                summary.backend, summary.backend_reason, summary.precision = (
                    batch.backend,
                    batch.reason,
                    batch.precision,
                )
                if config.log:
                    config.log(f"backend {batch.reason} (on the Ray actors)")
            timings["infer"] += batch.infer_s
            for item, outputs in batch.pairs:
                for stage in ("decode", "segment", "preprocess"):
                    timings[stage] += item.timings.get(stage, 0.0)
                if outputs is None:
                    finisher.error(item)
                    errors += 1
                else:
                    finisher.ok(item, outputs)
                done += 1
                if config.progress:
                    config.progress(Progress(done=done, total=total, errors=errors))
            t0 = time.perf_counter()
            journal.commit()
            timings["write"] += time.perf_counter() - t0
    summary.n_processed = done
    return timings


def _publish(config: RunConfig, card: ModelCard, journal: Journal, summary: RunSummary) -> None:
    """Rebuild the three tables from the journal and publish each with one atomic rename."""
    missing = journal.count_missing()
    if missing:
        raise RuntimeError(f"{missing} images have no journaled result after the run (a bug)")
    publish_tables(config.out, card.classes, journal.published(), summary)


def publish_tables(out: Path, classes: tuple[str, ...], rows: Iterable[Stored], summary: RunSummary) -> None:
    """Write images.csv, cells.csv and slides.csv from ``rows`` (in discovery order) and publish each with one
    atomic rename; counts go to ``summary``. ``allscan merge`` publishes shards through this same writer."""
    tables = [AtomicTable(out / "images.csv", image_columns(classes))]
    tallies: dict[str, SlideTally] = {}
    per_class = dict.fromkeys(classes, 0)
    try:  # any failure (a full disk, a signal) abandons every unpublished table: no .tmp is left behind
        tables.append(AtomicTable(out / "cells.csv", CELL_TABLE_COLUMNS))
        images, cells = tables
        for row in rows:
            images.write_cells(row.image_row)
            cells.write_rows(row.cell_rows)
            tally = tallies.setdefault(row.slide, SlideTally(row.slide, classes))
            tally.add(row.status, row.label_index, row.probs, row.flags)
            summary.n_images += 1
            if row.status == "ok" and row.label_index is not None:
                summary.n_ok += 1
                per_class[classes[row.label_index]] += 1
                summary.n_flagged += bool(row.flags)
            else:
                summary.n_error += 1
        slides = AtomicTable(out / "slides.csv", slide_columns(classes))
        tables.append(slides)
        slides.write_rows(to_cells(t.record(), classes) for t in tallies.values())
        for table in tables:
            table.publish()
    except BaseException:
        for table in tables:
            table.abandon()
        raise
    summary.per_class = per_class
    summary.n_slides = len(tallies)


def run_batch(config: RunConfig) -> RunSummary:
    """Run the pipeline over ``config.inputs`` into ``config.out``; :class:`RunError` on usage errors."""
    started = datetime.now(timezone.utc)
    t_start = time.perf_counter()
    log = config.log or (lambda _msg: None)
    _validate(config)
    try:
        model = load_model(config.model, root=config.engines_root)
        check_model(model)  # a card that disagrees with its ONNX stops here, before any image is read
    except ModelStoreError as exc:
        raise RunError(str(exc)) from None
    config.out = Path(config.out)
    lock = RunLock(config.out)
    try:
        config.out.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except JournalLocked as exc:
        raise RunLocked(str(exc)) from None
    except OSError as exc:
        if storage_fault(exc, config.out) is not None:
            raise  # a read-only or full disk is a storage fault (exit 4), not a usage error
        raise RunError(f"cannot write to --out {config.out}: {exc.strerror or exc}") from None
    card = model.card
    summary = RunSummary(out_dir=config.out, model_id=card.model_id, backend="", backend_reason="", precision="")
    timings = dict.fromkeys(STAGES, 0.0)
    try:
        journal = Journal(config.out, card.model_id, _config_key(config))
    except BaseException:
        lock.release()
        raise
    if journal.warning:
        summary.warnings.append(journal.warning)
        log(f"warning: {journal.warning}")
    try:
        t0 = time.perf_counter()
        try:
            aliases: list[str] = []
            total = journal.load_current(discover(list(config.inputs), exclude=[config.out], aliases=aliases))
        except DiscoveryError as exc:
            raise RunError(str(exc)) from None
        if aliases:
            summary.warnings.append(
                f"{len(aliases)} images reached twice through symlink aliases are listed once (e.g. {aliases[0]})"
            )
        _refuse_vanished_inputs(config, journal)
        total = _keep_shard(config, journal, summary, log, total)
        todo = journal.mark_todo(config.resume)
        timings["discover"] = time.perf_counter() - t0
        log(f"{total} images found, {todo} to process, {total - todo} already done ({card.model_id})")
        if (summary.discovered.get("images") if config.shard else total) == 0:
            summary.warnings.append("no images found under the inputs")
        if todo:
            try:
                timings.update(_process(config, model, journal, todo, summary))
            except RunnerError as exc:
                raise RunError(str(exc)) from None
        else:
            summary.backend, summary.backend_reason = "none", "nothing to process"
        summary.n_reused = total - summary.n_processed
        t0 = time.perf_counter()
        _publish(config, card, journal, summary)
        timings["write"] += time.perf_counter() - t0
        summary.wall_s = time.perf_counter() - t_start
        timings["total"] = summary.wall_s
        summary.timings = timings
        summary.images_per_s = summary.n_processed / summary.wall_s if summary.wall_s > 0 else 0.0
        if summary.n_processed:
            journal.set_producer(to_json(producer_record(model, summary, started)))
        record = run_record(config, model, summary, started, stored_producer(journal.producer()))
        write_run(config.out / "run.json", record)
    finally:
        journal.close()
        lock.release()
    if config.report:
        summary.report_path = report_or_warn(config.out, log, summary)
    return summary


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


def _keep_shard(
    config: RunConfig, journal: Journal, summary: RunSummary, log: Callable[[str], None], total: int
) -> int:
    """With ``--shard K/N``: note the full discovery (merge checks the shards against it), then keep only this
    shard's slides; returns the number of images left to this run."""
    if config.shard is None:
        return total
    summary.discovered = journal.discovery()
    kept = journal.keep_slides(config.shard.holds)
    log(f"shard {config.shard}: {kept} of {total} images")
    return kept


def _config_key(config: RunConfig) -> str:
    """The options besides the model that change an image's rows or files: a change redoes the image."""
    return config_key(config.heatmaps, config.max_pixels)


def config_key(heatmaps: str, max_pixels: int) -> str:
    """The journal's key for the options that change outputs (also how merge opens a shard's journal)."""
    return json.dumps({"tables": TABLES_VERSION, "heatmaps": heatmaps, "max_pixels": max_pixels}, sort_keys=True)


def report_or_warn(out_dir: Path, log: Callable[[str], None], summary: RunSummary) -> Path | None:
    """The HTML report from the published tables; a failure here is logged, the tables stand."""
    from allscan.report import write_report

    try:
        return write_report(out_dir)
    except Exception as exc:  # noqa: BLE001 - the report is a view of the tables, which are already published
        if storage_fault(exc, out_dir) is not None:
            raise  # a full or failing disk ends the run (exit 4), whatever it hit first
        message = f"report not written: {type(exc).__name__}: {exc}"
        summary.warnings.append(message)
        log(message)
        return None


__all__ = [
    "EXECUTORS",
    "HEATMAP_MODES",
    "Progress",
    "RunConfig",
    "RunError",
    "RunLocked",
    "RunSummary",
    "config_key",
    "publish_tables",
    "report_or_warn",
    "run_batch",
]
