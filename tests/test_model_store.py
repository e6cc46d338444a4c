"""The model store: strict cards (unknown or missing keys refused in one line naming the file), writing a model
into a store, the store root from a wheel, and the architecture registry agreeing with the CLI's name table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from allscan.models import store
from allscan.models.architectures import ARCHITECTURES, arch_options
from allscan.models.card import CardError, read_card
from allscan.models.store import ModelStoreError, list_models, load_model, save_model

REPO = Path(__file__).resolve().parents[1]


def test_shipped_cards_load_strictly() -> None:
    names = list_models(REPO / "engines")
    assert "vit" in names and len(names) >= 2
    for name in names:
        model = load_model(name, root=REPO / "engines")  # sha256 checked too
        assert model.card.name == name and model.card.classes


def _edited(tiny_store: Path, edit: object) -> Path:
    path = tiny_store / "tiny" / "card.json"
    data = json.loads(path.read_text())
    edit(data)  # type: ignore[operator]
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda d: d.update(temprature=1.0), "unknown key temprature"),
        (lambda d: d["input"].update(sise=64), "unknown key input.sise"),
        (lambda d: d["flags"].update(low_confidense=0.5), "unknown key flags.low_confidense"),
        (lambda d: d.pop("classes"), "missing required key classes"),
        (lambda d: d.pop("name") and d.pop("architecture"), "missing required keys name, architecture"),
        (lambda d: d.update(input=[]), "input must be a JSON object"),
        (lambda d: d["input"].update(mode="crops"), "input.mode must be one of"),
    ],
)
def test_card_problems_are_one_line_naming_the_file(tiny_store: Path, edit: object, says: str) -> None:
    path = _edited(tiny_store, edit)
    with pytest.raises(ModelStoreError) as refused:
        load_model("tiny")
    line = str(refused.value)
    assert "\n" not in line and line.startswith(f"{path}: unreadable model card: ") and says in line


def test_broken_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    path.write_text("{not json")
    with pytest.raises(CardError, match=f"^{path}: unreadable model card: Expecting property name"):
        read_card(path)


def test_save_model_copies_hashes_and_writes_the_card_last(tiny_store: Path, tmp_path: Path) -> None:
    source = load_model("tiny")
    other = tmp_path / "other"
    card = source.card.__class__(**{**source.card.__dict__, "name": "copy", "onnx_sha256": "stale"})
    saved = save_model(card, other, onnx=source.onnx_path)
    assert saved.folder == other / "copy" and saved.onnx_path.read_bytes() == source.onnx_path.read_bytes()
    assert saved.card.onnx_sha256 == source.card.onnx_sha256  # recomputed from the stored file, not trusted
    assert load_model("copy", root=other).card == saved.card
    assert sorted(p.name for p in saved.folder.iterdir()) == ["card.json", "model.onnx"]  # no temporary left
    again = save_model(saved.card, other)  # the ONNX already in place (as train writes it)
    assert again.card == saved.card
    for bad in ("../x", ".hidden", "a/b", ""):
        with pytest.raises(ModelStoreError, match="invalid model name"):
            save_model(card.__class__(**{**card.__dict__, "name": bad}), other, onnx=source.onnx_path)
    with pytest.raises(ModelStoreError, match="model file missing"):
        save_model(card.__class__(**{**card.__dict__, "name": "none"}), other)
    assert not (other / "none" / "card.json").exists()


def test_store_root_env_then_wheel_then_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALLSCAN_ENGINES", raising=False)
    assert store.store_root() == REPO / "engines"  # editable install: the checkout's engines/
    installed = tmp_path / "site-packages" / "allscan"
    (installed / "engines" / "vit").mkdir(parents=True)
    monkeypatch.setattr(store, "PACKAGE", installed)
    assert store.store_root() == installed / "engines"  # a wheel: package data next to the code
    monkeypatch.setenv("ALLSCAN_ENGINES", str(tmp_path / "mine"))
    assert store.store_root() == tmp_path / "mine"


def test_arch_options_follow_the_table() -> None:
    given = {"vit_dim": 64, "vit_depth": 2, "vit_heads": 2, "vit_patch": 8, "conv_stem": True}
    assert arch_options("vit", given) == given
    assert arch_options("vit_hybrid", given) == {"vit_dim": 64, "vit_depth": 2, "vit_heads": 2}
    assert arch_options("vit_b_16", given) == {"conv_stem": True}
    assert arch_options("resnet18", given) == {}
    with pytest.raises(ValueError, match="unknown architecture 'lenet'"):
        arch_options("lenet", given)


def test_registry_matches_the_name_table() -> None:
    pytest.importorskip("torch")
    from allscan.train import archs

    assert archs.registered() == tuple(ARCHITECTURES) == archs.ARCHS
    with pytest.raises(ValueError, match="not in allscan.models.architectures"):
        archs.register_model("lenet")(lambda a: None)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="registered twice"):
        archs.register_model("cnn")(lambda a: None)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="unknown architecture 'lenet'"):
        archs.build("lenet", 4)
    net = archs.build("cnn", 3, image_size=32)
    assert isinstance(net, archs.GapNet) and net.head.out_features == 3
