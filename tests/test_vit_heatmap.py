"""The shipped ViT's forward-only heatmap lands on what it looks at (issue 3, "Heatmaps in the graph").

A bright purple disc (a stained white cell's colour) on a blank input (the card's ``mask_fill`` everywhere
else, which is what a masked-mode model sees around a cell) must draw the predicted class's heatmap: the mean
heat inside the disc exceeds the mean outside, at several positions. Runs the shipped ONNX file through ONNX
Runtime with the card's own input spec and the pipeline's own heatmap rendering (ReLU, upsampling, scaling).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

import cv2  # noqa: E402

from allscan.io.heatmap import class_map  # noqa: E402
from allscan.models.store import StoredModel, load_model  # noqa: E402
from allscan.pipeline.model_input import to_tensor  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "engines"
PURPLE_BGR = (210, 60, 160)  # RGB (160, 60, 210): violet, like a Romanowsky-stained nucleus
POSITIONS = ((0.3, 0.3), (0.7, 0.35), (0.5, 0.5), (0.3, 0.72), (0.72, 0.7))  # blob centre (x, y) / side


def blob_heat(model: StoredModel, side: int = 448, radius_frac: float = 0.12) -> list[tuple[float, float]]:
    """(mean heat inside the blob, mean heat outside) of the predicted class, for each position."""
    spec = model.card.input
    session = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"])
    fill_bgr = tuple(int(v) for v in spec.mask_fill[::-1])
    results = []
    for fx, fy in POSITIONS:
        bgr = np.empty((side, side, 3), np.uint8)
        bgr[:] = fill_bgr
        centre = (int(fx * side), int(fy * side))
        cv2.circle(bgr, centre, int(radius_frac * side), PURPLE_BGR, -1, lineType=cv2.LINE_AA)
        inside = np.zeros((side, side), np.uint8)
        cv2.circle(inside, centre, int(radius_frac * side), 1, -1)
        logits, cam = session.run(["logits", "cam"], {"image": to_tensor(bgr, spec)[None]})
        heat = class_map(cam, int(np.argmax(logits[0])), (side, side))
        results.append((float(heat[inside > 0].mean()), float(heat[inside == 0].mean())))
    return results


def test_shipped_vit_heatmap_peaks_on_blob() -> None:
    if not (SHIPPED / "vit" / "card.json").is_file():
        pytest.skip("engines/vit is not in the store yet (trained by issue 3)")
    model = load_model("vit", root=SHIPPED)
    for (fx, fy), (inside, outside) in zip(POSITIONS, blob_heat(model), strict=True):
        assert inside > outside, f"blob at ({fx}, {fy}): mean heat inside {inside:.3f} <= outside {outside:.3f}"
