"""``allscan run`` end to end on the tiny test model: outputs, reruns, heatmaps, input modes, CLI, imports."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pipeline_synth import field, make_slides, write_jpeg
from tinymodel import make_tiny_store
from typer.testing import CliRunner

from allscan.io.heatmap import cell_focus, class_map
from allscan.models.card import FlagThresholds, ModelCard
from allscan.models.store import load_model
from allscan.pipeline.batching import Batcher
from allscan.pipeline.discover import Found
from allscan.pipeline.flags import predict
from allscan.pipeline.run import STAGES, RunConfig, run_batch
from allscan.pipeline.workers import Prepared
from allscan.runtime.onnxrt import OnnxRuntimeRunner

TABLES = ("images.csv", "cells.csv", "slides.csv")


def _read(out: Path, table: str = "images.csv") -> list[dict[str, str]]:
    with open(out / table, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _bytes(out: Path) -> dict[str, bytes]:
    return {t: (out / t).read_bytes() for t in TABLES}


def test_sample_images_full_contract_and_idempotent_rerun(tiny_store: Path, sample_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = run_batch(RunConfig(inputs=[sample_dir], out=out, model="tiny", heatmaps="all", workers=0))
    assert summary.exit_code == 0 and summary.n_error == 0
    n = len(list(sample_dir.glob("*/*.jpg")))
    assert summary.n_images == summary.n_ok == summary.n_processed == n
    rows = _read(out)
    assert len(rows) == n and {r["slide"] for r in rows} == {"patient-A", "patient-B", "patient-C"}
    for row in rows:
        assert row["status"] == "ok" and row["label"] in ("Benign", "Early", "Pre", "Pro")
        probs = [float(row[f"prob_{c}"]) for c in ("Benign", "Early", "Pre", "Pro")]
        assert sum(probs) == pytest.approx(1.0, abs=2e-4) and float(row["confidence"]) == max(probs)
        assert row["heatmap"] == f"heatmaps/{row['slide']}/{Path(row['image']).name}.png"
        assert (out / row["heatmap"]).is_file()
        assert int(row["n_cells"]) >= 1 and 0.0 <= float(row["cell_focus"]) <= 1.0
        assert row["model_id"].startswith("tiny@")
    cells = _read(out, "cells.csv")
    assert len(cells) == sum(int(r["n_cells"]) for r in rows)
    slides = _read(out, "slides.csv")
    assert [s["slide"] for s in slides] == ["patient-A", "patient-B", "patient-C"]
    assert all(s["label"] and s["evidence"] for s in slides)
    run = json.loads((out / "run.json").read_text())
    assert set(STAGES) <= set(run["timings_s"]) and run["images_per_s"] > 0
    assert run["model"]["files"]["model.onnx"] == load_model("tiny").card.onnx_sha256
    assert run["counts"]["images"] == n and run["backend"] == "onnxruntime" and run["precision"] == "fp32"
    assert not (out / "report.html").exists()  # the CLI starts the report, never the pipeline

    before = _bytes(out)
    again = run_batch(RunConfig(inputs=[sample_dir], out=out, model="tiny", heatmaps="all", workers=0))
    assert again.n_processed == 0 and again.n_reused == n
    assert _bytes(out) == before


def test_changed_and_new_files_are_the_only_work(tiny_store: Path, tmp_path: Path) -> None:
    paths = make_slides(tmp_path / "in", 6, n_slides=2)
    out = tmp_path / "out"
    run_batch(RunConfig(inputs=[tmp_path / "in"], out=out, model="tiny", workers=0, report=False))
    write_jpeg(paths[0], field(64, purple=[(20, 20, 8), (44, 44, 8)], seed=77))  # content (size, mtime) changes
    write_jpeg(tmp_path / "in" / "slide-1" / "zz-new.jpg", field(64, seed=78))
    summary = run_batch(RunConfig(inputs=[tmp_path / "in"], out=out, model="tiny", workers=0, report=False))
    assert (summary.n_processed, summary.n_reused, summary.n_images) == (2, 5, 7)
    fresh = tmp_path / "fresh"
    run_batch(RunConfig(inputs=[tmp_path / "in"], out=fresh, model="tiny", workers=0, report=False))
    assert _bytes(out) == _bytes(fresh)
    paths[1].unlink()  # a deleted image leaves the tables too
    summary = run_batch(RunConfig(inputs=[tmp_path / "in"], out=out, model="tiny", workers=0, report=False))
    assert summary.n_images == 6 and summary.n_processed == 0


def test_heatmap_modes(tiny_store: Path, tmp_path: Path) -> None:
    make_slides(tmp_path / "in", 8, n_slides=1)
    out = tmp_path / "out"
    run_batch(RunConfig(inputs=[tmp_path / "in"], out=out, model="tiny", heatmaps="flagged", workers=0, report=False))
    rows = _read(out)
    for row in rows:
        wanted = row["label"] != "Benign" or row["flags"] != ""
        assert (row["heatmap"] != "") == wanted
    run_batch(RunConfig(inputs=[tmp_path / "in"], out=out, model="tiny", heatmaps="none", workers=0, report=False))
    assert all(r["heatmap"] == "" for r in _read(out))
    assert not list((out / "heatmaps").rglob("*.png"))  # stale PNGs of the earlier mode are gone


def test_cells_mode_pools_crops_and_batches_do_not_change_results(tiny_store: Path, tmp_path: Path) -> None:
    make_tiny_store(tiny_store, "tiny_cells", mode="cells")
    write_jpeg(tmp_path / "in" / "s" / "two.jpg", field(96, purple=[(25, 25, 10), (70, 65, 10)], seed=1))
    write_jpeg(tmp_path / "in" / "s" / "one.jpg", field(96, purple=[(48, 48, 12)], seed=2))
    write_jpeg(tmp_path / "in" / "s" / "none.jpg", field(96, pink=[(48, 48, 12)], seed=3))
    make_slides(tmp_path / "in", 5, n_slides=1, size=96)
    outs = []
    for batch in (1, 3, 16):
        out = tmp_path / f"out{batch}"
        cfg = RunConfig(inputs=[tmp_path / "in"], out=out, model="tiny_cells", batch_size=batch, workers=0)
        cfg.report = False
        run_batch(cfg)
        outs.append(_bytes(out))
    assert outs[0] == outs[1] == outs[2]
    rows = {r["image"]: r for r in _read(tmp_path / "out3")}
    assert rows["s/two.jpg"]["n_cells"] == "2" and rows["s/none.jpg"]["n_cells"] == "0"
    assert "no_cells" in rows["s/none.jpg"]["flags"].split(";") and rows["s/none.jpg"]["cell_focus"] == ""


def test_masked_mode_runs(tiny_store: Path, tmp_path: Path) -> None:
    make_slides(tmp_path / "in", 4, n_slides=2)
    summary = run_batch(RunConfig(inputs=[tmp_path / "in"], out=tmp_path / "o", model="tiny_masked", workers=0))
    assert summary.n_ok == 4 and summary.exit_code == 0


def test_batcher_feeds_whole_batches_and_returns_each_image_its_rows() -> None:
    sizes: list[int] = []

    def infer(batch: np.ndarray) -> dict[str, np.ndarray]:
        sizes.append(len(batch))
        return {"logits": batch[:, :, 0, 0].copy(), "cam": batch.copy()}

    batcher = Batcher(infer, 4)
    done = []
    rows = [1, 3, 2, 5, 1, 1]
    for i, k in enumerate(rows):
        tensors = np.full((k, 3, 2, 2), float(i), dtype=np.float32)
        done += batcher.add(Prepared(found=Found("s", f"{i}", f"{i}", f"/{i}"), tensors=tensors))
    done += batcher.flush()
    assert sizes == [4, 4, 4, 1]  # whole batches; only the last is short
    assert [item.found.image for item, _ in done] == [str(i) for i in range(len(rows))]
    for (item, outputs), k in zip(done, rows, strict=True):
        assert outputs["logits"].shape == (k, 3) and np.all(outputs["logits"] == float(item.found.image))


def test_ort_runner_on_the_tiny_model(tiny_store: Path) -> None:
    model = load_model("tiny")
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(3, 3, 64, 64)).astype(np.float32)
    with OnnxRuntimeRunner(model.onnx_path, threads=1) as runner:
        out = runner.infer(batch)
    assert out["logits"].shape == (3, 4) and out["cam"].shape == (3, 4, 8, 8) and out["ood"].shape == (3,)
    np.testing.assert_allclose(out["logits"], out["cam"].mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)  # exact CAM
    pooled = batch.reshape(3, 3, 8, 8, 8, 8).mean(axis=(3, 5))
    import onnx
    from onnx import numpy_helper

    weight = numpy_helper.to_array(next(i for i in onnx.load(model.onnx_path).graph.initializer if i.name == "W"))
    expected = np.einsum("ck,nkhw->nchw", weight[:, :, 0, 0], pooled)
    np.testing.assert_allclose(out["cam"], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["ood"], (batch**2).mean(axis=(1, 2, 3)), rtol=1e-5)


def test_flags_from_card_thresholds() -> None:
    card = ModelCard(name="m", architecture="a", classes=("Benign", "Pro"), flags=FlagThresholds(ood=1.0))
    sure = predict(np.array([[0.0, 5.0]]), np.array([0.2]), card, n_cells=2)
    assert sure.flags == () and sure.label_index == 1 and sure.confidence > 0.99
    unsure = predict(np.array([[0.0, 0.1]]), np.array([3.0]), card, n_cells=0)
    assert unsure.flags == ("no_cells", "out_of_distribution", "low_confidence")
    pooled = predict(np.array([[0.0, 5.0], [5.0, 0.0], [0.0, 5.0]]), np.array([0.1, 1.5, 0.1]), card, n_cells=3)
    assert pooled.probs[1] == pytest.approx((2 * 0.99331 + 0.00669) / 3, abs=1e-4) and pooled.ood == 1.5


def test_cam_is_drawn_back_into_place_and_focus_is_the_share_on_cells() -> None:
    cam = np.zeros((1, 2, 4, 4), dtype=np.float32)
    cam[0, 1, 0, 0] = 1.0  # top-left quarter of the image
    cam[0, 1, 3, 3] = -5.0  # negative evidence is ReLU'd away
    heat = class_map(cam, 1, (40, 40))
    assert heat.max() == pytest.approx(1.0) and heat[35:, 35:].max() == 0.0
    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[:20, :20] = 1
    assert cell_focus(heat, mask) == pytest.approx(1.0)
    assert cell_focus(heat, np.zeros_like(mask)) is None
    crops = np.ones((2, 2, 3, 3), dtype=np.float32)
    placed = class_map(crops, 0, (40, 40), boxes=[(0, 0, 10, 10), (30, 30, 40, 40)])
    assert placed[:10, :10].min() == 1.0 and placed[30:, 30:].min() == 1.0 and placed[10:30, :].max() == 0.0


def test_cli_exit_codes(tiny_store: Path, sample_dir: Path, tmp_path: Path) -> None:
    from allscan.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["run", str(sample_dir), "-m", "tiny", "-o", str(tmp_path / "o"), "--workers", "1"])
    assert ok.exit_code == 0, ok.output
    assert "images/s" in ok.output and "14 images found" in ok.output
    bad_model = runner.invoke(app, ["run", str(sample_dir), "-m", "nope", "-o", str(tmp_path / "o2")])
    assert bad_model.exit_code == 2 and "unknown model 'nope'" in bad_model.output
    missing = runner.invoke(app, ["run", str(tmp_path / "missing"), "-m", "tiny", "-o", str(tmp_path / "o3")])
    assert missing.exit_code == 2 and "input not found" in missing.output
    (tmp_path / "in" / "s").mkdir(parents=True)
    (tmp_path / "in" / "s" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    failed = runner.invoke(app, ["run", str(tmp_path / "in"), "-m", "tiny", "-o", str(tmp_path / "o4"), "-q"])
    assert failed.exit_code == 1 and "1 images failed" in failed.output


def test_import_cli_loads_neither_torch_nor_tensorrt() -> None:
    code = (
        "import sys, allscan.cli, allscan.pipeline.run, allscan.io.heatmap, allscan.io.tables; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorrt', 'torchvision') "
        "or m.startswith('allscan.train')); print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_slide_name_clash_and_out_as_input_are_usage_errors(tiny_store: Path, tmp_path: Path) -> None:
    """Cases 5 and 6 through the CLI: exit 2 with one line, nothing published."""
    from allscan.cli import app

    write_jpeg(tmp_path / "in1" / "patientA" / "a.jpg", field(64, seed=1))
    write_jpeg(tmp_path / "in2" / "patientA" / "a.jpg", field(64, seed=2))
    runner = CliRunner()
    out = tmp_path / "o"
    clash = runner.invoke(app, ["run", str(tmp_path / "in1"), str(tmp_path / "in2"), "-m", "tiny", "-o", str(out)])
    assert clash.exit_code == 2 and "slide name 'patientA' comes from two folders" in clash.output
    assert not (out / "images.csv").exists()
    same = runner.invoke(app, ["run", str(tmp_path / "in1"), "-m", "tiny", "-o", str(tmp_path / "in1")])
    assert same.exit_code == 2 and "is an INPUT" in same.output


def test_earlier_results_inside_the_input_are_not_read_back(tiny_store: Path, tmp_path: Path) -> None:
    """Case 6: results of an earlier run with another --out inside INPUT are never slides."""
    make_slides(tmp_path / "in", 3, n_slides=1)
    cfg = {"model": "tiny", "workers": 0, "heatmaps": "all"}
    first = run_batch(RunConfig(inputs=[tmp_path / "in"], out=tmp_path / "in" / "night1", **cfg))
    second = run_batch(RunConfig(inputs=[tmp_path / "in"], out=tmp_path / "in" / "night2", **cfg))
    assert first.n_images == second.n_images == 3 and second.n_slides == 1


def test_input_gone_empty_is_refused_unless_allowed(tiny_store: Path, tmp_path: Path) -> None:
    """Case 14: an unmounted share (an INPUT suddenly empty) replaced last night's tables with empty ones."""
    from allscan.cli import app

    make_slides(tmp_path / "share", 4, n_slides=2)
    write_jpeg(tmp_path / "local" / "patient-L" / "a.jpg", field(64, seed=5))
    write_jpeg(tmp_path / "local" / "patient-L" / "b.jpg", field(64, seed=6))
    out = tmp_path / "o"
    args = ["run", str(tmp_path / "share"), str(tmp_path / "local"), "-m", "tiny", "-o", str(out), "--no-report"]
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    before = _bytes(out)
    for path in (tmp_path / "share").rglob("*.jpg"):
        path.unlink()  # the share is unmounted: its folder is there, empty
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "yields no image now, but the journal holds 4 results" in refused.output
    assert _bytes(out) == before
    allowed = runner.invoke(app, [*args, "--allow-empty"])
    assert allowed.exit_code == 0 and len(_read(out)) == 2


SHIPPED = Path(__file__).resolve().parents[1] / "engines"


def test_allscan_runs_rows_position_independently_on_onnxruntime() -> None:
    """Case 10: ORT rounds a row differently at another place in the batch (the shipped ViT does)."""
    from allscan.runtime.select import select_runner

    model = load_model("vit", root=SHIPPED)
    size = model.card.input.size
    batch = np.random.default_rng(0).normal(size=(6, 3, size, size)).astype(np.float32)
    with select_runner(model, "auto", 6).runner as runner:
        whole = runner.infer(batch)
        for i in range(len(batch)):
            alone = runner.infer(batch[i : i + 1])
            for name, value in alone.items():
                assert np.array_equal(value[0], whole[name][i]), (name, i)


def test_tables_and_heatmaps_are_bit_identical_whatever_the_batch_size(tmp_path: Path) -> None:
    """Case 10 end to end, on the shipped ViT: --batch-size 1, 5 and 16 publish the same bytes."""
    make_slides(tmp_path / "in", 12, n_slides=2)
    results = []
    for batch in (1, 5, 16):
        out = tmp_path / f"out{batch}"
        run_batch(
            RunConfig(inputs=[tmp_path / "in"], out=out, model="vit", batch_size=batch, workers=0, heatmaps="all",
                      report=False, engines_root=SHIPPED)
        )  # fmt: skip
        pngs = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted((out / "heatmaps").rglob("*.png"))}
        results.append((_bytes(out), pngs))
    assert results[0] == results[1] == results[2]
