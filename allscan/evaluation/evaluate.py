"""Evaluate a stored model on labelled class folders (and optionally a foreign lab's unlabelled images).

The images go through ``run_batch`` exactly as in ``allscan run``; each class folder is a slide, so the truth of
each row is its slide's name. ``--split test`` limits the evaluation to the held-out images recorded in the
model's ``split.json`` (symlinked into a scratch folder).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

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


def _read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


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
    rows = _read_rows(out / "run" / "images.csv")
    truth = [r["slide"] for r in rows]
    metrics = classification_metrics(rows, classes, truth)
    metrics.update(
        model=model.card.name,
        model_id=model.card.model_id,
        data_dir=str(config.data_dir),
        split=config.split or "all",
        backend=summary.backend,
        images_per_s=summary.images_per_s,
    )
    if config.foreign:
        fsummary = run_batch(RunConfig(inputs=[Path(config.foreign)], out=out / "foreign", **common))
        metrics["foreign"] = foreign_metrics(_read_rows(out / "foreign" / "images.csv"))
        metrics["foreign"]["dir"] = str(config.foreign)
        metrics["foreign"]["images_per_s"] = fsummary.images_per_s
    metrics = _clean(metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if config.plots:
        from allscan.evaluation.plots import write_plots

        write_plots(rows, classes, truth, metrics, out)
    return metrics
