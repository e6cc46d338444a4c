"""`allscan bench --quick --json` end to end on the sample images with the tiny model: every key, all > 0."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

from typer.testing import CliRunner

from allscan.cli import app
from allscan.models.card import read_card, write_card

REQUIRED = (
    "pipeline_ips",
    "pipeline_ips_no_heatmaps",
    "bare_ips",
    "naive_ips",
    "naive_full_ips",
    "pipeline_ips_all_heatmaps",
    "cpu_ms_outside_model",
    "ratio_pipeline_bare",
    "ratio_pipeline_naive",
    "stages_ms",
    "peak_rss_mb",
    "model",
    "backend",
    "batch_size",
    "workers",
    "cpu_count",
    "gpu",
    "rss_ratio_10x_1x",
    "workers_scaling_ips",
    "rerun_s",
)
STAGES = ("decode", "segment", "preprocess", "infer", "heatmap", "write")
HAVE_TORCH = all(importlib.util.find_spec(m) for m in ("torch", "torchvision", "PIL"))


def _numbers(value: object, where: str = "") -> list[tuple[str, float]]:
    """Every number in a JSON tree (booleans are flags, not measurements)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [(where, value)]
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in _numbers(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [n for i, v in enumerate(value) for n in _numbers(v, f"{where}[{i}]")]
    return []


def test_bench_quick_json(tiny_store: Path, sample_dir: Path, tmp_path: Path) -> None:
    # The tiny ONNX graph has no torch twin; the baseline times archs' small 'cnn' at the same input size.
    card_path = tiny_store / "tiny" / "card.json"
    write_card(dataclasses.replace(read_card(card_path), architecture="cnn"), card_path)
    out = tmp_path / "out.json"

    result = CliRunner().invoke(
        app, ["bench", "--model", "tiny", "--images", str(sample_dir), "--quick", "--json", str(out)]
    )

    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert not [k for k in REQUIRED if k not in data]
    assert set(STAGES) <= set(data["stages_ms"])
    assert data["model"] == "tiny" and data["backend"] == "onnxruntime"
    assert set(data["workers_scaling_ips"]) == {"1", "2"}
    if HAVE_TORCH:
        assert data["naive_ips"] is not None, data["naive_skipped"]
    else:
        assert data["naive_ips"] is None and data["naive_skipped"]
    measured = {k: v for k, v in data.items() if k != "targets"}  # targets hold differences, may be <= 0
    bad = [(where, n) for where, n in _numbers(measured) if not n > 0]
    assert not bad, bad


def test_a_repeated_view_is_as_many_images_as_asked(sample_dir: Path, tmp_path: Path) -> None:
    """Discovery lists symlink aliases once: a view repeating 14 images up to 40 must still be 40 images to
    the pipeline (the bench's pipeline runs once timed 14 images of a '256-image' view)."""
    from allscan.bench import imageset
    from allscan.pipeline.discover import discover

    images = imageset.list_images(sample_dir)
    view = imageset.materialise(images, 40, tmp_path / "view")
    found = [f for f in discover([view]) if not f.error]
    assert len(images) < 40 and len(found) == 40
    assert sum((view / f.path).is_symlink() for f in found) == len(images)  # repeats are files of their own
