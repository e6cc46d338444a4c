"""Real folders hold broken and odd files: each becomes exactly one row, and the other rows do not change."""

from __future__ import annotations

import csv
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from pipeline_synth import field, write_jpeg

from allscan.io.images import ImageReadError, decode_bytes
from allscan.pipeline.run import RunConfig, run_batch


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height (a decompression bomb's header), with a tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "images.csv", newline="", encoding="utf-8") as handle:
        return {row["image"]: row for row in csv.DictReader(handle)}


GOOD = field(96, purple=[(30, 30, 12), (66, 60, 12)], pink=[(70, 20, 10)], seed=1)


@pytest.fixture()
def odd_folder(tmp_path: Path) -> Path:
    """One slide with two good images and every kind of bad or unusual input."""
    pil = pytest.importorskip("PIL.Image")
    s = tmp_path / "in" / "s"
    write_jpeg(s / "good-1.jpg", GOOD)
    write_jpeg(s / "good-2.jpg", field(96, purple=[(48, 48, 14)], seed=2))
    (s / "empty.jpg").write_bytes(b"")
    data = (s / "good-1.jpg").read_bytes()
    (s / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (s / "text.jpg").write_bytes(b"this is a shopping list, not a photograph\n")
    (s / "bomb.png").write_bytes(_png_header_only(40_000, 40_000))
    cv2.imwrite(str(s / "deep16.png"), GOOD.astype(np.uint16) * 257)
    cv2.imwrite(str(s / "gray.jpg"), cv2.cvtColor(GOOD, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(s / "alpha.png"), cv2.cvtColor(GOOD, cv2.COLOR_BGR2BGRA))
    rgb = pil.fromarray(cv2.cvtColor(GOOD, cv2.COLOR_BGR2RGB))
    rgb.convert("CMYK").save(s / "cmyk.jpg", "JPEG", quality=92)
    wide = pil.fromarray(cv2.cvtColor(cv2.resize(GOOD, (96, 48)), cv2.COLOR_BGR2RGB))
    exif = pil.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    wide.save(s / "exif-rotated.jpg", "JPEG", exif=exif, quality=92)
    (s / "nested").mkdir()
    os.symlink("..", s / "nested" / "loop")
    return tmp_path / "in"


def test_each_bad_input_is_one_error_row_and_good_rows_are_intact(
    tiny_store: Path, odd_folder: Path, tmp_path: Path
) -> None:
    summary = run_batch(RunConfig(inputs=[odd_folder], out=tmp_path / "out", model="tiny", workers=0, report=False))
    rows = _rows(tmp_path / "out")
    assert summary.exit_code == 1
    errors = {k: r["error"] for k, r in rows.items() if r["status"] == "error"}
    assert set(errors) == {"s/empty.jpg", "s/truncated.jpg", "s/text.jpg", "s/bomb.png", "s/nested/loop/"}
    assert errors["s/empty.jpg"] == "empty file (0 bytes)"
    assert errors["s/truncated.jpg"].startswith("truncated JPEG")
    assert errors["s/text.jpg"].startswith("not an image")
    assert errors["s/bomb.png"].startswith("image too large: 40000x40000")
    assert errors["s/nested/loop/"].startswith("symlink loop")
    for key, message in errors.items():
        assert "\n" not in message and rows[key]["label"] == "" and rows[key]["heatmap"] == ""
    assert summary.n_error == 5 and summary.n_images == len(rows) == 12

    ok = {k: r for k, r in rows.items() if r["status"] == "ok"}
    assert "16bit_converted" in ok["s/deep16.png"]["notes"]
    assert "gray_converted" in ok["s/gray.jpg"]["notes"]
    assert "alpha_dropped" in ok["s/alpha.png"]["notes"]
    assert "cmyk_converted" in ok["s/cmyk.jpg"]["notes"]
    assert (ok["s/exif-rotated.jpg"]["width"], ok["s/exif-rotated.jpg"]["height"]) == ("48", "96")
    for key in ("s/deep16.png", "s/alpha.png", "s/cmyk.jpg"):  # converted pixels still show the two cells
        assert ok[key]["n_cells"] == "2", key

    # The good images' rows are exactly those of a run without the bad files.
    clean = tmp_path / "clean" / "s"
    clean.mkdir(parents=True)
    for name in ("good-1.jpg", "good-2.jpg"):
        (clean / name).write_bytes((odd_folder / "s" / name).read_bytes())
    run_batch(RunConfig(inputs=[clean.parent], out=tmp_path / "out2", model="tiny", workers=0, report=False))
    alone = _rows(tmp_path / "out2")
    for name in ("s/good-1.jpg", "s/good-2.jpg"):
        assert rows[name] == alone[name]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_an_error_row(tiny_store: Path, tmp_path: Path) -> None:
    s = tmp_path / "in" / "s"
    write_jpeg(s / "ok.jpg", GOOD)
    secret = write_jpeg(s / "secret.jpg", GOOD)
    secret.chmod(0)
    try:
        run_batch(RunConfig(inputs=[tmp_path / "in"], out=tmp_path / "out", model="tiny", workers=0, report=False))
    finally:
        secret.chmod(0o644)
    rows = _rows(tmp_path / "out")
    assert rows["s/secret.jpg"]["error"].startswith("permission denied")
    assert rows["s/ok.jpg"]["status"] == "ok"


def test_decode_bytes_guard_is_configurable() -> None:
    ok, data = cv2.imencode(".png", GOOD)
    assert decode_bytes(data.tobytes()).bgr.shape == (96, 96, 3)
    with pytest.raises(ImageReadError, match="too large"):
        decode_bytes(data.tobytes(), max_pixels=96 * 96 - 1)
