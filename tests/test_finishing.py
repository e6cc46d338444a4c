"""Finishing on threads: the same rows and PNGs as in the main thread, and a committed image always has its PNG."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_synth import make_slides

from allscan.pipeline.finishing import finishing_threads
from allscan.pipeline.run import RunConfig, run_batch

TABLES = ("images.csv", "cells.csv", "slides.csv")


def _outputs(out: Path) -> dict[str, bytes]:
    files = {t: (out / t).read_bytes() for t in TABLES}
    files.update({p.relative_to(out).as_posix(): p.read_bytes() for p in sorted((out / "heatmaps").rglob("*.png"))})
    return files


def _config(inputs: Path, out: Path, threads: int) -> RunConfig:
    return RunConfig(
        inputs=[inputs], out=out, model="tiny", heatmaps="all", workers=0, batch_size=4, report=False,
        finish_threads=threads,
    )  # fmt: skip


def test_threads_only_where_inference_leaves_the_cores_free() -> None:
    assert finishing_threads("tensorrt", 1) == finishing_threads("tensorrt", 2) == 0
    assert finishing_threads("tensorrt", 4) == 1
    assert finishing_threads("tensorrt", 16) == finishing_threads("tensorrt", 128) == 4
    assert finishing_threads("onnxruntime", 16) == 0  # its threads use every core already


def test_threaded_finishing_publishes_the_same_bytes(tiny_store: Path, tmp_path: Path) -> None:
    """Three threads against none, with an unreadable image among the others (its row is put between theirs)."""
    make_slides(tmp_path / "in", 14, n_slides=2)
    (tmp_path / "in" / "slide-1" / "img-005.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    inline = run_batch(_config(tmp_path / "in", tmp_path / "inline", 0))
    threaded = run_batch(_config(tmp_path / "in", tmp_path / "threaded", 3))
    assert (inline.n_ok, inline.n_error) == (threaded.n_ok, threaded.n_error) == (13, 1)
    a, b = _outputs(tmp_path / "inline"), _outputs(tmp_path / "threaded")
    assert len([name for name in a if name.endswith(".png")]) == 13
    assert a == b


def test_a_failed_heatmap_write_leaves_its_image_to_do(tiny_store: Path, tmp_path: Path) -> None:
    """A PNG that cannot be written (its slide folder is a file) stops the run before the journal commits that
    image; once the obstacle is gone, the next run does it and the outputs equal a clean run's."""
    make_slides(tmp_path / "in", 8, n_slides=2)
    out = tmp_path / "out"
    (out / "heatmaps").mkdir(parents=True)
    (out / "heatmaps" / "slide-1").write_text("in the way")
    with pytest.raises(OSError):
        run_batch(_config(tmp_path / "in", out, 2))
    (out / "heatmaps" / "slide-1").unlink()
    again = run_batch(_config(tmp_path / "in", out, 2))
    assert again.n_processed > 0 and again.n_ok == 8
    run_batch(_config(tmp_path / "in", tmp_path / "clean", 0))
    assert _outputs(out) == _outputs(tmp_path / "clean")
