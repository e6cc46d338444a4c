"""The report's page model: the run's records read into slides, images and a review queue.

Everything the page shows comes from ``images.csv``, ``slides.csv`` and ``run.json`` read as the pipeline's own
records (:mod:`allscan.io.records`), plus the model card for its metrics, so the numbers can be unit-tested
without a browser and ``allscan report OUT_DIR`` needs nothing but the out dir. The slide statistics and labels
are slides.csv's, made by the pipeline's slide rule; the page only orders and shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from allscan.io.names import escape_name
from allscan.io.records import (
    Flag,
    ImageRecord,
    RecordError,
    RunRecord,
    SlideRecord,
    benign_class,
    header_classes,
    read_records,
    read_run,
)
from allscan.models.card import ModelCard
from allscan.report import runinfo

FLAG_LABELS = {
    Flag.NO_CELLS: "no white cell",
    Flag.OUT_OF_DISTRIBUTION: "unlike training data",
    Flag.LOW_CONFIDENCE: "low confidence",
    "error": "error",
}

__all__ = ["FLAG_LABELS", "ImageRow", "ReportData", "SlideRow", "evidence_score", "load"]


@dataclass
class ImageRow:
    """One row of images.csv as the page shows it (names as the table renders them)."""

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
    """One slide: its images, and its slides.csv record (counts, label, evidence)."""

    name: str
    images: list[ImageRow] = field(default_factory=list)
    label: str = ""
    all_suspected: str = ""  # slides.csv: yes / no / '' (no label)
    evidence: str = ""
    n_images: int = 0
    n_ok: int = 0
    n_error: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    mean_probs: dict[str, float | None] = field(default_factory=dict)
    flag_counts: dict[str, int] = field(default_factory=dict)  # flags that occur, in Flag's order
    n_flagged: int = 0
    score: tuple[float, ...] = ()


@dataclass
class ReportData:
    """Everything the page shows."""

    out_dir: Path
    classes: tuple[str, ...]
    class_labels: dict[str, str]
    slides: list[SlideRow]  # sorted by evidence of leukemia, strongest first
    review: list[ImageRow]  # flagged, low-confidence and failed images, in slide order
    flag_names: tuple[str, ...]  # flags seen, in Flag's order; 'error' is not a flag
    run: RunRecord | None  # None: no run.json (the tables alone)
    card: ModelCard | None  # the store's card of the model that ran, when it is here

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
        return self.class_labels.get(cls) or cls


def is_leukemic(label: str, classes: tuple[str, ...]) -> bool:
    """The pipeline's rule: any class but the benign one (allscan.io.records.benign_class)."""
    return label in classes and label != benign_class(classes)


def _image_row(record: ImageRecord) -> ImageRow:
    return ImageRow(
        slide=escape_name(record.slide),
        image=escape_name(record.image),
        status=record.status,
        error=record.error,
        label=record.label if record.ok else "",
        confidence=record.confidence if record.ok else None,
        probs=tuple(record.probs or ()) if record.ok else (),
        n_cells=record.n_cells,
        heatmap=record.heatmap,
        flags=tuple(str(f) for f in record.flags),
        width=record.width,
        height=record.height,
        notes=record.notes,
    )


def _slide_row(record: SlideRecord, images: list[ImageRow], classes: tuple[str, ...]) -> SlideRow:
    flag_counts = {str(f): k for f, k in zip(Flag, record.flag_counts, strict=True) if k}
    slide = SlideRow(
        name=escape_name(record.slide),
        images=sorted(images, key=lambda im: im.image),
        label=record.label,
        all_suspected=record.all_suspected,
        evidence=record.evidence,
        n_images=record.n_images,
        n_ok=record.n_ok,
        n_error=record.n_error,
        counts=dict(zip(classes, record.counts, strict=True)),
        mean_probs=dict(zip(classes, record.mean_probs, strict=True)),
        flag_counts=flag_counts,
        n_flagged=record.n_flagged,
    )
    slide.score = evidence_score(slide, classes)
    return slide


def evidence_score(slide: SlideRow, classes: tuple[str, ...]) -> tuple[float, ...]:
    """Sort key of a slide, larger = stronger evidence of leukemia.

    In order: the slide's label is a leukemic class; the share of its judged images called leukemic without a
    flag (what a lab can trust); the share called leukemic at all; the mean leukemic probability (1 - benign).
    """
    n_ok = max(1, slide.n_ok)
    benign = benign_class(classes)
    unflagged = sum(1 for im in slide.images if im.ok and not im.flags and is_leukemic(im.label, classes))
    leukemic = sum(k for c, k in slide.counts.items() if c != benign)
    mean_benign = slide.mean_probs.get(benign)
    return (
        1.0 if is_leukemic(slide.label, classes) else 0.0,
        unflagged / n_ok,
        leukemic / n_ok,
        0.0 if mean_benign is None else 1.0 - mean_benign,
    )


def _slides(out_dir: Path, classes: tuple[str, ...]) -> list[SlideRow]:
    """The slides of slides.csv with their images from images.csv; an image of a slide slides.csv lacks is an
    error (the tables were not published together)."""
    images: dict[str, list[ImageRow]] = {}
    for image in read_records(out_dir / "images.csv", ImageRecord, classes):
        images.setdefault(image.slide, []).append(_image_row(image))
    slides = []
    for slide in read_records(out_dir / "slides.csv", SlideRecord, classes):
        if slide.slide in images:  # a slide without image rows has nothing to show
            slides.append(_slide_row(slide, images.pop(slide.slide), classes))
    if images:
        raise RecordError(f"{out_dir / 'slides.csv'} lacks slide {escape_name(next(iter(images)))!r} of images.csv")
    return slides


def load(out_dir: Path) -> ReportData:
    """Read the out dir's records into the page model. FileNotFoundError without images.csv or slides.csv,
    :class:`RecordError` when a table or run.json is not the contract's."""
    out_dir = Path(out_dir)
    for name in ("images.csv", "slides.csv"):
        if not (out_dir / name).is_file():
            raise FileNotFoundError(f"no {name} in {out_dir}; is it an 'allscan run' output folder?")
    run = read_run(out_dir / "run.json") if (out_dir / "run.json").is_file() else None
    classes = run.model.classes if run else header_classes(out_dir / "images.csv")
    card = runinfo.card_of(run)
    ordered = sorted(_slides(out_dir, classes), key=lambda s: (tuple(-x for x in s.score), s.name))
    seen = {f for s in ordered for f in s.flag_counts}
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
        class_labels=runinfo.class_labels(run, card),
        slides=ordered,
        review=review,
        flag_names=tuple(str(f) for f in Flag if f in seen),
        run=run,
        card=card,
    )
