"""The report's page model: the run's tables read into slides, images and a review queue.

Everything the page shows is computed here, from `images.csv`, `slides.csv` and `run.json` alone, so the
numbers can be unit-tested without a browser and `allscan report OUT_DIR` needs nothing but the out dir.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Human names of the shipped classes; any other class shows its raw name.
DEFAULT_CLASS_LABELS = {
    "Benign": "Benign (hematogones)",
    "Early": "Early Pre-B ALL",
    "Pre": "Pre-B ALL",
    "Pro": "Pro-B ALL",
}
# Class names that mean "no leukemia" when ranking slides by evidence of leukemia.
NON_LEUKEMIC = {"benign", "normal", "healthy", "hem", "hematogones"}
# Flags the pipeline writes, in the order the page lists them; unknown flags follow, sorted.
KNOWN_FLAGS = ("no_cells", "out_of_distribution", "low_confidence")
FLAG_LABELS = {
    "no_cells": "no white cell",
    "out_of_distribution": "unlike training data",
    "low_confidence": "low confidence",
    "error": "error",
}
DEFAULT_LOW_CONFIDENCE = 0.6
_GUARDED = ("=", "+", "-", "@", "\t", "\r")


def unguard(value: str) -> str:
    """Undo the CSV writer's formula-injection guard: `'=cmd` was written for `=cmd`."""
    if len(value) >= 2 and value[0] == "'" and value[1] in _GUARDED:
        return value[1:]
    return value


def _float(value: str) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _int(value: str) -> int | None:
    number = _float(value)
    return None if number is None else int(number)


def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Read a CSV written by the pipeline: header and rows of unguarded strings ([] if the file is absent)."""
    if not path.is_file():
        return [], []
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        rows = [{key.strip(): unguard(val or "") for key, val in row.items() if key is not None} for row in reader]
    return header, rows


@dataclass
class ImageRow:
    """One row of images.csv, typed."""

    slide: str
    image: str
    status: str
    error: str = ""
    label: str = ""
    confidence: float | None = None
    probs: tuple[float | None, ...] = ()
    n_cells: int | None = None
    heatmap: str = ""
    flags: tuple[str, ...] = ()
    width: int | None = None
    height: int | None = None
    notes: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def review_reasons(self) -> tuple[str, ...]:
        """Why a person should look at this image: its flags, plus `error` when it was not judged."""
        return (*self.flags, "error") if not self.ok else self.flags


@dataclass
class SlideRow:
    """One slide: its images, counts over them, and the slide-level label and evidence from slides.csv."""

    name: str
    images: list[ImageRow] = field(default_factory=list)
    label: str = ""
    all_suspected: str = ""  # slides.csv: yes / no / '' (no label)
    evidence: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    mean_probs: dict[str, float | None] = field(default_factory=dict)
    flag_counts: dict[str, int] = field(default_factory=dict)
    n_flagged: int = 0
    score: tuple[float, ...] = ()

    @property
    def n_images(self) -> int:
        return len(self.images)

    @property
    def n_ok(self) -> int:
        return sum(1 for im in self.images if im.ok)

    @property
    def n_error(self) -> int:
        return self.n_images - self.n_ok


@dataclass
class ReportData:
    """Everything the page shows."""

    out_dir: Path
    classes: tuple[str, ...]
    class_labels: dict[str, str]
    slides: list[SlideRow]  # sorted by evidence of leukemia, strongest first
    review: list[ImageRow]  # flagged, low-confidence and failed images, in slide order
    flag_names: tuple[str, ...]  # flags seen, known ones first; 'error' is not a flag
    run: dict[str, Any]
    low_confidence: float
    has_flags_column: bool

    @property
    def images(self) -> list[ImageRow]:
        return [im for s in self.slides for im in s.images]

    @property
    def n_images(self) -> int:
        return sum(s.n_images for s in self.slides)

    @property
    def n_ok(self) -> int:
        return sum(s.n_ok for s in self.slides)

    @property
    def n_error(self) -> int:
        return self.n_images - self.n_ok

    @property
    def n_flagged(self) -> int:
        return sum(s.n_flagged for s in self.slides)

    def label_counts(self) -> dict[str, tuple[int, int]]:
        """Per class: (ok images called it without a flag, ok images called it with a flag)."""
        out = {c: [0, 0] for c in self.classes}
        for im in self.images:
            if im.ok and im.label in out:
                out[im.label][1 if im.flags else 0] += 1
        return {c: (a, b) for c, (a, b) in out.items()}

    def human(self, cls: str) -> str:
        return self.class_labels.get(cls, cls)


def class_names(header: list[str]) -> tuple[str, ...]:
    """Classes in the model card's order, from the `prob_<class>` columns of images.csv."""
    return tuple(h[len("prob_") :] for h in header if h.startswith("prob_") and len(h) > len("prob_"))


def is_leukemic(label: str, classes: tuple[str, ...]) -> bool:
    return label in classes and label.lower() not in NON_LEUKEMIC


def _image_row(row: dict[str, str], classes: tuple[str, ...], low_conf: float, has_flags: bool) -> ImageRow:
    status = (row.get("status") or "").strip().lower() or "ok"
    flags = tuple(f.strip() for f in (row.get("flags") or "").split(";") if f.strip())
    confidence = _float(row.get("confidence", ""))
    if not has_flags and status == "ok" and confidence is not None and confidence < low_conf:
        flags = ("low_confidence",)  # tables from before flags existed: derive the one flag we can
    return ImageRow(
        slide=row.get("slide", ""),
        image=row.get("image", ""),
        status=status,
        error=row.get("error", ""),
        label=row.get("label", "") if status == "ok" else "",
        confidence=confidence if status == "ok" else None,
        probs=tuple(_float(row.get(f"prob_{c}", "")) for c in classes) if status == "ok" else (),
        n_cells=_int(row.get("n_cells", "")),
        heatmap=row.get("heatmap", ""),
        flags=flags,
        width=_int(row.get("width", "")),
        height=_int(row.get("height", "")),
        notes=row.get("notes", ""),
    )


def _summarise(slide: SlideRow, classes: tuple[str, ...]) -> None:
    """Fill a slide's counts and its evidence score from its images."""
    ok = [im for im in slide.images if im.ok]
    slide.counts = {c: sum(1 for im in ok if im.label == c) for c in classes}
    for i, c in enumerate(classes):
        values = [im.probs[i] for im in ok if i < len(im.probs) and im.probs[i] is not None]
        slide.mean_probs[c] = sum(values) / len(values) if values else None  # type: ignore[arg-type]
    flag_counter: Counter[str] = Counter(f for im in slide.images for f in im.flags)
    slide.flag_counts = dict(flag_counter)
    slide.n_flagged = sum(1 for im in slide.images if im.flags)
    if not slide.label and ok:
        # No slides.csv: the majority label of the unflagged images (of all ok images if all are flagged).
        trusted = [im for im in ok if not im.flags] or ok
        slide.label = Counter(im.label for im in trusted).most_common(1)[0][0]
    slide.score = evidence_score(slide, classes)


def evidence_score(slide: SlideRow, classes: tuple[str, ...]) -> tuple[float, ...]:
    """Sort key of a slide, larger = stronger evidence of leukemia.

    In order: the slide's label is a leukemic class; the share of its judged images called leukemic without a
    flag (what a lab can trust); the share called leukemic at all; the mean leukemic probability (1 - benign).
    """
    ok = [im for im in slide.images if im.ok]
    n_ok = max(1, len(ok))
    leuk = [im for im in ok if is_leukemic(im.label, classes)]
    benign_idx = [i for i, c in enumerate(classes) if c.lower() in NON_LEUKEMIC]
    leuk_prob = 0.0
    if ok and benign_idx:
        vals = [1.0 - sum((im.probs[i] or 0.0) for i in benign_idx if i < len(im.probs)) for im in ok]
        leuk_prob = sum(vals) / len(vals)
    return (
        1.0 if is_leukemic(slide.label, classes) else 0.0,
        sum(1 for im in leuk if not im.flags) / n_ok,
        len(leuk) / n_ok,
        leuk_prob,
    )


def read_run(out_dir: Path) -> dict[str, Any]:
    """run.json as a dict; {} when it is missing or unreadable (the report still renders)."""
    try:
        data = json.loads((out_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _run_model(run: dict[str, Any]) -> dict[str, Any]:
    model = run.get("model")
    return model if isinstance(model, dict) else {}


def _low_confidence(run: dict[str, Any]) -> float:
    model = _run_model(run)
    card = model.get("card") if isinstance(model.get("card"), dict) else {}
    for flags in (model.get("flags"), card.get("flags"), run.get("flags")):
        value = _float(str(flags.get("low_confidence"))) if isinstance(flags, dict) else None
        if value is not None:
            return value
    return DEFAULT_LOW_CONFIDENCE


def load(out_dir: Path) -> ReportData:
    """Read the out dir's tables into the page model. Raises FileNotFoundError without images.csv."""
    out_dir = Path(out_dir)
    if not (out_dir / "images.csv").is_file():
        raise FileNotFoundError(out_dir / "images.csv")
    header, rows = read_table(out_dir / "images.csv")
    classes = class_names(header)
    run = read_run(out_dir)
    low_conf = _low_confidence(run)
    has_flags = "flags" in header
    labels = dict(DEFAULT_CLASS_LABELS)
    model_labels = _run_model(run).get("class_labels")
    if isinstance(model_labels, dict):
        labels.update({str(k): str(v) for k, v in model_labels.items() if v})

    slides: dict[str, SlideRow] = {}
    for row in rows:
        image = _image_row(row, classes, low_conf, has_flags)
        slides.setdefault(image.slide, SlideRow(name=image.slide)).images.append(image)
    for srow in read_table(out_dir / "slides.csv")[1]:
        name = srow.get("slide", "")
        if name in slides:  # a slide without image rows has nothing to show
            slides[name].label = srow.get("label", "")
            slides[name].all_suspected = srow.get("all_suspected", "")
            slides[name].evidence = srow.get("evidence", "")
    for slide in slides.values():
        slide.images.sort(key=lambda im: im.image)
        _summarise(slide, classes)
    ordered = sorted(slides.values(), key=lambda s: (tuple(-x for x in s.score), s.name))

    flag_seen = {f for s in ordered for f in s.flag_counts}
    flag_names = tuple(f for f in KNOWN_FLAGS if f in flag_seen) + tuple(sorted(flag_seen - set(KNOWN_FLAGS)))
    review = [
        im
        for s in ordered
        for im in sorted(
            (im for im in s.images if im.review_reasons),
            key=lambda im: (im.ok, im.confidence if im.confidence is not None else 0.0, im.image),
        )
    ]
    return ReportData(
        out_dir=out_dir,
        classes=classes,
        class_labels=labels,
        slides=ordered,
        review=review,
        flag_names=flag_names,
        run=run,
        low_confidence=low_conf,
        has_flags_column=has_flags,
    )
