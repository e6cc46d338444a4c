"""One short training run per architecture family into a temporary store, then the exported model's contract.

Each run: ``allscan train`` on a tiny class-folder data set (6 images per class, 1 epoch, small inputs) ->
``model.onnx`` + ``card.json``; checks: the card's classes and outputs, ONNX Runtime vs torch parity recorded
at export, a dynamic batch (batch 3 gives the same rows as three batch-1 runs), CAM consistency, and the ``ood``
output's monotonicity (a strongly colour-shifted image scores higher than its original).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
ort = pytest.importorskip("onnxruntime")

import cv2  # noqa: E402

from allscan.io.images import decode_image  # noqa: E402
from allscan.models.card import InputSpec  # noqa: E402
from allscan.models.store import load_model  # noqa: E402
from allscan.pipeline.model_input import model_inputs  # noqa: E402
from allscan.pipeline.segment import SegmentParams, segment  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("Benign", "Early", "Pre", "Pro")
PER_CLASS = 6
SOURCES = (REPO.parent / "shared" / "datasets" / "all-pbs", Path("/work/shared/datasets/all-pbs"))


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _synthetic_image(label: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """BGR 224 px smear-like picture: pale pink field, a few salmon red cells, one violet 'white cell' whose
    size and shade depend on the class."""
    img = np.empty((224, 224, 3), np.uint8)
    img[:] = (215, 200, 235)  # BGR, pale pink
    for _ in range(6):
        c = tuple(int(v) for v in rng.integers(20, 204, size=2))
        cv2.circle(img, c, 14, (150, 150, 230), -1)
    radius = 22 + 8 * label + k % 3
    centre = tuple(int(v) for v in rng.integers(60, 164, size=2))
    cv2.circle(img, centre, radius, (170 - 20 * label, 40, 110 + 20 * label), -1)
    return img


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 images per class: spread over the public data set when it is beside the checkout, else synthetic."""
    root = tmp_path_factory.mktemp("tiny_data")
    source = next((s for s in SOURCES if all((s / c).is_dir() for c in CLASSES)), None)
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir()
        files = sorted((source / name).glob("*.jpg")) if source else []
        if len(files) >= PER_CLASS:
            for f in files[:: len(files) // PER_CLASS][:PER_CLASS]:
                shutil.copy(f, root / name / f.name)
        else:
            for k in range(PER_CLASS):
                cv2.imwrite(str(root / name / f"{name}-{k + 1:03d}.png"), _synthetic_image(label, k, rng))
    return root


def _colour_shift(bgr: np.ndarray, kind: str) -> np.ndarray:
    if kind == "swap_rg":
        return np.ascontiguousarray(bgr[:, :, [0, 2, 1]])
    cast = bgr.astype(np.int16) + np.array([-40, 90, -40], np.int16)  # strong green cast
    return np.clip(cast, 0, 255).astype(np.uint8)


def _model_batch(paths: list[Path], spec: InputSpec, shift: str | None = None) -> np.ndarray:
    """The inference path's own inputs; ``shift`` recolours the pixels but keeps the original cell mask."""
    out = []
    for path in paths:
        bgr = decode_image(path).bgr
        seg = segment(bgr, SegmentParams())
        x = model_inputs(bgr if shift is None else _colour_shift(bgr, shift), seg, spec)
        out.append(x[:1])
    return np.concatenate(out).astype(np.float32)


def _check_store_model(folder: Path, data: Path, arch: str, gap: bool, colour_free: bool = False) -> None:
    model = load_model(folder.name, root=folder.parent)  # also checks model.onnx's sha256 against the card
    card = model.card
    assert card.classes == CLASSES
    assert card.architecture == arch
    assert card.outputs == ("logits", "cam", "ood")
    parity = card.training["onnx_parity_max_dp"]
    assert 0.0 <= parity <= 1e-4
    assert card.flags.ood is not None and card.flags.ood > 0
    session = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "cam", "ood"]
    assert not isinstance(session.get_inputs()[0].shape[0], int), "batch dimension is not dynamic"

    images = [sorted((data / c).iterdir())[0] for c in CLASSES]
    x = _model_batch(images[:3], card.input)
    logits, cam, ood = session.run(None, {"image": x})
    assert logits.shape == (3, len(CLASSES)) and ood.shape == (3,)
    assert cam.shape[:2] == (3, len(CLASSES)) and min(cam.shape[2:]) >= 1
    singles = [session.run(None, {"image": x[i : i + 1]}) for i in range(3)]
    np.testing.assert_allclose(np.concatenate([s[0] for s in singles]), logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.concatenate([s[1] for s in singles]), cam, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.concatenate([s[2] for s in singles]), ood, rtol=1e-4, atol=1e-4)
    if gap:  # CAM form: logits are the spatial mean of the class maps
        np.testing.assert_allclose(cam.mean(axis=(2, 3)), logits, rtol=1e-4, atol=1e-4)

    if colour_free:  # colour never reaches the graph; _check_colour_flag checks the pipeline's colour distance
        return
    base = session.run(["ood"], {"image": _model_batch(images, card.input)})[0]
    for shift in ("swap_rg", "green_cast"):
        shifted = session.run(["ood"], {"image": _model_batch(images, card.input, shift)})[0]
        assert np.all(np.isfinite(shifted)) and np.all(np.isfinite(base))
        assert shifted.mean() > base.mean(), (shift, base, shifted)
        assert shifted.mean() > card.flags.ood, (shift, shifted, card.flags.ood)


TINY_VIT = {"vit_dim": 32, "vit_depth": 1, "vit_heads": 2, "vit_patch": 8, "conv_stem": True}

CASES: dict[str, tuple[str, int, dict]] = {
    # name: (arch, input size, arch options)
    "resnet18": ("resnet18", 64, {}),
    "efficientnet_b0": ("efficientnet_b0", 64, {}),
    "googlenet": ("googlenet", 64, {}),
    "vit": ("vit", 64, TINY_VIT),
    "alexnet": ("alexnet", 128, {}),  # 3x3 feature map: exercises the exportable adaptive pool
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_train_export_contract(case: str, tiny_data: Path, tmp_path: Path) -> None:
    from allscan.train.loop import TrainConfig
    from allscan.train.pipeline import train_model

    arch, size, options = CASES[case]
    config = TrainConfig(
        data_dir=tiny_data,
        arch=arch,
        name=case,
        out_root=tmp_path / "engines",
        split="random",
        epochs=1,
        batch_size=8,
        threads=1,
        input=InputSpec(size=size, mode="masked"),
        arch_options=options,
        limit_per_class=PER_CLASS,
    )
    folder = train_model(config, log=lambda _line: None)
    assert (folder / "model.onnx").is_file() and (folder / "card.json").is_file()
    assert (folder / "checkpoints" / "last.pt").is_file()
    # GAP form (logits = spatial mean of the maps) for the CNNs; the ViT's map is rollout-propagated (its token
    # CAM has the GAP form, tested in test_heatmaps.py) and VGG/AlexNet's is the analytic Grad-CAM.
    _check_store_model(folder, tiny_data, arch, gap=arch not in ("vgg16", "alexnet", "vit"))
    card = load_model(case, root=folder.parent).card
    expected = "token CAM propagated" if arch == "vit" else "grad-cam" if arch == "alexnet" else "cam"
    assert card.heatmap_method.startswith(expected)


@pytest.mark.slow
def test_train_cli_cnn(tiny_data: Path, tmp_path: Path) -> None:
    """The baseline CNN through ``allscan train`` itself (typer's CliRunner), into ``--store``."""
    from typer.testing import CliRunner

    from allscan.cli import app

    store = tmp_path / "engines"
    args = [
        "train", str(tiny_data), "--arch", "cnn", "--name", "cnn", "--size", "64", "--mode", "masked",
        "--epochs", "1", "--batch-size", "8", "--split", "random", "--threads", "1",
        "--limit-per-class", str(PER_CLASS), "--store", str(store),
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "model written to" in result.output
    _check_store_model(store / "cnn", tiny_data, "cnn", gap=True, colour_free=True)  # the CLI's default input
    _check_colour_flag(store / "cnn", tiny_data)


@pytest.mark.slow
def test_vgg16_exports_at_224(tmp_path: Path) -> None:
    """VGG16 is too heavy to train in CI; its graph (analytic Grad-CAM, identity pool at 224) must still
    export with ``ood``, keep ORT/torch parity, and run at two batch sizes."""
    from allscan.train.export import export_onnx
    from allscan.train.mlp_head import build_mlp_head_net
    from allscan.train.ood import ExportNet, OodScore

    torch.manual_seed(0)
    spec = InputSpec(size=224, mode="full")
    net = build_mlp_head_net("vgg16", len(CLASSES), pretrained=False).eval()
    ood = OodScore(spec, np.zeros((1, 512), np.float32), np.eye(512, dtype=np.float32) * 1e-2,
                   np.zeros((1, 6), np.float32), np.eye(6, dtype=np.float32), 1.0, 1.0)  # fmt: skip
    export = ExportNet(net, ood).eval()
    path = tmp_path / "vgg16" / "model.onnx"
    x = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)
    try:
        parity = export_onnx(export, path, 224, x)
        assert parity <= 1e-4
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [o.name for o in session.get_outputs()] == ["logits", "cam", "ood"]
        logits, cam, score = session.run(None, {"image": x})
        assert logits.shape == (1, 4) and cam.shape == (1, 4, 7, 7) and score.shape == (1,)
        with torch.no_grad():
            t_logits, t_cam, t_ood = export(torch.from_numpy(x))
        scale = float(t_cam.abs().max())
        np.testing.assert_allclose(cam, t_cam.numpy(), rtol=1e-3, atol=1e-4 * scale)
        np.testing.assert_allclose(score, t_ood.numpy(), rtol=1e-4)
        x2 = np.concatenate([x, x[:, :, ::-1].copy()])
        logits2, cam2, _ = session.run(None, {"image": x2})
        assert logits2.shape == (2, 4) and cam2.shape == (2, 4, 7, 7)
        np.testing.assert_allclose(logits2[:1], logits, rtol=1e-4, atol=1e-5)
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)  # ~0.5 GB; do not leave it to pytest's tmp retention


def _check_colour_flag(folder: Path, data: Path) -> None:
    """A colour-free model's graph never sees colour: its card's raw-colour Gaussian flags a foreign stain."""
    from allscan.pipeline.colour import colour_distance, colour_statistics

    card = load_model(folder.name, root=folder.parent).card
    assert card.input.colour == "lightness" and card.flags.colour is not None
    images = [decode_image(sorted((data / c).iterdir())[0]).bgr for c in CLASSES]
    home = [colour_distance(colour_statistics(b), card.flags.colour) for b in images]
    for shift in ("swap_rg", "green_cast"):
        away = [colour_distance(colour_statistics(_colour_shift(b, shift)), card.flags.colour) for b in images]
        assert np.mean(away) > max(np.mean(home), card.flags.ood), (shift, home, away)


@pytest.mark.slow
def test_distil_hybrid_vit_from_a_stored_teacher(tiny_data: Path, tmp_path: Path) -> None:
    """``--teacher`` and ``--stem-from`` on a tiny subset: a colour-free ResNet-18 teaches a hybrid ViT."""
    from allscan.train import archs
    from allscan.train.distill import distillation_loss
    from allscan.train.loop import TrainConfig
    from allscan.train.pipeline import colour_input, train_model

    store = tmp_path / "engines"
    common = dict(
        data_dir=tiny_data, out_root=store, split="tail", epochs=1, batch_size=8, threads=1,
        input=colour_input(64, "full", "lightness"), limit_per_class=PER_CLASS,
    )  # fmt: skip
    teacher = train_model(TrainConfig(arch="resnet18", name="teacher", **common), log=lambda _line: None)
    _check_colour_flag(teacher, tiny_data)
    lines: list[str] = []
    options = {"vit_dim": 32, "vit_depth": 1, "vit_heads": 2}
    config = TrainConfig(
        arch="vit_hybrid", name="student", teacher="teacher", stem_from="teacher", arch_options=options, **common
    )
    student = train_model(config, log=lines.append)
    assert any(line.startswith("distilling from teacher@") for line in lines), lines
    assert any("hybrid stem:" in line for line in lines), lines
    card = load_model("student", root=store).card
    assert card.training["teacher"] == load_model("teacher", root=store).card.model_id
    assert card.heatmap_method.startswith("token CAM propagated")
    _check_store_model(student, tiny_data, "vit_hybrid", gap=False, colour_free=True)
    _check_colour_flag(student, tiny_data)

    fresh = archs.build("vit_hybrid", len(CLASSES), image_size=64, **options)
    assert archs.load_stem(fresh, teacher / "checkpoints" / "last.pt") > 0
    saved = torch.load(teacher / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert torch.equal(fresh.backbone.vit.conv_proj[0].weight, saved["backbone.layers.0.weight"])
    z = torch.randn(5, 4)
    assert float(distillation_loss(z, z)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(z, -z)) > 0.1

    wrong = TrainConfig(arch="resnet18", name="x", teacher="teacher", **{**common, "input": InputSpec(size=64)})
    with pytest.raises(ValueError, match="sees another input"):
        train_model(wrong, log=lambda _line: None)


# --- the evidence penalty (allscan.train.focus) and --init-from ------------------------------------------------


def _disc_views(n: int, size: int = 64, seed: int = 0):
    """CachedViews of noisy fields with one bright disc each, the disc as the cell mask; labels alternate."""
    from allscan.train.data import CachedViews

    rng = np.random.default_rng(seed)
    images = rng.integers(60, 120, size=(n, size, size, 3)).astype(np.uint8)
    cells = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        centre = tuple(int(v) for v in rng.integers(14, size - 14, size=2))
        cv2.circle(cells[i], centre, 9 + 3 * (i % 2), 1, -1)
        images[i][cells[i] > 0] = (230, 230, 230) if i % 2 else (200, 200, 200)
    return CachedViews(
        images=images,
        masks=np.ones((n, size, size), np.uint8),
        labels=np.arange(n, dtype=np.int64) % 2,
        image_index=np.arange(n, dtype=np.int64),
        colour_stats=np.full((n, 6), np.nan),
        failed=[],
        cells=cells,
    )


def test_focus_penalty_zero_inside_one_outside_and_differentiable() -> None:
    from allscan.train.focus import focus_penalty, outside_share

    cells = torch.zeros(2, 1, 64, 64)
    cells[:, :, 16:40, 8:32] = 1  # exactly CAM cells (2-4, 1-3) of an 8 x 8 map
    cam = torch.zeros(2, 3, 8, 8)
    cam[0, 1, 2:5, 1:4] = torch.rand(3, 3) + 0.5  # class 1's energy all on the cell
    cam[1, 2, 6:, 5:] = 1.0  # class 2's energy all off it
    cam[:, 0] = 5.0  # another class's energy does not count
    labels = torch.tensor([1, 2])
    share = outside_share(cam, labels, cells)
    assert float(share[0]) == 0.0 and float(share[1]) == pytest.approx(1.0)
    free = torch.randn(2, 3, 8, 8, requires_grad=True)
    focus_penalty(free, labels, cells).backward()
    assert free.grad is not None and torch.isfinite(free.grad).all() and free.grad.abs().sum() > 0
    assert float(focus_penalty(cam, labels, torch.zeros_like(cells))) == 0.0  # no cells, no target


def test_cell_masks_move_with_their_images() -> None:
    """Crops, turns and flips move the cell mask exactly as the image (the disc stays under its mask)."""
    from allscan.train.loop import batch_with_cells

    views = _disc_views(8)
    spec = InputSpec(size=64, colour="rgb", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    x, cells = batch_with_cells(views, np.arange(8), spec, np.random.default_rng(3), 0.0)
    assert cells is not None and cells.shape == (8, 1, 64, 64)
    bright = x.mean(dim=1, keepdim=True) > 0.6
    assert float((bright == (cells > 0.5)).float().mean()) > 0.97
    assert int(cells.sum()) > 0


def test_focus_penalty_steps_raise_in_cell_share() -> None:
    """A few steps with the penalty move the true class's map onto the cells (measured on unaugmented views)."""
    from allscan.train import archs
    from allscan.train.focus import outside_share
    from allscan.train.loop import TrainConfig, batch_with_cells, train_step

    torch.manual_seed(0)
    views = _disc_views(16)
    spec = InputSpec(size=64, colour="rgb")
    net = archs.build("cnn", 2, image_size=64)
    config = TrainConfig(Path("."), "cnn", "t", Path("."), input=spec, focus_weight=5.0, bf16=False)
    loss_fn = torch.nn.CrossEntropyLoss()
    labels = torch.from_numpy(views.labels)

    def inside_share() -> float:
        net.eval()
        with torch.no_grad():
            x, cells = batch_with_cells(views, np.arange(16), spec, None, 0.0)
            return float(1 - outside_share(net(x)[1], labels, cells).mean())

    before = inside_share()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    rng = np.random.default_rng(0)
    for _ in range(12):
        net.train()
        x, cells = batch_with_cells(views, np.arange(16), spec, rng, 0.0)
        _, loss, penalty = train_step(net, (x, labels, cells), loss_fn, config, None)
        assert 0.0 <= penalty <= 1.0
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = inside_share()
    assert after > before + 0.15, (before, after)


def test_init_from_loads_weights_and_refuses_another_arch(tmp_path: Path) -> None:
    from allscan.train import archs
    from allscan.train.loop import TrainConfig, init_weights

    source = archs.build("cnn", 2, image_size=64)
    path = tmp_path / "start.pt"
    torch.save({"model": source.state_dict()}, path)
    target = archs.build("cnn", 2, image_size=64)
    config = TrainConfig(tmp_path, "cnn", "t", tmp_path, init_from=str(path))
    assert init_weights(target, config, log=lambda _line: None) == {"checkpoint": str(path), "epochs_before": 0}
    for a, b in zip(source.state_dict().values(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="do not fit --arch"):
        init_weights(archs.build("cnn", 3, image_size=64), config, log=lambda _line: None)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        init_weights(target, TrainConfig(tmp_path, "cnn", "t", tmp_path, init_from="absent"), log=print)


def test_cached_cell_masks_are_the_grown_segmentation() -> None:
    """The training cache carries each view's white-cell mask: the HSV segmentation, grown, at the view's size."""
    from allscan.train.data import Sample, cache_views
    from allscan.train.pipeline import colour_input

    paths = sorted((REPO / "sample_images").rglob("*.jpg"))[:2]
    spec = colour_input(224, "full", "lightness")
    views = cache_views([Sample(p, 0, i) for i, p in enumerate(paths)], spec, SegmentParams())
    assert views.cells is not None and views.cells.shape == (2, 224, 224)
    for i, path in enumerate(paths):
        bgr = decode_image(path).bgr
        assert bgr.shape[:2] == (224, 224)
        raw = segment(bgr, SegmentParams()).mask
        assert raw.any() and np.all(views.cells[i][raw > 0] == 1)  # every segmented pixel is in the mask
        assert 1.1 * raw.sum() < views.cells[i].sum() < 3 * raw.sum()  # grown by a rim, not flooded
