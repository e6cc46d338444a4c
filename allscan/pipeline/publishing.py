"""Publishing a run: the three tables rebuilt from the journal (one atomic rename each) and ``run.json``.

The tables are written from journaled rows in discovery order, never from what this run happened to process, so
every run over the same inputs publishes the same bytes; ``allscan merge`` publishes shards through the same
:func:`publish_tables`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from allscan.io.records import to_cells, write_run
from allscan.io.records.run import to_json
from allscan.io.tables import CELL_TABLE_COLUMNS, AtomicTable, image_columns, slide_columns
from allscan.models.store import StoredModel
from allscan.pipeline.config import RunConfig
from allscan.pipeline.journal import Journal, Stored
from allscan.pipeline.run_record import producer_record, run_record, stored_producer
from allscan.pipeline.slides import SlideTally
from allscan.pipeline.summary import Published, RunSummary


def publish_journal(classes: tuple[str, ...], out: Path, journal: Journal) -> Published:
    """The run's tables from its journal; every image of the run must have a result by now."""
    missing = journal.count_missing()
    if missing:
        raise RuntimeError(f"{missing} images have no journaled result after the run (a bug)")
    return publish_tables(out, classes, journal.published())


def publish_tables(out: Path, classes: tuple[str, ...], rows: Iterable[Stored]) -> Published:
    """Write images.csv, cells.csv and slides.csv from ``rows`` (in discovery order) and publish each with one
    atomic rename; returns what they hold."""
    tables = [AtomicTable(out / "images.csv", image_columns(classes))]
    tallies: dict[str, SlideTally] = {}
    per_class = dict.fromkeys(classes, 0)
    n_images = n_ok = n_flagged = 0
    try:  # any failure (a full disk, a signal) abandons every unpublished table: no .tmp is left behind
        tables.append(AtomicTable(out / "cells.csv", CELL_TABLE_COLUMNS))
        images, cells = tables
        for row in rows:
            images.write_cells(row.image_row)
            cells.write_rows(row.cell_rows)
            tally = tallies.setdefault(row.slide, SlideTally(row.slide, classes))
            tally.add(row.status, row.label_index, row.probs, row.flags)
            n_images += 1
            if row.status == "ok" and row.label_index is not None:
                n_ok += 1
                per_class[classes[row.label_index]] += 1
                n_flagged += bool(row.flags)
        slides = AtomicTable(out / "slides.csv", slide_columns(classes))
        tables.append(slides)
        slides.write_rows(to_cells(t.record(), classes) for t in tallies.values())
        for table in tables:
            table.publish()
    except BaseException:
        for table in tables:
            table.abandon()
        raise
    return Published(n_images, n_ok, n_images - n_ok, n_flagged, len(tallies), per_class)


def write_run_json(
    config: RunConfig, model: StoredModel, journal: Journal, summary: RunSummary, started: datetime
) -> None:
    """run.json for this run; a run that made rows is also remembered in the journal as their producer, so a
    later run with nothing new can still say how the published rows were made."""
    if summary.n_processed:
        journal.set_producer(to_json(producer_record(model, summary, started)))
    record = run_record(config, model, summary, started, stored_producer(journal.producer()))
    write_run(config.out / "run.json", record)


__all__ = ["publish_journal", "publish_tables", "write_run_json"]
