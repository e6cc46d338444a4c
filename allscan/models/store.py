"""The model store: ``engines/<name>/{model.onnx, card.json, trt/}``.

The store's root is ``$ALLSCAN_ENGINES`` when set, else the ``engines/`` folder of the source checkout. A model is
usable when its card exists and its ONNX file's sha256 matches the card (a half-copied or edited model must not
silently produce numbers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from allscan.models.card import ModelCard, read_card, sha256_file

DEFAULT_MODEL = "vit"


class ModelStoreError(Exception):
    """A model is missing, incomplete or does not match its card; the message is one line for the user."""


def store_root() -> Path:
    env = os.environ.get("ALLSCAN_ENGINES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "engines"


@dataclass(frozen=True)
class StoredModel:
    """A model in the store, with its card and file paths."""

    card: ModelCard
    folder: Path

    @property
    def onnx_path(self) -> Path:
        return self.folder / self.card.onnx_file

    @property
    def trt_dir(self) -> Path:
        return self.folder / "trt"


def list_models(root: Path | None = None) -> list[str]:
    root = root or store_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "card.json").is_file() and not p.name.startswith("."))


def load_model(name: str, root: Path | None = None, verify_hash: bool = True) -> StoredModel:
    root = root or store_root()
    folder = root / name
    card_path = folder / "card.json"
    if not card_path.is_file():
        known = ", ".join(list_models(root)) or "none"
        raise ModelStoreError(f"unknown model {name!r} in {root} (available: {known})")
    try:
        card = read_card(card_path)
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelStoreError(f"{card_path}: unreadable model card: {exc}") from exc
    model = StoredModel(card=card, folder=folder)
    if not model.onnx_path.is_file():
        raise ModelStoreError(f"{model.onnx_path}: model file missing")
    if verify_hash and card.onnx_sha256:
        actual = sha256_file(model.onnx_path)
        if actual != card.onnx_sha256:
            raise ModelStoreError(
                f"{model.onnx_path}: sha256 {actual[:12]} does not match card.json ({card.onnx_sha256[:12]})"
            )
    return model
