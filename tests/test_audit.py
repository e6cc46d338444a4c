"""The shortcut audit of ``allscan evaluate``: on a folder where colour alone decides the class, a colour model
shows a large swap gap and the colour-free input none; the colour-only baseline sees the shortcut."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from tinymodel import make_tiny_store
from typer.testing import CliRunner

from allscan.cli import app
from allscan.evaluation.shortcut import binary_metrics, colour_features
from allscan.io.records import ImageRecord

pytest.importorskip("sklearn")


def _smear(tint_bgr: tuple[int, int, int], seed: int) -> np.ndarray:
    """A tinted field with a few purple 'cells' whose places vary: only the tint tells the class."""
    rng = np.random.default_rng(seed)
    img = np.full((64, 64, 3), tint_bgr, np.uint8)
    img = np.clip(img.astype(np.int16) + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
    for _ in range(3):
        c = tuple(int(v) for v in rng.integers(10, 54, 2))
        cv2.circle(img, c, 6, (170, 40, 120), -1)
    return img


@pytest.fixture()
def colour_decides(tmp_path: Path) -> Path:
    """Benign is red, Pro is blue; a model store beside it whose training split lists half of the images."""
    root = tmp_path / "data"
    for cls, tint in (("Benign", (60, 60, 220)), ("Pro", (220, 60, 60))):
        (root / cls).mkdir(parents=True)
        for k in range(8):
            cv2.imwrite(str(root / cls / f"{cls}-{k:03d}.png"), _smear(tint, k + (100 if cls == "Pro" else 0)))
    return root


def _store(tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    store = tmp_path / "engines"
    for name, colour in (("tiny", "rgb"), ("tiny_grey", "lightness")):
        folder = make_tiny_store(store, name, colour=colour)
        train = [f"{c}/{c}-{k:03d}.png" for c in ("Benign", "Pro") for k in range(4)]
        (folder / "split.json").write_text(json.dumps({"mode": "blocked", "data_dir": str(data), "train": train}))
    monkeypatch.setenv("ALLSCAN_ENGINES", str(store))
    return store


def _evaluate(model: str, data: Path, out: Path) -> dict:
    result = CliRunner().invoke(app, ["evaluate", str(data), "-m", model, "-o", str(out), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "stain swap:" in result.output and "colour-only baseline:" in result.output
    return json.loads((out / "metrics.json").read_text())


def test_swap_gap_large_for_colour_model_none_for_colour_free(
    colour_decides: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _store(tmp_path, colour_decides, monkeypatch)
    colour_model = _evaluate("tiny", colour_decides, tmp_path / "eval-rgb")
    assert colour_model["accuracy"] == 1.0  # the tiny model reads the tint: red -> Benign, blue -> Pro
    assert colour_model["swap"]["n_images"] == 16
    assert colour_model["swap"]["accuracy"] <= 0.1  # every image got the other class's stain, and followed it
    assert colour_model["swap"]["swap_gap"] >= 0.5
    assert colour_model["binary"]["sensitivity"] == 1.0 and colour_model["binary"]["specificity"] == 1.0
    assert colour_model["colour_baseline"]["accuracy"] == 1.0  # colour alone separates these classes
    assert colour_model["colour_baseline"]["n_train"] == 8

    grey = _evaluate("tiny_grey", colour_decides, tmp_path / "eval-grey")
    assert abs(grey["swap"]["swap_gap"]) <= 0.1  # it cannot see the stain, so the swap changes (almost) nothing
    assert grey["swap"]["accuracy"] == pytest.approx(grey["accuracy"], abs=0.1)


def test_audit_can_be_switched_off(colour_decides: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _store(tmp_path, colour_decides, monkeypatch)
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app, ["evaluate", str(colour_decides), "-m", "tiny", "-o", str(out), "--workers", "0", "--no-audit"]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert "swap" not in metrics and "colour_baseline" not in metrics and "binary" in metrics


def test_colour_features_see_only_colour() -> None:
    img = _smear((60, 60, 220), 0)
    moved = np.roll(img, 17, axis=1)  # the same pixels elsewhere: identical global statistics
    np.testing.assert_allclose(colour_features(img), colour_features(moved))
    assert colour_features(img).shape == (30,)


def test_binary_metrics_counts_errors_as_missed() -> None:
    classes = ("Benign", "Early", "Pro")

    def ok(label: str, benign: float) -> ImageRecord:
        return ImageRecord("s", f"{label}.jpg", "ok", label=label, probs=(benign, 1 - benign, 0.0))

    rows = [ok("Pro", 0.1), ok("Early", 0.3), ImageRecord("s", "x.jpg", "error"), ok("Benign", 0.9), ok("Early", 0.4)]
    truth = ["Pro", "Early", "Pro", "Benign", "Benign"]
    b = binary_metrics(rows, classes, truth, "Benign")
    assert b["n_all"] == 3 and b["n_benign"] == 2
    assert b["sensitivity"] == pytest.approx(2 / 3)
    assert b["specificity"] == pytest.approx(1 / 2)
    assert b["roc_auc"] == pytest.approx(1.0)
