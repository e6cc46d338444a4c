"""The model card: everything a runtime needs to feed a model and read its outputs.

The card is the registry (timm's pretrained config, on disk): the ONNX file alone cannot say which colour order,
resize policy or class names it expects, so every consumer reads them from here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INPUT_MODES = ("full", "masked", "cells")
COLOUR_MODES = ("rgb", "lightness")  # input.colour; applied by allscan.pipeline.colour.apply_colour


@dataclass(frozen=True)
class InputSpec:
    """How an image becomes the network's input tensor."""

    size: int = 224
    colour_order: str = "RGB"
    resize: str = "stretch"  # 'stretch' (cv2.INTER_AREA to size x size) or 'letterbox'
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    mode: str = "full"  # one of INPUT_MODES
    mask_fill: tuple[int, int, int] = (0, 0, 0)  # RGB 0-255 value written outside the cells in 'masked' mode
    cell_context: float = 1.5  # 'cells' mode: crop side = context x the cell's longer box side
    mask_dilate_frac: float = 0.02  # 'masked' mode: grow the cell mask by this fraction of the image's short side
    colour: str = "rgb"  # 'rgb' (the camera's colours) or 'lightness' (per-image z-scored LAB L, grey); see colour.py

    def __post_init__(self) -> None:
        if self.mode not in INPUT_MODES:
            raise ValueError(f"input.mode must be one of {INPUT_MODES}, not {self.mode!r}")
        if self.colour not in COLOUR_MODES:
            raise ValueError(f"input.colour must be one of {COLOUR_MODES}, not {self.colour!r}")
        if self.colour_order not in ("RGB", "BGR"):
            raise ValueError(f"input.colour_order must be RGB or BGR, not {self.colour_order!r}")


@dataclass(frozen=True)
class FlagThresholds:
    """Scores above/below which an image is flagged rather than trusted."""

    ood: float | None = None  # flag out_of_distribution when the graph's `ood` output exceeds this
    low_confidence: float = 0.6  # flag low_confidence when the top probability is below this
    # Colour-free models: Gaussian of the raw images' colour statistics (means [K,6], precision [6,6], scale); the
    # pipeline's colour distance joins the graph's `ood` by maximum. None: the graph measures colour itself.
    colour: dict[str, Any] | None = None


@dataclass(frozen=True)
class ModelCard:
    name: str
    architecture: str
    classes: tuple[str, ...]
    input: InputSpec = field(default_factory=InputSpec)
    outputs: tuple[str, ...] = ("logits", "cam")
    heatmap_method: str = "cam"
    temperature: float = 1.0
    flags: FlagThresholds = field(default_factory=FlagThresholds)
    class_labels: dict[str, str] = field(default_factory=dict)  # short name -> human label
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    onnx_sha256: str = ""
    onnx_file: str = "model.onnx"
    created: str = ""
    version: int = 1

    @property
    def model_id(self) -> str:
        """Identity of the model for journals and engine sidecars: name plus the ONNX file's hash prefix."""
        return f"{self.name}@{self.onnx_sha256[:12]}" if self.onnx_sha256 else self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        data = dict(data)
        inp = dict(data.pop("input", {}) or {})
        for key in ("mean", "std", "mask_fill"):
            if key in inp:
                inp[key] = tuple(inp[key])
        flags = data.pop("flags", {}) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        extra = {k: v for k, v in data.items() if k not in known}
        kept = {k: v for k, v in data.items() if k in known}
        kept["classes"] = tuple(kept.get("classes", ()))
        kept["outputs"] = tuple(kept.get("outputs", ("logits", "cam")))
        if extra:
            kept.setdefault("training", {})
            kept["training"] = {**kept["training"], "_extra": extra}
        return cls(input=InputSpec(**inp), flags=FlagThresholds(**flags), **kept)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_card(path: Path) -> ModelCard:
    return ModelCard.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def write_card(card: ModelCard, path: Path) -> None:
    Path(path).write_text(json.dumps(card.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
