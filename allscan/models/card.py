"""The model card: everything a runtime needs to feed a model and read its outputs.

The card is the registry (timm's pretrained config, on disk): the ONNX file alone cannot say which colour order,
resize policy or class names it expects, so every consumer reads them from here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
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
        """Strict: an unknown or missing key is a :class:`CardError` (a typo must not silently become a default)."""
        top = _fields(data, cls, "")
        inp = _fields(top.pop("input", {}), InputSpec, "input.")
        for key in ("mean", "std", "mask_fill"):
            if key in inp:
                inp[key] = tuple(inp[key])
        flags = _fields(top.pop("flags", {}), FlagThresholds, "flags.")
        top["classes"] = tuple(top["classes"])
        if "outputs" in top:
            top["outputs"] = tuple(top["outputs"])
        return cls(input=InputSpec(**inp), flags=FlagThresholds(**flags), **top)


class CardError(ValueError):
    """A card.json that cannot be read as written; the message is one line naming the file when read from one."""


def _fields(data: Any, kind: type, prefix: str) -> dict[str, Any]:
    """``data`` checked against dataclass ``kind``'s fields: no unknown key, every key without a default present."""
    if not isinstance(data, dict):
        raise CardError(f"{prefix.rstrip('.') or 'the card'} must be a JSON object, not {type(data).__name__}")
    fields = dataclasses.fields(kind)
    unknown = sorted(set(data) - {f.name for f in fields})
    if unknown:
        raise CardError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(prefix + k for k in unknown)}")
    required = [
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in data
    ]
    if required:
        keys = ", ".join(prefix + k for k in required)
        raise CardError(f"missing required key{'s' if len(required) > 1 else ''} {keys}")
    return dict(data)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_card(path: Path) -> ModelCard:
    """The card in ``path``; any problem is a one-line :class:`CardError` naming the file."""
    try:
        return ModelCard.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:  # JSONDecodeError, CardError and InputSpec's checks are ValueErrors
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CardError(f"{path}: unreadable model card: {cause}") from None


def write_card(card: ModelCard, path: Path) -> None:
    """Write the card whole or not at all (a reader never sees half a card): a temporary file, then a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(card.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
