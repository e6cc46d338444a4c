"""HSV segmentation finds the purple white cells, leaves red cells and background out, and measures them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from pipeline_synth import field

from allscan.pipeline.segment import CELL_COLUMNS, SegmentParams, segment

PURPLE = [(40, 50, 16), (150, 60, 18), (100, 160, 15)]
PINK = [(90, 40, 14), (40, 130, 14), (170, 150, 14), (120, 100, 13), (190, 200, 12)]


def test_known_purple_discs_found_at_their_centres_and_pink_discs_ignored() -> None:
    img = field(224, purple=PURPLE, pink=PINK, seed=3)
    seg = segment(img)
    assert len(seg.cells) == len(PURPLE)
    found = sorted((c.centroid_x, c.centroid_y) for c in seg.cells)
    for (cx, cy), (x, y, _) in zip(found, sorted(PURPLE), strict=True):
        assert abs(cx - x) < 1.5 and abs(cy - y) < 1.5
    for cell, (_, _, r) in zip(sorted(seg.cells, key=lambda c: c.centroid_x), sorted(PURPLE), strict=True):
        assert cell.area_px == pytest.approx(np.pi * r * r, rel=0.15)
        assert cell.circularity > 0.8
        assert cell.x <= cell.centroid_x <= cell.x + cell.width
    labels_on_pink = [int(seg.labels[y, x]) for x, y, _ in PINK]
    assert labels_on_pink == [0] * len(PINK)
    assert seg.area_fraction == pytest.approx(sum(np.pi * r * r for *_, r in PURPLE) / 224**2, rel=0.15)


def test_no_white_cell_gives_no_cells() -> None:
    assert segment(field(224, pink=PINK, seed=4)).cells == []


def test_touching_cells_are_split() -> None:
    # Tangent discs: one blob after the morphological closing, two cells after the watershed. (Discs that
    # overlap by a few pixels, centres 38 px apart at radius 20, are not split with peak_frac = 0.5.)
    img = field(224, purple=[(90, 112, 20), (130, 112, 20)], seed=5)
    assert len(segment(img).cells) == 2
    assert len(segment(img, SegmentParams(split_touching=False)).cells) == 1


def test_cell_columns_are_the_measurements() -> None:
    assert CELL_COLUMNS[:6] == ("cell_id", "x", "y", "width", "height", "area_px")


def test_real_sample_images(sample_dir: Path) -> None:
    images = sorted(sample_dir.glob("*/*.jpg"))
    assert len(images) >= 10
    total = 0
    for path in images:
        bgr = cv2.imread(str(path))
        seg = segment(bgr)
        hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
        total += len(seg.cells)
        assert seg.area_fraction < 0.5, path.name
        if not seg.cells:
            continue
        inside = hsv[seg.labels > 0]
        outside = hsv[seg.labels == 0]
        # The stained white cells are more saturated than the rest of the field (red cells, background).
        assert inside[:, 1].mean() > outside[:, 1].mean() + 30, path.name
        for cell in seg.cells:
            assert 118 <= cell.mean_h <= 178, (path.name, cell)
    assert total >= len(images)  # every field in the dataset is centred on at least one white cell
