"""Store evaluation metrics in a model's card (the card's sha256 covers model.onnx, not the card itself)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from allscan.models.card import write_card
from allscan.models.store import load_model

KEEP = (
    "n_images",
    "accuracy",
    "macro_f1",
    "roc_auc_ovr",
    "flag_rate",
    "accuracy_unflagged",
    "cell_focus",
    "per_class",
    "confusion_matrix",
    "images_per_s",
    "backend",
    "binary",
    "colour_baseline",
    "swap",
)


def store_metrics(model_name: str, split: str, metrics: dict, into: str | None = None) -> str:
    """Store ``metrics`` under ``<split mode>_<split>`` in the card of ``model_name``, or of ``into``: the same
    recipe trained on another split (the tail split's model measures the shipped blocked-split model's recipe
    prospectively). Returns the key."""
    model = load_model(model_name)
    target = model
    if into:  # a name in the store, or a model folder elsewhere (engines/vit while $ALLSCAN_ENGINES points away)
        folder = Path(into)
        target = load_model(folder.name, folder.parent) if folder.is_dir() else load_model(into)
    entry = {k: metrics[k] for k in KEEP if k in metrics}
    if into:
        entry["measured_on"] = f"{model.card.model_id}: the same recipe trained on this split"
    if "foreign" in metrics:
        entry["foreign"] = {k: v for k, v in metrics["foreign"].items() if k != "dir"}
        entry["foreign"]["dataset"] = "bccd (another lab, no leukemia)"
    key = f"{model.card.training.get('split', {}).get('mode', 'blocked')}_{split}"
    updated = dataclasses.replace(target.card, metrics={**target.card.metrics, key: json.loads(json.dumps(entry))})
    write_card(updated, target.folder / "card.json")
    return key
