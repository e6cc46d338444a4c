"""Synthetic out dirs for the report's tests and measurements: tables written as `allscan run` writes them.

The rows are the pipeline's records, the slides are tallied by the pipeline's slide rule and everything is
published by its own writers, so the report is tested against the contract, not a copy of it.
`python tests/report_synth.py OUT [N]` writes an out dir over the shared dataset's images (N of them, default
all), split into patient-sized slides, with heatmaps, for measuring the page.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from allscan.io.records import Counts, ImageRecord, ModelRecord, RunFlags, RunRecord, to_cells, write_run
from allscan.io.tables import CELL_TABLE_COLUMNS, AtomicTable, image_columns, slide_columns
from allscan.pipeline.slides import SlideTally

CLASSES = ("Benign", "Early", "Pre", "Pro")
DATASET = Path("/work/shared/datasets/all-pbs")
MODEL_ID = "tiny@0123456789ab"


def image_row(slide: str, image: str, label: str = "", probs: tuple[float, ...] = (), **extra: object) -> ImageRecord:
    """An images.csv record; ``flags`` may be given as the table's ';'-joined text."""
    status = str(extra.pop("status", "ok"))
    flags = str(extra.pop("flags", "") or "")
    values: dict[str, object] = dict(model_id=MODEL_ID, width=224, height=224)
    if status == "ok":
        probs = probs or tuple(0.85 if c == label else 0.05 for c in CLASSES)
        values.update(label=label, confidence=max(probs), probs=probs, n_cells=1)
    values.update(extra)
    return ImageRecord(slide, image, status, flags=tuple(filter(None, flags.split(";"))), **values)  # type: ignore[arg-type]


def write_tables(out: Path, rows: list[ImageRecord], run: RunRecord | None = None) -> Path:
    """images.csv, cells.csv (empty), slides.csv and run.json, by the pipeline's writers and slide rule."""
    out.mkdir(parents=True, exist_ok=True)
    tallies: dict[str, SlideTally] = {}
    for row in rows:
        index = CLASSES.index(row.label) if row.ok else None
        tallies.setdefault(row.slide, SlideTally(row.slide, CLASSES)).add(row.status, index, row.probs, row.flags)
    tables = [
        AtomicTable(out / "images.csv", image_columns(CLASSES)),
        AtomicTable(out / "cells.csv", CELL_TABLE_COLUMNS),
        AtomicTable(out / "slides.csv", slide_columns(CLASSES)),
    ]
    tables[0].write_rows(to_cells(row, CLASSES) for row in rows)
    tables[2].write_rows(to_cells(t.record(), CLASSES) for t in tallies.values())
    for table in tables:
        table.publish()
    write_run(out / "run.json", run if run is not None else default_run())
    return out


def default_run(inputs: list[str] | None = None) -> RunRecord:
    model = ModelRecord(
        name="tiny",
        id=MODEL_ID,
        architecture="tiny-cam",
        classes=CLASSES,
        input_mode="full",
        heatmap_method="cam",
        files={"model.onnx": "0123456789ab" * 5},
        flags=RunFlags(low_confidence=0.6, ood=1.5),
    )
    counts = Counts(images=0, ok=0, error=0, processed=0, reused=0, flagged=0, slides=0, per_class={})
    return RunRecord(
        tables_version=2,
        started="2026-01-01T00:00:00+00:00",
        finished="2026-01-01T00:01:23+00:00",
        versions={"allscan": "0.1.0", "onnxruntime": "1.20.0", "opencv": "5.0.0", "python": "3.11.7"},
        model=model,
        backend="onnxruntime",
        backend_reason="onnxruntime: no CUDA GPU found",
        precision="fp32",
        args={"inputs": inputs or []},
        input_roots=tuple(inputs or ()),
        workers_used=0,
        counts=counts,
        timings_s={},
        wall_s=83.2,
        images_per_s=34.4,
        exit_code=0,
        warnings=(),
    )


def dataset_out_dir(out: Path, n: int | None = None, per_slide: int = 32, seed: int = 0) -> Path:
    """An out dir over the shared dataset: patient-sized slides of real images, heatmaps, varied flags."""
    import cv2
    import numpy as np

    rng = random.Random(seed)
    files = sorted(DATASET.glob("*/*.jpg"))[: n or None]
    inputs = out / "input"
    rows = []
    for i, src in enumerate(files):
        slide = f"{src.parent.name}_{i // per_slide:03d}"
        (inputs / slide).mkdir(parents=True, exist_ok=True)
        link = inputs / slide / src.name
        if not link.exists():
            link.symlink_to(src)
        true = CLASSES.index(src.parent.name)
        label = true if rng.random() < 0.85 else rng.randrange(len(CLASSES))
        raw = [rng.random() * 0.3 for _ in CLASSES]
        raw[label] += rng.uniform(0.3, 2.0)
        probs = tuple(p / sum(raw) for p in raw)
        flags = []
        if max(probs) < 0.6:
            flags.append("low_confidence")
        if rng.random() < 0.03:
            flags.append("no_cells")
        if rng.random() < 0.05:
            flags.append("out_of_distribution")
        heat = f"heatmaps/{slide}/{src.name}.png"
        hp = out / heat
        if not hp.exists():
            hp.parent.mkdir(parents=True, exist_ok=True)
            img = cv2.imread(str(src))
            cam = cv2.applyColorMap(np.uint8(np.linspace(0, 255, img.shape[1]))[None].repeat(img.shape[0], 0),
                                    cv2.COLORMAP_JET)  # fmt: skip
            cv2.imwrite(str(hp), cv2.addWeighted(img, 0.6, cam, 0.4, 0))
        if rng.random() < 0.004:
            rows.append(image_row(slide, f"{slide}/{src.name}", status="error", error="cannot decode image"))
            continue
        rows.append(
            image_row(
                slide,
                f"{slide}/{src.name}",
                CLASSES[label],
                probs,
                heatmap=heat,
                flags=";".join(flags),
                n_cells=rng.randint(0, 4),
            )  # fmt: skip
        )
    return write_tables(out, rows, default_run([str(inputs.resolve())]))


if __name__ == "__main__":
    dataset_out_dir(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None)
