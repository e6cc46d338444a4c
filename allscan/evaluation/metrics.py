"""Metrics of a labelled run from its images.csv records (scikit-learn does the arithmetic)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from allscan.io.records import ImageRecord


def probabilities(rows: Sequence[ImageRecord], n_classes: int) -> np.ndarray:
    """[N, C] probabilities as the table rounds them; NaN for an error row."""
    return np.array([r.probs if r.probs is not None else (math.nan,) * n_classes for r in rows], dtype=float)


def classification_metrics(rows: Sequence[ImageRecord], classes: Sequence[str], truth: Sequence[str]) -> dict:
    """Accuracy, macro-F1, per-class P/R/F1, one-vs-rest ROC AUC, confusion matrix, flag rate, cell focus.

    ``truth[i]`` is the class of ``rows[i]``; error rows count as wrong answers (a lab gets no label for them).
    """
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    index = {c: i for i, c in enumerate(classes)}
    y_true = np.array([index[t] for t in truth])
    ok = np.array([r.ok for r in rows], dtype=bool)
    y_pred = np.array([index.get(r.label, -1) for r in rows])
    probs = probabilities(rows, len(classes))
    flagged = np.array([bool(r.flags) for r in rows], dtype=bool)
    focus = np.array([math.nan if r.cell_focus is None else r.cell_focus for r in rows], dtype=float)
    labels = list(range(len(classes)))
    present = sorted(set(y_true.tolist()))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    auc = math.nan
    if ok.sum() and len(np.unique(y_true[ok])) == len(classes):
        scores = probs[ok] / probs[ok].sum(axis=1, keepdims=True)  # the CSV's rounding breaks the exact sum of 1
        if len(classes) == 2:
            auc = float(roc_auc_score(y_true[ok], scores[:, 1]))
        else:
            auc = float(roc_auc_score(y_true[ok], scores, multi_class="ovr", labels=labels))
    unflagged = ok & ~flagged
    result = {
        "n_images": int(len(rows)),
        "n_error": int((~ok).sum()),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # Macro over the classes present in the truth: a folder without Pro-B must not score 0 for "missing" Pro-B.
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        },
        "roc_auc_ovr": auc,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "confusion_matrix_labels": list(classes),
        "flag_rate": float(flagged[ok].mean()) if ok.any() else math.nan,
        "accuracy_unflagged": float((y_pred[unflagged] == y_true[unflagged]).mean()) if unflagged.any() else math.nan,
        "cell_focus": float(np.nanmean(focus)) if np.isfinite(focus).any() else math.nan,
    }
    return result


def foreign_metrics(rows: Sequence[ImageRecord], benign: str = "Benign") -> dict:
    """For unlabelled images of another lab (no leukemia expected): what share would a lab be misled by?"""
    ok = [r for r in rows if r.ok]
    n = max(len(ok), 1)
    called_benign = sum(r.label == benign for r in ok)
    flagged = sum(bool(r.flags) for r in ok)
    benign_or_flagged = sum(r.label == benign or bool(r.flags) for r in ok)
    leukemia_unflagged = sum(r.label != benign and not r.flags for r in ok)
    benign_unflagged = sum(r.label == benign and not r.flags for r in ok)
    reasons: dict[str, int] = {}
    for r in ok:
        for reason in r.flags:
            reasons[str(reason)] = reasons.get(str(reason), 0) + 1
    return {
        "n_images": len(rows),
        "n_ok": len(ok),
        "share_benign": called_benign / n,
        "share_flagged": flagged / n,
        "share_benign_or_flagged": benign_or_flagged / n,
        "share_leukemia_unflagged": leukemia_unflagged / n,
        "share_benign_unflagged": benign_unflagged / n,
        "flag_reasons": reasons,
        "label_counts": {label: sum(r.label == label for r in ok) for label in sorted({r.label for r in ok})},
    }
