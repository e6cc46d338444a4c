"""A card that disagrees with its ONNX ends the run with one line (exit 2) naming the model folder, before any image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pipeline_synth import make_slides
from tinymodel import build_tiny_onnx
from typer.testing import CliRunner

from allscan.cli import app
from allscan.models.card import sha256_file
from allscan.runtime.base import REQUIRED_OUTPUTS as RUNNER_OUTPUTS
from allscan.runtime.conformance import REQUIRED_OUTPUTS


def _edit_card(folder: Path, **changes: object) -> None:
    card = json.loads((folder / "card.json").read_text())
    card.update(changes)
    card["onnx_sha256"] = sha256_file(folder / "model.onnx")  # the hash matches: only the contents disagree
    (folder / "card.json").write_text(json.dumps(card))


def _run(tmp_path: Path) -> tuple[int, list[str]]:
    make_slides(tmp_path / "in", 2)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(tmp_path / "in"), "-m", "tiny", "-o", str(out), "-q"])
    assert not (out / "images.csv").exists() and not (out / ".allscan-journal.sqlite").exists()
    return result.exit_code, result.output.strip().splitlines()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"classes": ["Benign", "Early", "Pre"]}, "card.json lists 3 classes, the ONNX's logits has 4"),
        ({"classes": []}, "card.json lists no classes"),
        ({"outputs": ["logits"]}, "card.json outputs lack cam"),
        ({"outputs": ["logits", "cam", "ood", "features"]}, "the ONNX has no output features"),
    ],
)
def test_card_inconsistent_with_its_onnx_is_one_line_exit_2(
    tiny_store: Path, tmp_path: Path, change: dict[str, object], expected: str
) -> None:
    _edit_card(tiny_store / "tiny", **change)
    code, lines = _run(tmp_path)
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"allscan run: error: model folder {tiny_store / 'tiny'}: card.json does not match")
    assert expected in lines[0]


@pytest.mark.parametrize(
    ("onnx_args", "expected"),
    [
        ({"classes": ("a", "b", "c", "d", "e")}, "card.json lists 4 classes, the ONNX's logits has 5"),
        ({"size": 32, "pool": 8}, "card.json input.size is 64, the ONNX's input is 3x32x32"),
    ],
)
def test_another_models_onnx_with_the_hash_recomputed_is_refused(
    tiny_store: Path, tmp_path: Path, onnx_args: dict[str, object], expected: str
) -> None:
    build_tiny_onnx(tiny_store / "tiny" / "model.onnx", **onnx_args)  # type: ignore[arg-type]
    _edit_card(tiny_store / "tiny")
    code, lines = _run(tmp_path)
    assert code == 2 and len(lines) == 1, lines
    assert str(tiny_store / "tiny") in lines[0] and expected in lines[0]


def test_required_outputs_agree_with_the_runner() -> None:
    assert REQUIRED_OUTPUTS == RUNNER_OUTPUTS
