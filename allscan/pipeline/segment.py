"""HSV segmentation of white blood cells (the purple/blue/magenta nucleated cells).

Why HSV: Romanowsky stains colour nuclei and blast cytoplasm violet-blue with high saturation, while red cells are
pale (low saturation) or salmon-red (a hue outside the band) and the background is near white. Thresholds adapt to
each image: Otsu picks the saturation cut among the pixels inside the hue band, so a paler or darker stain moves the
cut with it; a floor keeps an image without any white cell from being split at noise level. Touching cells are
split by a distance transform and watershed. Every size is relative to the image, so a 224 px crop and a 640 px
field are treated alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class SegmentParams:
    """Every knob of the segmentation, with the reason for its default.

    Hues are OpenCV's 0-179 scale (degrees / 2). Fractions are of the image's area or of its shorter side.
    """

    hue_low: int = 118  # blue-violet; red cells tinted blue by the stain sit at 105-112 and stay out
    hue_high: int = 178  # magenta: strongly eosin-tinted blasts; salmon red cells (hue < 12 or > 172) stay out
    min_purple_excess: int = 1  # min(R, B) - G floor: stain absorbs green; blue-grey and salmon red cells do not
    min_saturation: int = 40  # floor of the adaptive cut: faint tint (pale red cells, background) is not stain
    max_saturation_cut: int = 110  # ceiling, so one very dark cell cannot push the cut above paler ones
    open_frac: float = 0.012  # opening kernel (removes platelets, specks), fraction of the short side
    close_frac: float = 0.02  # closing kernel (joins a lobed nucleus), fraction of the short side
    min_area_frac: float = 0.0015  # smaller components are platelets or debris
    max_area_frac: float = 0.5  # larger components are a stain wash, not a cell
    split_touching: bool = True  # distance transform + watershed between touching cells
    peak_frac: float = 0.5  # watershed markers: distance >= this x the component's maximum distance


@dataclass(frozen=True)
class Cell:
    """One segmented white cell and its measurements (the columns of cells.csv after slide/image)."""

    cell_id: int
    x: int
    y: int
    width: int
    height: int
    area_px: int
    perimeter: float
    circularity: float
    equivalent_diameter: float
    mean_h: float
    mean_s: float
    mean_v: float
    nucleus_share: float  # share of the bounding box covered by the cell's mask
    centroid_x: float
    centroid_y: float


CELL_COLUMNS = tuple(Cell.__dataclass_fields__)


@dataclass
class Segmentation:
    """Label image (0 = background, k = cell k) and the cells' measurements."""

    labels: np.ndarray  # int32, same height and width as the image
    cells: list[Cell]
    stain_cut: float

    @property
    def mask(self) -> np.ndarray:
        return (self.labels > 0).astype(np.uint8)

    @property
    def area_fraction(self) -> float:
        return float((self.labels > 0).mean()) if self.labels.size else 0.0


def _odd(n: float) -> int:
    k = max(1, int(round(n)))
    return k if k % 2 == 1 else k + 1


def purple_excess(bgr: np.ndarray) -> np.ndarray:
    """min(R, B) - G per pixel: high for violet/magenta stained cells, near zero or negative for red cells."""
    b, g, r = (bgr[..., i].astype(np.int16) for i in range(3))
    return np.minimum(r, b) - g


def stain_cut(bgr: np.ndarray, hsv: np.ndarray, params: SegmentParams) -> tuple[np.ndarray, float]:
    """Candidate nucleated-cell pixels and the adaptive saturation threshold used.

    The band keeps violet-to-magenta pixels that absorb green (stain), which excludes blue-grey and salmon red
    cells; inside it Otsu splits saturation into stained cells and faint tint, clamped so that a field without
    white cells is not split at noise level and one very dark cell cannot hide paler ones.
    """
    h, s = cv2.extractChannel(hsv, 0), cv2.extractChannel(hsv, 1)
    in_hue = cv2.inRange(h, params.hue_low, params.hue_high) > 0  # h >= low & h <= high, in one pass
    inside = in_hue & _absorbs_green(bgr, params.min_purple_excess)
    values = s[inside]
    if values.size < 16:
        return np.zeros(h.shape, dtype=np.uint8), float(params.min_saturation)
    cut, _ = cv2.threshold(values.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    cut = float(min(max(cut, params.min_saturation), params.max_saturation_cut))
    return (inside & (s > cut)).astype(np.uint8), cut


def _absorbs_green(bgr: np.ndarray, floor: int) -> np.ndarray:
    """bool: ``purple_excess(bgr) >= floor``, in 8-bit arithmetic where that is exact (a saturating
    difference min(R, B) - G is >= a positive floor exactly when the signed one is)."""
    if floor < 1:
        return purple_excess(bgr) >= floor
    b, g, r = cv2.split(bgr)
    excess = np.asarray(cv2.subtract(cv2.min(r, b), g))  # saturates at 0 where G exceeds min(R, B)
    return excess >= floor


def _clean(mask: np.ndarray, params: SegmentParams) -> np.ndarray:
    short = min(mask.shape[:2])
    k_open = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (_odd(short * params.open_frac),) * 2)
    k_close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (_odd(short * params.close_frac),) * 2)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, k_open)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, k_close)
    # Fill holes: pale nucleoli or cytoplasm inside a cell's outline belong to the cell.
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled


def _run_starts(sorted_ids: np.ndarray) -> np.ndarray:
    """Indices where a run of equal values begins in a sorted, non-empty array (the first is 0)."""
    change = np.empty(sorted_ids.size, dtype=bool)
    change[0] = True
    np.not_equal(sorted_ids[1:], sorted_ids[:-1], out=change[1:])
    return np.flatnonzero(change)


def _component_max(comp: np.ndarray, dist: np.ndarray, n: int) -> np.ndarray:
    """float32 [n]: each component's largest distance (0 for the background), from its own pixels only, sorted
    once and reduced per run: the same maxima as ``np.maximum.at`` over the whole image at a fraction of its cost."""
    dmax = np.zeros(n, dtype=np.float32)
    inside = np.flatnonzero(comp)
    if inside.size:
        ids = comp.ravel()[inside]
        order = np.argsort(ids, kind="stable")
        ids, values = ids[order], dist.ravel()[inside][order]
        starts = _run_starts(ids)
        dmax[ids[starts]] = np.maximum.reduceat(values, starts)
    return dmax


def _split(mask: np.ndarray, bgr: np.ndarray, params: SegmentParams) -> np.ndarray:
    """Label image with touching cells separated by watershed on the distance transform."""
    if not params.split_touching:
        return cv2.connectedComponents(mask, connectivity=8)[1].astype(np.int32)
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    n, comp = cv2.connectedComponents(mask, connectivity=8)
    # Each component's peak distance in one pass over the image (not one full-image mask per component), then
    # every pixel compared with its own component's threshold, rounded to float32 as the comparison always was.
    dmax = _component_max(comp, dist, n)
    threshold = (params.peak_frac * dmax.astype(np.float64)).astype(np.float32)
    threshold[0] = np.inf  # the background (label 0) is never a peak
    peaks = (dist >= threshold[comp]).view(np.uint8)  # bool as 0/1 bytes
    _, markers = cv2.connectedComponents(peaks, connectivity=8)  # int32; 0 wherever peaks is 0
    # Markers: k + 1 on peak k, 0 (unknown, to flood) on the rest of the mask, 1 (sure background) elsewhere;
    # mask and peaks are 0/1, so this is markers + peaks + (mask == 0) summed in place.
    markers += peaks
    markers += 1 - mask
    cv2.watershed(np.ascontiguousarray(bgr), markers)
    markers -= 1
    np.maximum(markers, 0, out=markers)  # watershed lines (-1 - 1) and the background (1 - 1) become 0
    markers *= mask  # line pixels the flood assigned outside the mask
    return markers


def _label_boxes(labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """For each label present (ascending, at least one): id, pixel count, box (y0, y1, x0, x1 inclusive),
    and the sums of its pixels' x and y, all in one sorted pass instead of one full-image mask per label."""
    ys, xs = np.nonzero(labels)
    values = labels[ys, xs]
    order = np.argsort(values, kind="stable")
    values, ys, xs = values[order], ys[order], xs[order]
    starts = _run_starts(values)
    return (
        values[starts],
        np.diff(np.append(starts, values.size)),
        np.minimum.reduceat(ys, starts),
        np.maximum.reduceat(ys, starts),
        np.minimum.reduceat(xs, starts),
        np.maximum.reduceat(xs, starts),
        np.add.reduceat(xs.astype(np.int64), starts),
        np.add.reduceat(ys.astype(np.int64), starts),
    )


def _measure(labels: np.ndarray, hsv: np.ndarray, params: SegmentParams) -> tuple[np.ndarray, list[Cell]]:
    """Keep cells of plausible size and measure them, each within its own box (one pass finds all boxes)."""
    height, width = labels.shape
    area_total = height * width
    min_area = params.min_area_frac * area_total
    max_area = params.max_area_frac * area_total
    out = np.zeros_like(labels)
    cells: list[Cell] = []
    if not labels.any():
        return out, cells
    ids, counts, y0s, y1s, x0s, x1s, xsums, ysums = _label_boxes(labels)
    for j, k in enumerate(ids):
        area = int(counts[j])
        if area < min_area or area > max_area:
            continue
        # The box plus a 1-pixel margin, with the contour offset back: traced exactly as on the whole image.
        cy0, cy1 = max(0, int(y0s[j]) - 1), min(height, int(y1s[j]) + 2)
        cx0, cx1 = max(0, int(x0s[j]) - 1), min(width, int(x1s[j]) + 2)
        region = (labels[cy0:cy1, cx0:cx1] == k).astype(np.uint8)
        contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE, offset=(cx0, cy0))
        contour = max(contours, key=cv2.contourArea)
        x, y, w, h = cv2.boundingRect(contour)
        perimeter = float(cv2.arcLength(contour, True))
        circularity = float(4 * np.pi * area / perimeter**2) if perimeter > 0 else 0.0
        mean_h, mean_s, mean_v = (float(c) for c in cv2.mean(hsv[cy0:cy1, cx0:cx1], mask=region)[:3])
        cid = len(cells) + 1
        out[cy0:cy1, cx0:cx1][region > 0] = cid
        cells.append(
            Cell(
                cell_id=cid,
                x=x,
                y=y,
                width=w,
                height=h,
                area_px=area,
                perimeter=round(perimeter, 2),
                circularity=round(min(circularity, 1.0), 4),
                equivalent_diameter=round(float(np.sqrt(4 * area / np.pi)), 2),
                mean_h=round(mean_h, 2),
                mean_s=round(mean_s, 2),
                mean_v=round(mean_v, 2),
                nucleus_share=round(area / float(w * h), 4),
                centroid_x=round(float(xsums[j]) / area, 2),  # = moments m10 / m00, exactly
                centroid_y=round(float(ysums[j]) / area, 2),
            )
        )
    return out, cells


def segment(bgr: np.ndarray, params: SegmentParams | None = None) -> Segmentation:
    """Find the white cells in an 8-bit BGR image."""
    params = params or SegmentParams()
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    candidates, cut = stain_cut(bgr, hsv, params)
    mask = _clean(candidates, params)
    labels = _split(mask, bgr, params)
    labels, cells = _measure(labels, hsv, params)
    return Segmentation(labels=labels, cells=cells, stain_cut=cut)
