"""Finishing one image: its prediction, flags and cell evidence become journal rows, and maybe a heatmap PNG.

Both executors (local and Ray) end each image here, in the main process, so the rows and files of an image do not
depend on where it was decoded or inferred.
"""

from __future__ import annotations

import time
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


class Finisher:
    """Turns a prepared image plus its network outputs (or its error) into journal rows and maybe a PNG;
    ``timings`` collects every stage's seconds for the run."""

    def __init__(self, card: ModelCard, out_dir: Path, heatmaps: str, journal: Journal) -> None:
        self.card = card
        self.out_dir = out_dir
        self.heatmaps = heatmaps
        self.journal = journal
        self.timings = dict.fromkeys(STAGES, 0.0)

    def error(self, item: Prepared) -> None:
        """Journal an image that could not be prepared (its row says why)."""
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
        """Journal an inferred image (and write or remove its heatmap); returns its flags."""
        pred = predict(outputs["logits"], outputs.get("ood"), self.card, len(item.cells), item.colour)
        t0 = time.perf_counter()
        heatmap_rel, focus, evidence = self._heatmap(item, outputs["cam"], pred)
        t1 = time.perf_counter()
        self.timings["heatmap"] += t1 - t0
        self._put_ok(item, pred, heatmap_rel, focus, evidence)
        self.timings["write"] += time.perf_counter() - t1
        return list(pred.flags)

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


__all__ = ["Finisher", "cell_record"]
