"""`allscan evaluate` on a tiny labelled folder whose answers are known, and the segmentation benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from allscan.cli import app
from allscan.evaluation.metrics import classification_metrics, foreign_metrics
from allscan.evaluation.segmentation import evaluate_segmentation, iou, match
from allscan.io.records import Flag, ImageRecord

pytest.importorskip("sklearn")


def _smear(colour_bgr: tuple[int, int, int], seed: int) -> np.ndarray:
    """A pale field with a few purple 'cells', tinted so the tiny model's answer is known (red -> Benign,
    blue -> Pro)."""
    rng = np.random.default_rng(seed)
    img = np.full((96, 96, 3), colour_bgr, np.uint8)
    for _ in range(3):
        c = tuple(int(v) for v in rng.integers(20, 76, 2))
        cv2.circle(img, c, 9, (170, 40, 120), -1)
    return img


@pytest.fixture()
def labelled(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for cls, colour in (("Benign", (30, 30, 230)), ("Pro", (230, 30, 30))):
        (root / cls).mkdir(parents=True)
        for k in range(3):
            cv2.imwrite(str(root / cls / f"{cls}-{k:03d}.jpg"), _smear(colour, k))
    return root


def test_evaluate_known_answers(tiny_store: Path, labelled: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(labelled),
            "-m",
            "tiny",
            "-o",
            str(out),
            "--workers",
            "0",
            "--foreign",
            str(labelled / "Pro"),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 6
    assert metrics["accuracy"] == 1.0
    assert metrics["per_class"]["Benign"]["recall"] == 1.0
    assert metrics["per_class"]["Pro"]["support"] == 3
    assert metrics["confusion_matrix"][0][0] == 3 and metrics["confusion_matrix"][3][3] == 3
    assert 0.0 <= metrics["cell_focus"] <= 1.0
    # The 'foreign' folder holds only blue (Pro-scoring) images: none is Benign.
    assert metrics["foreign"]["share_benign"] == 0.0
    assert (out / "confusion_matrix.png").stat().st_size > 0 and (out / "roc.png").stat().st_size > 0


def test_evaluate_rejects_unknown_class_folder(tiny_store: Path, labelled: Path, tmp_path: Path) -> None:
    (labelled / "Myeloid").mkdir()
    result = CliRunner().invoke(app, ["evaluate", str(labelled), "-m", "tiny", "-o", str(tmp_path / "e")])
    assert result.exit_code == 2
    assert "Myeloid" in result.output


def test_metrics_count_errors_as_wrong() -> None:
    rows = [
        ImageRecord("s", "a.jpg", "ok", label="A", probs=(0.9, 0.1), cell_focus=0.8),
        ImageRecord("s", "b.jpg", "error", error="cannot decode image"),
        ImageRecord("s", "c.jpg", "ok", label="B", probs=(0.3, 0.7), flags=(Flag.LOW_CONFIDENCE,)),
    ]
    m = classification_metrics(rows, ("A", "B"), ["A", "A", "B"])
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["n_error"] == 1
    assert m["flag_rate"] == pytest.approx(0.5)
    assert m["cell_focus"] == pytest.approx(0.8)
    f = foreign_metrics(rows, benign="A")
    assert f["share_benign_or_flagged"] == pytest.approx(1.0)
    assert f["share_leukemia_unflagged"] == 0.0


def test_box_matching() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    # One prediction cannot match two boxes.
    assert match([(0, 0, 10, 10)], [(0, 0, 10, 10), (1, 1, 10, 10)]) == 1


def test_segmentation_against_voc_boxes(tmp_path: Path) -> None:
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    img = np.full((200, 200, 3), (235, 225, 240), np.uint8)
    cv2.circle(img, (60, 60), 20, (170, 40, 120), -1)
    cv2.imwrite(str(tmp_path / "JPEGImages" / "a.jpg"), img)
    xml = (
        "<annotation><object><name>WBC</name><bndbox><xmin>40</xmin><ymin>40</ymin><xmax>80</xmax>"
        "<ymax>80</ymax></bndbox></object><object><name>RBC</name><bndbox><xmin>100</xmin><ymin>100</ymin>"
        "<xmax>120</xmax><ymax>120</ymax></bndbox></object></annotation>"
    )
    (tmp_path / "Annotations" / "a.xml").write_text(xml)
    result = evaluate_segmentation(tmp_path)
    assert result["n_annotated"] == 1
    assert result["recall_iou50"] == 1.0 and result["precision_iou50"] == 1.0
