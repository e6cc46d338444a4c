"""Large and multi-page images (issue 10 case 15): a working copy of bounded size, the file's own size and pixels in
the tables, and a note when a TIFF holds pages that are not read."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from pipeline_synth import BACKGROUND_BGR, PURPLE_BGR, field, write_jpeg

from allscan.io import images
from allscan.io.images import WORKING_SIDE, decode_bytes, tiff_pages
from allscan.models.card import InputSpec
from allscan.pipeline.discover import Found
from allscan.pipeline.run import RunConfig, run_batch
from allscan.pipeline.workers import PrepareSettings, prepare

DISCS = [(1500, 1500, 300), (4000, 3000, 350), (6500, 4500, 300)]  # (x, y, radius) in the file's pixels


def _large_jpeg(path: Path, width: int = 8000, height: int = 6000) -> Path:
    """A 48-megapixel smear field with three purple cells (no noise: 144 MB of float noise is not needed)."""
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = BACKGROUND_BGR
    for x, y, r in DISCS:
        cv2.circle(img, (x, y), r, PURPLE_BGR, thickness=-1)
    return write_jpeg(path, img)


def _found(path: Path) -> Found:
    st = path.stat()
    return Found("s", path.name, path.name, str(path), st.st_size, st.st_mtime_ns)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_large_jpeg_is_decoded_reduced_and_segmented_on_a_bounded_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _large_jpeg(tmp_path / "big.jpg")
    flags: list[int] = []
    real = images.cv2.imdecode

    def spy(buffer: np.ndarray, flag: int) -> np.ndarray:
        flags.append(flag)
        return real(buffer, flag)

    monkeypatch.setattr(images.cv2, "imdecode", spy)
    item = prepare(_found(path), PrepareSettings(spec=InputSpec()))
    assert not item.error
    assert flags == [cv2.IMREAD_REDUCED_COLOR_2]  # libjpeg decodes 4000x3000, never the full 48 MP
    assert item.bgr is not None and item.labels is not None
    assert item.bgr.shape == (1536, 2048, 3) and item.labels.shape == (1536, 2048)  # the working copy
    assert (item.width, item.height) == (8000, 6000)  # the file's size
    assert "downscaled_to_2048x1536" in item.notes
    assert len(item.cells) == len(DISCS)  # measured on the copy (3.9 file px per copy px), sizes within ~4 px
    for cell, (x, y, r) in zip(sorted(item.cells, key=lambda c: c.x), DISCS, strict=True):
        assert abs(cell.centroid_x - x) < 8 and abs(cell.centroid_y - y) < 8  # in the file's pixels
        assert abs(cell.width - 2 * r) < 20 and abs(cell.area_px - np.pi * r * r) < 0.05 * np.pi * r * r


def test_large_png_is_downscaled_too_and_small_images_are_untouched() -> None:
    big = np.full((3000, 4100, 3), 200, dtype=np.uint8)
    decoded = decode_bytes(cv2.imencode(".png", big)[1].tobytes(), max_side=WORKING_SIDE)
    assert decoded.bgr.shape == (1499, 2048, 3) and (decoded.width, decoded.height) == (4100, 3000)
    small = field(96, purple=[(40, 40, 12)], seed=3)
    data = cv2.imencode(".jpg", small)[1].tobytes()
    same = decode_bytes(data, max_side=WORKING_SIDE)
    assert np.array_equal(same.bgr, decode_bytes(data).bgr) and same.notes == [] and same.scale == 1.0


def test_large_jpeg_run_keeps_the_file_size_and_scales_cells_back(tiny_store: Path, tmp_path: Path) -> None:
    _large_jpeg(tmp_path / "in" / "slide" / "big.jpg")
    out = tmp_path / "out"
    summary = run_batch(RunConfig(inputs=[tmp_path / "in"], out=out, model="tiny", heatmaps="all", workers=0))
    assert summary.exit_code == 0
    (row,) = _rows(out / "images.csv")
    assert (row["width"], row["height"], row["n_cells"]) == ("8000", "6000", "3")
    assert "downscaled_to_2048x1536" in row["notes"]
    xs = sorted(float(c["centroid_x"]) for c in _rows(out / "cells.csv"))
    assert all(abs(x - d[0]) < 8 for x, d in zip(xs, DISCS, strict=True))
    heatmap = cv2.imread(str(out / row["heatmap"]))
    assert heatmap.shape[:2] == (1536, 2048)  # rendered on the working copy


def test_multipage_tiff_is_read_as_its_first_page_with_a_note(tiny_store: Path, tmp_path: Path) -> None:
    pages = [field(96, purple=[(30 + 10 * i, 40, 12)], seed=i) for i in range(3)]
    slide = tmp_path / "in" / "slide"
    slide.mkdir(parents=True)
    assert cv2.imwritemulti(str(slide / "three.tif"), pages)
    assert cv2.imwrite(str(slide / "one.tif"), pages[0])
    assert tiff_pages((slide / "three.tif").read_bytes()) == 3
    assert tiff_pages((slide / "one.tif").read_bytes()) == 1
    out = tmp_path / "out"
    run_batch(RunConfig(inputs=[tmp_path / "in"], out=out, model="tiny", workers=0))
    rows = {r["image"]: r for r in _rows(out / "images.csv")}
    assert rows["slide/three.tif"]["notes"] == "multipage_tiff_first_page_of_3"
    assert rows["slide/three.tif"]["status"] == "ok"
    assert rows["slide/one.tif"]["notes"] == ""


def test_tiff_page_count_survives_loops_and_damage() -> None:
    data = bytearray(cv2.imencode(".tif", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    first = int.from_bytes(data[4:8], "little")
    count = int.from_bytes(data[first : first + 2], "little")
    end = first + 2 + 12 * count
    data[end : end + 4] = first.to_bytes(4, "little")  # the next IFD is the first again: a loop
    assert tiff_pages(bytes(data)) == 1
    assert tiff_pages(bytes(data[:first])) == 0
