"""Per-slide summary: counts, mean probabilities, flag counts, and the slide's label with its evidence.

Slide label rule (also in the README):

1. The *basis* is the slide's unflagged ``ok`` images if there is at least one, else all its ``ok`` images (a
   flagged image's call is not to be trusted, but a slide where every image is flagged still gets a label).
2. **ALL suspected** (``all_suspected`` = yes) when the basis holds at least 2 leukemia images (any leukemia
   class) *and* they are at least 20 % of it. The label is then the subtype: the most frequent leukemia class (a
   tie goes to the higher mean probability of that class over the basis, then to the card's class order). B-ALL
   subtypes are defined by immunophenotype: a subtype called from images is a research signal, not a diagnosis.
3. Otherwise ALL is not suspected and the label is the benign class.
4. A slide without any ``ok`` image gets an empty label.

Two images are required so that a single stray call never labels a slide, and 20 % so that a benign slide with
a few misread fields stays benign. The ``evidence`` column spells out which numbers decided. The per-class
counts and mean probabilities in slides.csv are over all ``ok`` images; the evidence gives the basis' counts.
"""

from __future__ import annotations

from collections.abc import Sequence

from allscan.io.records import SlideRecord, benign_class
from allscan.io.tables import Flag

MIN_IMAGES = 2
MIN_SHARE = 0.20
SUSPECTED = "ALL suspected"
NOT_SUSPECTED = "ALL not suspected"


class _Counts:
    def __init__(self, n_classes: int) -> None:
        self.n = 0
        self.counts = [0] * n_classes
        self.prob_sums = [0.0] * n_classes

    def add(self, label_index: int, probs: Sequence[float]) -> None:
        self.n += 1
        self.counts[label_index] += 1
        for i, p in enumerate(probs):
            self.prob_sums[i] += p

    def mean(self, i: int) -> float | None:
        return self.prob_sums[i] / self.n if self.n else None


def slide_label(classes: Sequence[str], counts: Sequence[int], mean_probs: Sequence[float]) -> tuple[str, str]:
    """(label, reason) for a basis of images with these per-class counts; see the module docstring.

    The reason says first whether ALL is suspected (the question a hematologist asks first), then the subtype.
    """
    n = sum(counts)
    benign = benign_class(tuple(classes))
    leuk = [i for i, c in enumerate(classes) if c != benign]
    n_leuk = sum(counts[i] for i in leuk)
    share = n_leuk / n
    summary = f"leukemia {n_leuk}/{n} = {share:.0%}"
    if n_leuk >= MIN_IMAGES and share >= MIN_SHARE:
        best = max(leuk, key=lambda i: (counts[i], mean_probs[i], -i))
        tied = [i for i in leuk if counts[i] == counts[best] and i != best]
        tie = ""
        if tied:
            tie = f"; tie with {', '.join(classes[i] for i in tied)} broken by mean probability"
        return classes[best], (
            f"{SUSPECTED}: {summary} >= {MIN_SHARE:.0%} with {n_leuk} >= {MIN_IMAGES} images; subtype "
            f"{classes[best]} ({counts[best]} images, most frequent leukemia class{tie}; a research signal)"
        )
    if n_leuk < MIN_IMAGES:
        return benign, f"{NOT_SUSPECTED}: {summary}, fewer than {MIN_IMAGES} leukemia images -> {benign}"
    return benign, f"{NOT_SUSPECTED}: {summary} < {MIN_SHARE:.0%} -> {benign}"


def all_suspected(label: str, classes: Sequence[str]) -> str:
    """The slide's first answer: 'yes' (some leukemia class), 'no' (benign), '' (no label)."""
    if not label:
        return ""
    return "no" if label == benign_class(tuple(classes)) else "yes"


class SlideTally:
    """Accumulates one slide's images (streaming: a few numbers per class, whatever the number of images)."""

    def __init__(self, slide: str, classes: Sequence[str]) -> None:
        self.slide = slide
        self.classes = tuple(classes)
        self.n_images = 0
        self.n_error = 0
        self.all_ok = _Counts(len(classes))
        self.unflagged = _Counts(len(classes))
        self.flag_counts = dict.fromkeys(Flag, 0)
        self.n_flagged = 0

    def add(self, status: str, label_index: int | None, probs: Sequence[float] | None, flags: Sequence[str]) -> None:
        self.n_images += 1
        if status != "ok" or label_index is None or probs is None:
            self.n_error += 1
            return
        self.all_ok.add(label_index, probs)
        if flags:
            self.n_flagged += 1
            for flag in flags:
                self.flag_counts[Flag(flag)] += 1  # the journal keeps flags as text
        else:
            self.unflagged.add(label_index, probs)

    def label(self) -> tuple[str, str]:
        """(label, evidence)."""
        if self.all_ok.n == 0:
            return "", f"no ok image ({self.n_error} errors)"
        basis = self.unflagged if self.unflagged.n else self.all_ok
        if basis is self.unflagged:
            left_out = f", {self.n_flagged} flagged left out" if self.n_flagged else ""
            name = f"{basis.n} unflagged ok images{left_out}"
        else:
            name = f"all {basis.n} ok images (every one is flagged)"
        means = [basis.mean(i) or 0.0 for i in range(len(self.classes))]
        label, reason = slide_label(self.classes, basis.counts, means)
        counts = ", ".join(f"{c} {k}" for c, k in zip(self.classes, basis.counts, strict=True))
        return label, f"basis {name}: {counts}; {reason}"

    def record(self) -> SlideRecord:
        label, evidence = self.label()
        return SlideRecord(
            slide=self.slide,
            n_images=self.n_images,
            n_ok=self.all_ok.n,
            n_error=self.n_error,
            label=label,
            all_suspected=all_suspected(label, self.classes),
            counts=tuple(self.all_ok.counts),
            mean_probs=tuple(self.all_ok.mean(i) for i in range(len(self.classes))),
            n_flagged=self.n_flagged,
            flag_counts=tuple(self.flag_counts[f] for f in Flag),
            evidence=evidence,
        )
