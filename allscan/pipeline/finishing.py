"""Finishing one image: its prediction, flags and cell evidence become journal rows, and maybe a heatmap PNG.

Both executors (local and Ray) end each image here, in the main process, so the rows and files of an image do not
depend on where it was decoded or inferred. The per-image work (class map, cell evidence, the PNG) can run on a
few threads (OpenCV and NumPy release the GIL): on a many-core or GPU machine the main process's serial work is
otherwise what caps the run. Rows still reach the journal in arrival order, from this thread, and
:meth:`Finisher.commit` waits for every image's PNG before the journal says the image is done.
"""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from allscan.io.heatmap import cell_evidence, class_map, render, strongest_cells, write_png
from allscan.io.heatmap import cell_focus as focus_share
from allscan.io.names import heatmap_relpath
from allscan.io.records import CellRecord, ImageRecord, to_cells
from allscan.models.card import ModelCard
from allscan.pipeline.flags import Prediction, predict, wants_heatmap
from allscan.pipeline.journal import Journal
from allscan.pipeline.segment import CELL_COLUMNS, Cell
from allscan.pipeline.summary import STAGES
from allscan.pipeline.workers import Prepared

# Errors that may go away without the file changing (fixed permissions, a remounted share): retried every run.
_TRANSIENT = (
    "permission denied",
    "cannot read file",
    "cannot list folder",
    "cannot open folder",
    "cannot stat",
)


def cell_record(slide: str, image: str, cell: Cell, evidence: float) -> CellRecord:
    """A segmented cell as its cells.csv record (a shallow read: dataclasses.asdict deep-copies, far slower)."""
    measures = {name: getattr(cell, name) for name in CELL_COLUMNS}
    return CellRecord(slide=slide, image=image, **measures, evidence=evidence)


def finishing_threads(backend: str, cpus: int | None = None) -> int:
    """Threads for the per-image finishing work: one per four cores, at most four, where inference runs off the
    CPU (TensorRT); none where ONNX Runtime's threads already use every core (measured on 16 cores: threads made
    the run 6 % slower there) or on a machine of two cores."""
    cpus = cpus or os.cpu_count() or 1
    if backend == "onnxruntime" or cpus <= 2:
        return 0
    return min(4, max(1, cpus // 4))


@dataclass(frozen=True)
class _Finished:
    """What the finishing work found for one image, ready to be journalled."""

    pred: Prediction
    heatmap_rel: str
    focus: float | None
    evidence: np.ndarray
    seconds: float  # class map, evidence and PNG


class Finisher:
    """Turns a prepared image plus its network outputs (or its error) into journal rows and maybe a PNG;
    ``timings`` collects every stage's seconds for the run. Use as a context manager (its threads stop on exit)
    and end each batch with :meth:`commit`."""

    def __init__(self, card: ModelCard, out_dir: Path, heatmaps: str, journal: Journal, threads: int = 0) -> None:
        self.card = card
        self.out_dir = out_dir
        self.heatmaps = heatmaps
        self.journal = journal
        self.timings = dict.fromkeys(STAGES, 0.0)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="finish") if threads > 0 else None
        self._pending: deque[tuple[Prepared, Future[_Finished]]] = deque()

    def __enter__(self) -> Finisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the threads: queued images are dropped (never journalled), a PNG being written is finished."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending.clear()

    def commit(self) -> None:
        """Journal every image handed in so far, in order, then commit: a committed image has its PNG."""
        self.drain()
        t0 = time.perf_counter()
        self.journal.commit()
        self.timings["write"] += time.perf_counter() - t0

    def drain(self) -> None:
        """Wait for the images still being finished and put their rows (a failed PNG write raises here)."""
        while self._pending:
            item, future = self._pending.popleft()
            self._put_finished(item, future.result())

    def error(self, item: Prepared) -> None:
        """Journal an image that could not be prepared (its row says why)."""
        self.drain()  # rows in arrival order
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

    def ok(self, item: Prepared, outputs: dict[str, np.ndarray]) -> None:
        """Finish an inferred image (write or remove its heatmap) and journal it, on a thread when there are
        threads: its rows are put by the next :meth:`drain` or :meth:`commit`."""
        if self._pool is None:
            self._put_finished(item, self._finish(item, outputs))
        else:
            self._pending.append((item, self._pool.submit(self._finish, item, outputs)))

    def _finish(self, item: Prepared, outputs: dict[str, np.ndarray]) -> _Finished:
        pred = predict(outputs["logits"], outputs.get("ood"), self.card, len(item.cells), item.colour)
        t0 = time.perf_counter()
        heatmap_rel, focus, evidence = self._heatmap(item, outputs["cam"], pred)
        return _Finished(pred, heatmap_rel, focus, evidence, time.perf_counter() - t0)

    def _put_finished(self, item: Prepared, done: _Finished) -> None:
        self.timings["heatmap"] += done.seconds
        t0 = time.perf_counter()
        self._put_ok(item, done.pred, done.heatmap_rel, done.focus, done.evidence)
        self.timings["write"] += time.perf_counter() - t0

    def _heatmap(self, item: Prepared, cam: np.ndarray, pred: Prediction) -> tuple[str, float | None, np.ndarray]:
        """(heatmap path or "", cell focus, per-cell evidence); the PNG is written only where ``--heatmaps``
        wants it, and one left by an earlier run with another ``--heatmaps`` is removed."""
        found, card = item.found, self.card
        label = card.classes[pred.label_index]
        assert item.labels is not None
        mask = (item.labels > 0).astype(np.uint8)
        # At the working copy's size (labels, boxes and pixels share it), not the file's width x height.
        heat = class_map(cam, pred.label_index, item.labels.shape[:2], item.boxes)
        focus = focus_share(heat, mask) if item.cells else None
        evidence = cell_evidence(heat, item.labels, len(item.cells))
        png_rel = heatmap_relpath(found.slide, found.in_slide)
        png = self.out_dir / png_rel
        if item.bgr is not None and wants_heatmap(self.heatmaps, label, pred.flags, card.classes):
            write_png(png, render(item.bgr, heat, mask, strongest_cells(item.labels, evidence)))
            return png_rel, focus, evidence
        png.unlink(missing_ok=True)
        return "", focus, evidence

    def _put_ok(
        self, item: Prepared, pred: Prediction, heatmap_rel: str, focus: float | None, evidence: np.ndarray
    ) -> None:
        found, card = item.found, self.card
        record = ImageRecord(
            slide=found.slide,
            image=found.image,
            status="ok",
            label=card.classes[pred.label_index],
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


__all__ = ["Finisher", "cell_record", "finishing_threads"]
