"""Hostile file names: bytes that are not UTF-8, very long names, line breaks, and neighbours sharing a stem."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import cv2
import pytest
from pipeline_synth import field, write_jpeg

from allscan.io.names import MAX_NAME_BYTES, escape_name, fit_name, heatmap_relpath, unescape_name
from allscan.io.tables import csv_line
from allscan.pipeline.run import RunConfig, run_batch

TABLES = ("images.csv", "cells.csv", "slides.csv")


def _rows(out: Path, table: str = "images.csv") -> list[dict[str, str]]:
    with open(out / table, newline="", encoding="utf-8") as handle:  # strict UTF-8: fails on any stray byte
        return list(csv.DictReader(handle))


def _run(inp: Path, out: Path, **kw: object) -> object:
    return run_batch(RunConfig(inputs=[inp], out=out, model="tiny", workers=0, heatmaps="all", report=False, **kw))


def _image(seed: int) -> object:
    return field(64, purple=[(30, 30, 8)], seed=seed)


@pytest.mark.parametrize(
    "name",
    ["plain.jpg", os.fsdecode(b"\xff\xfe.jpg"), "back\\slash", "\\xff", "\\\\x80", "caf\u00e9\r\n.jpg", ""],
)
def test_escape_is_printable_and_lossless(name: str) -> None:
    text = escape_name(name)
    text.encode("utf-8")  # any byte sequence becomes valid text
    assert unescape_name(text) == name


def test_escape_keeps_distinct_names_distinct() -> None:
    raw = os.fsdecode(b"\xff")
    assert escape_name(raw) == "\\xff"
    assert escape_name("\\xff") == "\\\\xff"  # the literal four characters do not collide with the byte


def test_fit_name_bounds_bytes_and_keeps_names_apart() -> None:
    long_a, long_b = "é" * 200 + "a.jpg", "é" * 200 + "b.jpg"
    fa, fb = fit_name(long_a, ".png"), fit_name(long_b, ".png")
    assert fa != fb and fa.endswith(".png") and len(fa.encode("utf-8")) <= MAX_NAME_BYTES
    fa.encode("utf-8")  # cut on a character boundary
    assert fit_name("short.jpg", ".png") == "short.jpg.png"


def test_undecodable_bytes_in_slide_and_file_names(tiny_store: Path, tmp_path: Path) -> None:
    """Case 1: a name that is not UTF-8 crashed the journal; now it is a row, rendered as \\xNN, with its heatmap."""
    inp = tmp_path / "in"
    slide = os.fsencode(inp) + b"/slide\xfe"
    os.makedirs(slide)
    write_jpeg(Path(os.fsdecode(slide + b"/\xff\xfe.jpg")), _image(1))
    write_jpeg(Path(os.fsdecode(slide + b"/ok.jpg")), _image(2))
    out = tmp_path / "out"
    summary = _run(inp, out)
    assert summary.exit_code == 0 and summary.n_ok == 2  # type: ignore[attr-defined]
    rows = _rows(out)
    assert [r["image"] for r in rows] == ["slide\\xfe/ok.jpg", "slide\\xfe/\\xff\\xfe.jpg"]
    assert {r["slide"] for r in rows} == {"slide\\xfe"} and _rows(out, "slides.csv")[0]["slide"] == "slide\\xfe"
    assert {c["image"] for c in _rows(out, "cells.csv")} == {r["image"] for r in rows}
    for row in rows:
        assert (out / row["heatmap"]).is_file()
    assert rows[1]["heatmap"] == "heatmaps/slide\\xfe/\\xff\\xfe.jpg.png"
    before = {t: (out / t).read_bytes() for t in TABLES}
    again = _run(inp, out)
    assert again.n_processed == 0 and {t: (out / t).read_bytes() for t in TABLES} == before  # type: ignore[attr-defined]


def test_very_long_file_name_gets_a_short_heatmap_name(tiny_store: Path, tmp_path: Path) -> None:
    """Case 2: a 246-byte name overflowed NAME_MAX in the heatmap's temporary file."""
    name = "x" * 242 + ".jpg"
    write_jpeg(tmp_path / "in" / "s" / name, _image(3))
    write_jpeg(tmp_path / "in" / "s" / ("x" * 241 + "y.jpg"), _image(4))
    out = tmp_path / "out"
    assert _run(tmp_path / "in", out).exit_code == 0  # type: ignore[attr-defined]
    rows = _rows(out)
    assert rows[0]["image"] == f"s/{name}"
    heatmaps = [r["heatmap"] for r in rows]
    assert len(set(heatmaps)) == 2
    for rel in heatmaps:
        assert (out / rel).is_file() and len(Path(rel).name.encode()) <= MAX_NAME_BYTES
    assert not list(out.rglob("*.tmp"))


def test_line_breaks_in_names_stay_inside_one_quoted_cell(tiny_store: Path, tmp_path: Path) -> None:
    """Case 3: a CR in a name was written unquoted and readers split the row."""
    assert csv_line(["a\rb", "c\nd", "e"]) == '"a\rb","c\nd",e\n'
    write_jpeg(tmp_path / "in" / "s\rslide" / "a\rb.jpg", _image(5))
    write_jpeg(tmp_path / "in" / "s\rslide" / "c\nd.jpg", _image(6))
    out = tmp_path / "out"
    _run(tmp_path / "in", out)
    for table in TABLES:
        with open(out / table, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        assert len({len(r) for r in rows}) == 1, table  # no row split into pieces
    assert [r["image"] for r in _rows(out)] == ["s\rslide/a\rb.jpg", "s\rslide/c\nd.jpg"]
    assert [r["slide"] for r in _rows(out, "slides.csv")] == ["s\rslide"]


def test_same_stem_different_extension_get_their_own_heatmaps(tiny_store: Path, tmp_path: Path) -> None:
    """Case 4: a.jpg beside a.png (or b.jpg beside b.jpeg) shared one heatmap path."""
    s = tmp_path / "in" / "s"
    write_jpeg(s / "a.jpg", _image(7))
    cv2.imwrite(str(s / "a.png"), _image(8))
    write_jpeg(s / "b.jpg", _image(9))
    write_jpeg(s / "b.jpeg", _image(10))
    out = tmp_path / "out"
    _run(tmp_path / "in", out)
    rows = {r["image"]: r["heatmap"] for r in _rows(out)}
    assert rows == {
        "s/a.jpg": "heatmaps/s/a.jpg.png",
        "s/a.png": "heatmaps/s/a.png.png",
        "s/b.jpeg": "heatmaps/s/b.jpeg.png",
        "s/b.jpg": "heatmaps/s/b.jpg.png",
    }
    assert all((out / rel).is_file() for rel in rows.values())
    assert heatmap_relpath("s", "deeper/c.TIFF") == "heatmaps/s/deeper/c.TIFF.png"
