"""Class-activation heatmaps: the predicted class's map brought back onto the image, scored and drawn.

The same upsampled map feeds two things: ``cell_focus`` (the share of the map's energy that lies on segmented
white cells: the brief's shortcut check, low when a model looks at background or stain) and the PNG a
hematologist opens to see *why* an image was called what it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from allscan.io.atomic import write_bytes_atomic

COLORMAP = cv2.COLORMAP_VIRIDIS  # perceptually uniform, readable by colour-blind viewers
ALPHA = 0.45  # weight of the colour map over the image
OUTLINE_BGR = (255, 255, 255)
STRONG_BGR = (40, 40, 255)  # red: absent from viridis, so the cells that carry the call stand out
STRONG_MAX = 3
STRONG_SHARE = 0.5
# Huffman-only deflate: a blended colour map has few long repeats for LZ77 to find, so this is about twice as
# fast as level 3 and ~10 % smaller on all-pbs heatmaps; still lossless. Where OpenCV exposes the row filter (5.0
# here), the "up" filter alone instead of libpng's per-row trial of all five halves the encoding CPU again (2.9 ->
# 1.5 ms for a 224 px heatmap, measured; pixels identical) for files ~10 % larger.
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]
if hasattr(cv2, "IMWRITE_PNG_FILTER"):
    PNG_PARAMS += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]


def class_map(
    cam: np.ndarray,
    class_index: int,
    shape: tuple[int, int],
    boxes: Sequence[tuple[int, int, int, int]] | None = None,
) -> np.ndarray:
    """The ReLU'd map of ``class_index`` at image resolution, min-max scaled to [0, 1] (float32 ``shape``).

    ``cam`` is ``[k, C, h, w]``: one row for a whole-field model input (stretched to the network's square, so
    the map is stretched back over the whole image), or one row per cell crop with its ``boxes`` (x0, y0, x1,
    y1), each drawn back into place; where crops overlap the larger value wins.
    """
    height, width = shape
    out = np.zeros((height, width), dtype=np.float32)
    rows = np.maximum(np.asarray(cam[:, class_index], dtype=np.float32), 0.0)
    if boxes is None:
        out = cv2.resize(rows[0], (width, height), interpolation=cv2.INTER_LINEAR)
    else:
        for row, (x0, y0, x1, y1) in zip(rows, boxes, strict=True):
            if x1 > x0 and y1 > y0:
                patch = cv2.resize(row, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
                np.maximum(out[y0:y1, x0:x1], patch, out=out[y0:y1, x0:x1])
    # Min-max scaling after the ReLU, as Grad-CAM visualisations do (pytorch-grad-cam's scale_cam_image): a map's
    # constant part (the head's bias, evidence spread evenly over a blank background) says nothing about *where*.
    if not out.size:
        return out
    low, peak = float(out.min()), float(out.max())
    return (out - low) / (peak - low) if peak > low else np.zeros_like(out)


def cell_focus(heat: np.ndarray, mask: np.ndarray) -> float | None:
    """Share of the map's energy inside the white-cell mask; None when there is no cell or no energy."""
    if not mask.any():
        return None
    total = float(heat.sum(dtype=np.float64))
    if total <= 0:
        return None
    return float(heat[mask > 0].sum(dtype=np.float64)) / total


def cell_evidence(heat: np.ndarray, labels: np.ndarray, n_cells: int) -> np.ndarray:
    """float64 [n_cells]: each cell's share of the called class's evidence (its pixels' part of the map's total).

    The cells' shares add up to ``cell_focus``; what is left lies outside the segmented cells.
    """
    total = float(heat.sum(dtype=np.float64))
    if n_cells == 0 or total <= 0:
        return np.zeros(n_cells)
    sums = np.bincount(labels.ravel(), weights=heat.ravel().astype(np.float64), minlength=n_cells + 1)
    return sums[1 : n_cells + 1] / total


def strongest_cells(labels: np.ndarray, evidence: np.ndarray) -> np.ndarray | None:
    """uint8 mask of the cells that carry the call: the top ``STRONG_MAX`` by evidence, each with at least half
    the strongest cell's share; None when no cell carries any."""
    if not len(evidence) or float(evidence.max()) <= 0:
        return None
    order = np.argsort(-evidence, kind="stable")[:STRONG_MAX]
    keep = [int(i) + 1 for i in order if evidence[i] >= STRONG_SHARE * evidence[order[0]]]
    return np.isin(labels, keep).astype(np.uint8)


# The colour map as a lookup table: cv2.LUT on the grey map in three channels gives applyColorMap's pixels at a
# third of its cost (it converts and looks up in a slower path).
_COLORMAP_LUT = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), COLORMAP).reshape(1, 256, 3)


def heat_to_grey(heat: np.ndarray) -> np.ndarray:
    """uint8: ``clip(heat * 255 + 0.5, 0, 255)`` truncated, computed in one float32 buffer in place."""
    scaled = np.multiply(heat, np.float32(255.0), dtype=np.float32)
    scaled += np.float32(0.5)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def colour_map(heat: np.ndarray) -> np.ndarray:
    """8-bit BGR: ``heat`` (in [0, 1]) through the viridis colour map (applyColorMap's pixels, exactly)."""
    grey = heat_to_grey(heat)
    return cv2.LUT(cv2.merge([grey, grey, grey]), _COLORMAP_LUT)


def render(bgr: np.ndarray, heat: np.ndarray, mask: np.ndarray, strong: np.ndarray | None = None) -> np.ndarray:
    """The image with the colour-mapped heat blended over it, each segmented cell outlined in white and the cells
    that carry the call (``strong``, see :func:`strongest_cells`) outlined thicker in red."""
    colour = colour_map(heat)
    blended = cv2.addWeighted(bgr, 1.0 - ALPHA, colour, ALPHA, 0.0)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(1, round(min(bgr.shape[:2]) / 224))
    cv2.drawContours(blended, contours, -1, OUTLINE_BGR, thickness, lineType=cv2.LINE_AA)
    if strong is not None and strong.any():
        contours, _ = cv2.findContours(strong, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(blended, contours, -1, STRONG_BGR, 2 * thickness, lineType=cv2.LINE_AA)
    return blended


def write_png(path: Path, image: np.ndarray) -> None:
    """Encode and publish atomically (a killed run never leaves half a PNG)."""
    ok, encoded = cv2.imencode(".png", image, PNG_PARAMS)
    if not ok:
        raise OSError(f"cannot encode PNG for {path}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(Path(path), encoded.tobytes())
