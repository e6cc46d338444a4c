"""confusion_matrix.png and roc.png (matplotlib without a display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from allscan.io.records import ImageRecord


def write_plots(rows: Sequence[ImageRecord], classes: Sequence[str], truth: Sequence[str], metrics: dict, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

    cm = np.array(metrics["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=120)
    ConfusionMatrixDisplay(cm, display_labels=list(classes)).plot(ax=ax, cmap="viridis", colorbar=False)
    ax.set_title(f"accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}")
    fig.tight_layout()
    fig.savefig(out / "confusion_matrix.png")
    plt.close(fig)

    ok = [i for i, r in enumerate(rows) if r.ok and r.probs is not None]
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=120)
    for k, c in enumerate(classes):
        y = np.array([truth[i] == c for i in ok])
        score = np.array([rows[i].probs[k] for i in ok])  # type: ignore[index]
        if 0 < y.sum() < len(y):
            RocCurveDisplay.from_predictions(y, score, name=c, ax=ax, plot_chance_level=(k == 0))
    ax.set_title("one-vs-rest ROC")
    fig.tight_layout()
    fig.savefig(out / "roc.png")
    plt.close(fig)
