"""What counts as a new image: a file replaced with its mtime restored is new; a folder reached twice is not."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from pipeline_synth import make_slides

from allscan.pipeline.run import RunConfig, run_batch


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "images.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _same_length(a: bytes, b: bytes) -> tuple[bytes, bytes]:
    """Pad the shorter JPEG after its end marker (decoders ignore it) so both files have one size."""
    n = max(len(a), len(b))
    assert n - min(len(a), len(b)) < 900  # the end marker stays within the last 1 KiB
    return a + b"\0" * (n - len(a)), b + b"\0" * (n - len(b))


def test_image_replaced_in_place_with_its_mtime_restored_is_reprocessed(tiny_store: Path, tmp_path: Path) -> None:
    first, other = make_slides(tmp_path / "in", 2, n_slides=1)
    old, new = _same_length(first.read_bytes(), other.read_bytes())
    first.write_bytes(old)
    config = RunConfig(inputs=[tmp_path / "in"], out=tmp_path / "out", model="tiny", workers=0, report=False)
    run_batch(config)
    before = _rows(tmp_path / "out")[0]
    st = os.stat(first)
    with open(first, "r+b") as handle:  # same inode, same size, then the mtime set back
        handle.write(new)
    os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(first).st_mtime_ns == st.st_mtime_ns and os.stat(first).st_size == st.st_size
    summary = run_batch(config)
    assert summary.n_processed == 1
    after = _rows(tmp_path / "out")[0]
    assert after != before and after["prob_Benign"] == _rows(tmp_path / "out")[1]["prob_Benign"]


def test_one_folder_reached_through_symlink_aliases_gives_one_set_of_rows(tiny_store: Path, tmp_path: Path) -> None:
    make_slides(tmp_path / "in", 4, n_slides=2)
    (tmp_path / "in" / "slide-9").symlink_to(tmp_path / "in" / "slide-0")  # a slide folder aliasing another
    (tmp_path / "alias").symlink_to(tmp_path / "in")  # the INPUT given twice
    summary = run_batch(
        RunConfig(inputs=[tmp_path / "in", tmp_path / "alias"], out=tmp_path / "out", model="tiny", workers=0)
    )
    rows = _rows(tmp_path / "out")
    assert sorted(r["image"] for r in rows) == [f"slide-{i % 2}/img-{i:03d}.jpg" for i in (0, 2, 1, 3)]
    assert summary.n_images == 4
    assert any("reached twice through symlink aliases" in w for w in summary.warnings)
