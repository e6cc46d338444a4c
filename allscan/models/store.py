"""The model store: ``engines/<name>/{model.onnx, card.json, split.json, trt/}``.

The store's root is ``$ALLSCAN_ENGINES`` when set; else the shipped models: ``allscan/engines/`` inside an installed
wheel (package data, see pyproject.toml), or the ``engines/`` folder of the source checkout for an editable install.
A model is usable when its card exists and its ONNX file's sha256 matches the card (a half-copied or edited model
must not silently produce numbers); :func:`save_model` writes the card last, so a model appears whole or not at all.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from allscan.models.card import CardError, ModelCard, read_card, sha256_file, write_card

DEFAULT_MODEL = "vit"


class ModelStoreError(Exception):
    """A model is missing, incomplete or does not match its card; the message is one line for the user."""


PACKAGE = Path(__file__).resolve().parents[1]  # the installed allscan/ folder


def store_root() -> Path:
    """``$ALLSCAN_ENGINES``, else the models shipped in the wheel, else the source checkout's ``engines/``."""
    env = os.environ.get("ALLSCAN_ENGINES")
    if env:
        return Path(env)
    packaged = PACKAGE / "engines"  # a wheel maps the checkout's engines/ here (pyproject.toml, package-dir)
    if packaged.is_dir():
        return packaged
    return PACKAGE.parent / "engines"


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
    except CardError as exc:  # already one line naming the file
        raise ModelStoreError(str(exc)) from None
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


def model_folder(name: str, root: Path | None = None) -> Path:
    """``root/name``, refusing names that would leave the store or hide the model (``..``, ``a/b``, ``.x``)."""
    if not name or name.startswith(".") or Path(name).name != name or "\\" in name:
        raise ModelStoreError(f"invalid model name {name!r}: use a plain folder name (letters, digits, - and _)")
    return (root or store_root()) / name


def save_model(card: ModelCard, root: Path | None = None, onnx: Path | None = None) -> StoredModel:
    """Put ``card`` (and ``onnx``, when it is not already in place) into the store as ``root/card.name``.

    The card's ``onnx_sha256`` is recomputed from the file in the store, and card.json is written last and
    atomically: until then the folder holds no card (a new model) or the old card, whose hash no longer matches
    (a retrained one), so no reader ever loads a half-written model.
    """
    folder = model_folder(card.name, root)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / card.onnx_file
    if onnx is not None and Path(onnx).resolve() != target.resolve():
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(onnx, tmp)
        os.replace(tmp, target)
    if not target.is_file():
        raise ModelStoreError(f"{target}: model file missing; nothing to store for {card.name!r}")
    card = dataclasses.replace(card, onnx_sha256=sha256_file(target))
    write_card(card, folder / "card.json")
    return StoredModel(card=card, folder=folder)
