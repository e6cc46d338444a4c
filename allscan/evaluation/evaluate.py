"""Evaluate a stored model on labelled class folders (and optionally a foreign lab's unlabelled images).

The images go through ``run_batch`` exactly as in ``allscan run``; each class folder is a slide, so the truth of
each row is its slide's name. ``--split test`` limits the evaluation to the held-out images recorded in the
model's ``split.json`` (symlinked into a scratch folder).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from allscan.evaluation.shortcut import binary_metrics, colour_baseline, write_swapped
from allscan.io.records import ImageRecord, benign_class, read_records
from allscan.models.store import load_model
from allscan.pipeline.run import RunConfig, run_batch


@dataclass
class EvaluateConfig:
    data_dir: Path
    model: str
    out: Path
    split: str | None = None  # None: every image; else a part of split.json ('test', 'calib', 'train')
    foreign: Path | None = None
    backend: str = "auto"
    batch_size: int = 16
    workers: int | None = None
    plots: bool = True
    audit: bool = True  # the shortcut audit: colour baseline, stain swap, ALL vs. Benign
    swap_seed: int = 0


def _read_rows(path: Path, classes: tuple[str, ...]) -> list[ImageRecord]:
    """A run's images.csv as records; each row's truth is its slide (a class folder)."""
    return list(read_records(path, ImageRecord, classes))


def _split_view(config: EvaluateConfig, folder: Path, scratch: Path) -> Path:
    """A scratch folder of symlinks holding only the ``config.split`` part of split.json."""
    split = json.loads((folder / "split.json").read_text())
    if config.split not in split:
        raise ValueError(f"{folder / 'split.json'} has no part {config.split!r}")
    for rel in split[config.split]:
        source = Path(config.data_dir) / rel
        target = scratch / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.symlink(source.resolve(), target)
    return scratch


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _training_images(model_folder: Path, data_dir: Path, classes: tuple[str, ...]) -> tuple[list[Path], list[int]]:
    """The model's own training split (split.json), found under the data folder it records, else ``data_dir``."""
    split_path = model_folder / "split.json"
    if not split_path.is_file():
        return [], []
    split = json.loads(split_path.read_text())
    roots = [Path(split.get("data_dir", "")), Path(data_dir)]
    root = next((r for r in roots if str(r) and any((r / c).is_dir() for c in classes)), None)
    if root is None:
        return [], []
    index = {c: i for i, c in enumerate(classes)}
    pairs = [(root / rel, index.get(rel.split("/", 1)[0], -1)) for rel in split.get("train", [])]
    pairs = [(p, y) for p, y in pairs if y >= 0 and p.is_file()]
    return [p for p, _ in pairs], [y for _, y in pairs]


def _audit(config, model, data: Path, rows, truth, plain: dict, common: dict, out: Path) -> dict:
    """colour_baseline and swap (see :mod:`allscan.evaluation.shortcut`)."""
    from allscan.evaluation.metrics import classification_metrics

    classes = model.card.classes
    index = {c: i for i, c in enumerate(classes)}
    paths = [data / r.image for r in rows]
    labels = [index[t] for t in truth]
    result: dict = {}
    train_paths, train_labels = _training_images(model.folder, Path(config.data_dir), classes)
    if train_paths:
        result["colour_baseline"] = colour_baseline(train_paths, train_labels, paths, labels, len(classes))
    else:
        result["colour_baseline"] = {"skipped": "the model's training images (split.json) are not found"}
    swap_dir = out / "swap-images"
    if swap_dir.exists():
        shutil.rmtree(swap_dir)
    write_swapped(paths, labels, [r.image for r in rows], swap_dir, config.swap_seed)
    if not swap_dir.exists():
        result["swap"] = {"skipped": "no image has a donor of another class"}
        return result
    run_batch(RunConfig(inputs=[swap_dir], out=out / "swap", **common))
    swap_rows = _read_rows(out / "swap" / "images.csv", classes)
    swapped = classification_metrics(swap_rows, classes, [r.slide for r in swap_rows])
    result["swap"] = {
        "method": "Reinhard LAB mean/std transfer from a seeded random image of another class",
        "seed": config.swap_seed,
        "n_images": swapped["n_images"],
        "accuracy": swapped["accuracy"],
        "macro_f1": swapped["macro_f1"],
        "flag_rate": swapped["flag_rate"],
        "swap_gap": plain["macro_f1"] - swapped["macro_f1"],
        "binary": binary_metrics(swap_rows, classes, [r.slide for r in swap_rows], benign_class(classes)),
    }
    return result


def evaluate(config: EvaluateConfig, log=print) -> dict:
    from allscan.evaluation.metrics import classification_metrics, foreign_metrics

    model = load_model(config.model)
    classes = model.card.classes
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(config.data_dir)
    if config.split:
        data = _split_view(config, model.folder, out / f"split-{config.split}")
    unknown = sorted(p.name for p in data.iterdir() if p.is_dir() and p.name not in classes)
    if unknown:
        raise ValueError(f"{data}: folders {', '.join(unknown)} are not classes of model {config.model!r}")
    common = dict(
        model=config.model,
        backend=config.backend,
        batch_size=config.batch_size,
        workers=config.workers,
        heatmaps="none",
        report=False,
        log=log,
    )
    summary = run_batch(RunConfig(inputs=[data], out=out / "run", **common))
    rows = _read_rows(out / "run" / "images.csv", classes)
    truth = [r.slide for r in rows]
    metrics = classification_metrics(rows, classes, truth)
    metrics.update(
        model=model.card.name,
        model_id=model.card.model_id,
        data_dir=str(config.data_dir),
        split=config.split or "all",
        backend=summary.backend,
        images_per_s=summary.images_per_s,
    )
    benign = benign_class(classes)
    metrics["binary"] = binary_metrics(rows, classes, truth, benign)
    if config.audit:
        metrics.update(_audit(config, model, data, rows, truth, metrics, common, out))
    if config.foreign:
        fsummary = run_batch(RunConfig(inputs=[Path(config.foreign)], out=out / "foreign", **common))
        metrics["foreign"] = foreign_metrics(_read_rows(out / "foreign" / "images.csv", classes), benign)
        metrics["foreign"]["dir"] = str(config.foreign)
        metrics["foreign"]["images_per_s"] = fsummary.images_per_s
    metrics = _clean(metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if config.plots:
        from allscan.evaluation.plots import write_plots

        write_plots(rows, classes, truth, metrics, out)
    return metrics
