"""The shortcut audit of ``allscan evaluate``: does the model read the cells, or the stain?

- ``colour_baseline``: a logistic regression on 30 global colour statistics per image (BGR and HSV mean, std and
  5/50/95th percentiles; no cells, no shapes), fitted on the model's own training split and scored on the evaluated
  images. Where it scores near the model, accuracy alone proves nothing about morphology.
- ``swap``: the evaluated images recoloured (Reinhard transfer, :func:`allscan.pipeline.colour.reinhard_transfer`)
  with the LAB statistics of a seeded donor of another class, then run through the same inference path. A model
  that reads the stain follows the donor's class; ``swap_gap`` is the plain minus the swapped macro-F1.
- ``binary``: leukemia (any ALL class) against Benign: sensitivity, specificity, ROC AUC (score 1 - p(Benign)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from allscan.evaluation.metrics import probabilities
from allscan.io.images import ImageReadError, decode_image
from allscan.io.records import ImageRecord
from allscan.pipeline.colour import colour_statistics, reinhard_transfer

PERCENTILES = (5, 50, 95)


def colour_features(bgr: np.ndarray) -> np.ndarray:
    """float64 [30]: per channel of BGR and HSV, the mean, std and 5/50/95th percentiles (no spatial information)."""
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    features = []
    for image in (bgr, hsv):
        flat = image.reshape(-1, 3).astype(np.float64)
        features += [flat.mean(0), flat.std(0), *np.percentile(flat, PERCENTILES, axis=0)]
    return np.concatenate(features)


def _features(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Features of readable images and a mask of which paths were read."""
    rows, ok = [], []
    for path in paths:
        try:
            rows.append(colour_features(decode_image(path).bgr))
            ok.append(True)
        except ImageReadError:
            ok.append(False)
    return (np.stack(rows) if rows else np.zeros((0, 30))), np.asarray(ok, dtype=bool)


def colour_baseline(
    train_paths: Sequence[Path],
    train_labels: Sequence[int],
    eval_paths: Sequence[Path],
    eval_labels: Sequence[int],
    n_classes: int,
) -> dict:
    """Fit the colour-only classifier on the training images, score it on the evaluated ones."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, ok_train = _features(train_paths)
    y_train = np.asarray(train_labels)[ok_train]
    x_eval, ok_eval = _features(eval_paths)
    y_eval = np.asarray(eval_labels)[ok_eval]
    if len(np.unique(y_train)) < 2 or len(y_eval) == 0:
        return {"skipped": "fewer than two training classes or no readable evaluated image"}
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(x_train, y_train)
    pred = clf.predict(x_eval)
    labels = sorted(set(y_eval.tolist()))  # macro over the classes present, as classification_metrics does
    return {
        "features": "BGR and HSV mean, std, 5/50/95th percentiles (30 numbers, no cells)",
        "n_train": int(len(y_train)),
        "n_images": int(len(y_eval)),
        "accuracy": float(accuracy_score(y_eval, pred)),
        "macro_f1": float(f1_score(y_eval, pred, labels=labels, average="macro", zero_division=0)),
    }


def other_class_donors(
    labels: Sequence[int] | np.ndarray,
    donor_labels: Sequence[int] | np.ndarray,
    usable: Sequence[bool] | np.ndarray,
    seed: int = 0,
) -> np.ndarray:
    """For each item, a seeded random usable donor whose label differs (-1 where there is none): the swap test's
    donor choice, shared by evaluation and training's per-epoch swap check."""
    rng = np.random.default_rng(seed)
    donor_labels_arr, usable_arr = np.asarray(donor_labels), np.asarray(usable, dtype=bool)
    out = np.full(len(labels), -1)
    for i, label in enumerate(labels):
        candidates = np.flatnonzero(usable_arr & (donor_labels_arr != label))
        if len(candidates):
            out[i] = int(candidates[rng.integers(len(candidates))])
    return out


def write_swapped(
    paths: Sequence[Path], labels: Sequence[int], relative: Sequence[str], out_dir: Path, seed: int = 0
) -> dict[str, int]:
    """Write every image recoloured with the stain of a seeded random image of another class, as lossless PNG
    under ``out_dir`` (same relative path, ``.png``). Returns relative output path -> donor index."""
    labels_arr = np.asarray(labels)
    stats: list[np.ndarray | None] = []
    images: list[np.ndarray | None] = []
    for path in paths:
        try:
            bgr = decode_image(path).bgr
            images.append(bgr)
            stats.append(colour_statistics(bgr))
        except ImageReadError:
            images.append(None)
            stats.append(None)
    readable = np.array([s is not None for s in stats])
    # Unreadable images draw no donor: the same draws as when only readable images are listed.
    chosen = other_class_donors(labels_arr[readable], labels_arr, readable, seed)
    picks = np.full(len(images), -1)
    picks[readable] = chosen
    donors: dict[str, int] = {}
    for i, (image, rel) in enumerate(zip(images, relative, strict=True)):
        donor = int(picks[i])
        if image is None or donor < 0:
            continue
        target = Path(out_dir) / Path(rel).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), reinhard_transfer(image, stats[donor]))  # type: ignore[arg-type]
        donors[target.relative_to(out_dir).as_posix()] = donor
    return donors


def binary_metrics(rows: Sequence[ImageRecord], classes: Sequence[str], truth: Sequence[str], benign: str) -> dict:
    """ALL (any leukemia class) vs. Benign: sensitivity, specificity and ROC AUC of 1 - p(Benign)."""
    from sklearn.metrics import roc_auc_score

    is_all = np.array([t != benign for t in truth])
    called_all = np.array([r.ok and r.label != benign for r in rows])
    ok = np.array([r.ok for r in rows])
    p_benign = probabilities(rows, len(classes))[:, list(classes).index(benign)] if rows else np.zeros(0)
    auc = math.nan
    usable = ok & np.isfinite(p_benign)
    if usable.any() and len(np.unique(is_all[usable])) == 2:
        auc = float(roc_auc_score(is_all[usable], 1.0 - p_benign[usable]))
    return {
        "positive": "any leukemia class (" + ", ".join(c for c in classes if c != benign) + ")",
        "n_all": int(is_all.sum()),
        "n_benign": int((~is_all).sum()),
        "sensitivity": float(called_all[is_all].mean()) if is_all.any() else math.nan,
        "specificity": float((~called_all[~is_all] & ok[~is_all]).mean()) if (~is_all).any() else math.nan,
        "roc_auc": auc,
    }
