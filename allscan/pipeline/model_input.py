"""What the network sees: the model card's input spec applied to a decoded image and its segmentation.

Training and inference both call :func:`model_inputs`, so what is trained is what runs.
"""

from __future__ import annotations

import cv2
import numpy as np

from allscan.models.card import InputSpec
from allscan.pipeline.colour import apply_colour, normalised_lightness
from allscan.pipeline.segment import Segmentation


def grow_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` dilated by a disc of radius ``pixels`` (training's evidence target grows cells the same way)."""
    if pixels <= 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(mask, kernel)


def masked_image(bgr: np.ndarray, seg: Segmentation, spec: InputSpec) -> np.ndarray:
    """The image with everything but the (slightly grown) white-cell mask replaced by ``spec.mask_fill``."""
    grow = int(round(spec.mask_dilate_frac * min(bgr.shape[:2])))
    keep = grow_mask(seg.mask, grow)
    out = np.empty_like(bgr)
    out[:] = np.array(spec.mask_fill[::-1], dtype=np.uint8)  # mask_fill is RGB, the image BGR
    cv2.copyTo(bgr, keep, out)  # the masked copy in C: boolean indexing was half of this function's time
    return out


def cell_boxes(seg: Segmentation, spec: InputSpec, shape: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Square crop boxes (x0, y0, x1, y1) centred on each cell, ``cell_context`` times its longer side."""
    height, width = shape
    boxes = []
    for cell in seg.cells:
        side = max(8, int(round(spec.cell_context * max(cell.width, cell.height))))
        cx, cy = cell.x + cell.width / 2, cell.y + cell.height / 2
        x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
        boxes.append((max(0, x0), max(0, y0), min(width, x0 + side), min(height, y0 + side)))
    return boxes


def resize_view(bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The view at the card's size (area averaging when shrinking); a view already that size is not touched."""
    if bgr.shape[0] == spec.size and bgr.shape[1] == spec.size:
        return bgr
    interp = cv2.INTER_AREA if min(bgr.shape[:2]) >= spec.size else cv2.INTER_LINEAR
    return cv2.resize(bgr, (spec.size, spec.size), interpolation=interp)


def normalise(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """8-bit BGR at the card's size -> float32 [3, size, size] in the card's colour order, mean and std."""
    resized = pixels
    if spec.colour_order == "RGB":
        resized = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
    x = resized.astype(np.float32) * (1.0 / 255.0)
    x -= np.asarray(spec.mean, dtype=np.float32)
    x /= np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def to_tensor(bgr: np.ndarray, spec: InputSpec, lab_image: np.ndarray | None = None) -> np.ndarray:
    """Resize to the card's size, apply the card's colour transform, reorder colours and normalise.

    Training calls :func:`resize_view`, augments, then :func:`apply_colour` and :func:`normalise` in the same order,
    so an unaugmented training view is exactly what inference feeds. A ``lightness`` view is one grey plane in
    three channels: it is normalised once per channel from the plane (the same float32 operations per value, so the
    same numbers, without building the 3-channel 8-bit image and transposing it). ``lab_image`` is
    ``colour.lab(bgr)`` when the caller has it; it is used only when ``bgr`` needs no resizing.
    """
    resized = resize_view(bgr, spec)
    if spec.colour != "lightness":
        return normalise(apply_colour(resized, spec.colour), spec)
    plane = normalised_lightness(resized, lab_image if resized is bgr else None).astype(np.float32) * (1.0 / 255.0)
    mean, std = np.asarray(spec.mean, dtype=np.float32), np.asarray(spec.std, dtype=np.float32)
    out = np.empty((3, *plane.shape), dtype=np.float32)
    for c in range(3):
        np.subtract(plane, mean[c], out=out[c])
        np.divide(out[c], std[c], out=out[c])
    return out


def model_view(bgr: np.ndarray, seg: Segmentation, spec: InputSpec) -> list[np.ndarray]:
    """The 8-bit BGR picture(s) the network gets for one image, before resizing (one per cell in 'cells' mode).

    An image without segmented cells falls back to the whole field in every mode, so it still gets a label (and
    the pipeline flags it ``no_cells``).
    """
    if spec.mode == "masked" and seg.cells:
        return [masked_image(bgr, seg, spec)]
    if spec.mode == "cells" and seg.cells:
        return [bgr[y0:y1, x0:x1] for x0, y0, x1, y1 in cell_boxes(seg, spec, bgr.shape[:2])]
    return [bgr]


def model_inputs(
    bgr: np.ndarray, seg: Segmentation, spec: InputSpec, lab_image: np.ndarray | None = None
) -> np.ndarray:
    """float32 [k, 3, size, size]: k = 1 for 'full' and 'masked', the number of cells for 'cells'.

    ``lab_image`` (``colour.lab(bgr)``, which the worker also needs for the colour statistics) is reused for a
    view that is the whole field at the card's size: the float LAB conversion is then done once per image."""
    views = model_view(bgr, seg, spec)
    return np.stack([to_tensor(view, spec, lab_image if view is bgr else None) for view in views])
