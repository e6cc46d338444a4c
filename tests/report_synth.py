"""Synthetic out dirs for the report's tests and measurements: tables shaped like `allscan run`'s output.

`python tests/report_synth.py OUT [N]` writes an out dir over the shared dataset's images (N of them, default
all), split into patient-sized slides, with heatmaps, for measuring the page.
"""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

CLASSES = ("Benign", "Early", "Pre", "Pro")
DATASET = Path("/work/shared/datasets/all-pbs")
IMAGE_COLUMNS = [
    "slide", "image", "status", "error", "label", "confidence", *[f"prob_{c}" for c in CLASSES], "n_cells",
    "heatmap", "flags", "cell_focus", "ood", "width", "height", "cell_area_fraction", "model_id", "notes",
]  # fmt: skip


def guard(value: str) -> str:
    """What the pipeline's CSV writer does to a cell a spreadsheet would execute."""
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


def image_row(slide: str, image: str, label: str = "", probs: tuple[float, ...] = (), **extra: object) -> dict:
    status = str(extra.pop("status", "ok"))
    row = {c: "" for c in IMAGE_COLUMNS}
    row.update(slide=slide, image=image, status=status, model_id="tiny@0123456789ab", width=224, height=224)
    if status == "ok":
        probs = probs or tuple(0.85 if c == label else 0.05 for c in CLASSES)
        row.update(label=label, confidence=f"{max(probs):.4f}", n_cells=1)
        row.update({f"prob_{c}": f"{p:.4f}" for c, p in zip(CLASSES, probs, strict=True)})
    row.update({k: v for k, v in extra.items()})
    return row


def write_tables(out: Path, rows: list[dict], run: dict | None = None, slide_labels: dict | None = None) -> Path:
    """images.csv, slides.csv (label and evidence per slide), run.json; guarded like the pipeline's writer."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "images.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(IMAGE_COLUMNS)
        for row in rows:
            w.writerow([guard(str(row.get(c, ""))) for c in IMAGE_COLUMNS])
    slides: dict[str, list[dict]] = {}
    for row in rows:
        slides.setdefault(row["slide"], []).append(row)
    with (out / "slides.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        head = ["slide", "n_images", "n_ok", "n_error", "label", "all_suspected", *[f"n_{c}" for c in CLASSES]]
        w.writerow([*head, "evidence"])
        for name, items in slides.items():
            ok = [r for r in items if r["status"] == "ok"]
            counts = [sum(1 for r in ok if r["label"] == c) for c in CLASSES]
            label = (slide_labels or {}).get(name) or (CLASSES[counts.index(max(counts))] if ok else "")
            evidence = f"{max(counts) if ok else 0} of {len(ok)} judged images called {label}"
            suspected = "" if not label else "no" if label == CLASSES[0] else "yes"
            cells = [guard(name), len(items), len(ok), len(items) - len(ok), label, suspected, *counts]
            w.writerow([*cells, guard(evidence)])
    run = run if run is not None else default_run()
    (out / "run.json").write_text(json.dumps(run, indent=1), encoding="utf-8")
    return out


def default_run(inputs: list[str] | None = None) -> dict:
    return {
        "versions": {"allscan": "0.1.0", "onnxruntime": "1.20.0", "opencv": "5.0.0", "python": "3.11.7"},
        "model": {
            "name": "tiny",
            "id": "tiny@0123456789ab",
            "architecture": "tiny-cam",
            "class_labels": {},
            "metrics": {
                "blocked_split": {"accuracy": 0.912, "macro_f1": 0.9},
                "random_split": {"accuracy": 0.99},
            },
        },
        "backend": "onnxruntime",
        "precision": "fp32",
        "args": {"inputs": inputs or []},
        "duration_s": 83.2,
        "images_per_s": 34.4,
    }


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
