"""``allscan train``: data -> split -> training -> calibration -> ONNX + card in the store."""

from __future__ import annotations

import datetime as dt
import json
import platform
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from allscan import __version__
from allscan.models.card import FlagThresholds, InputSpec, ModelCard
from allscan.models.store import save_model
from allscan.pipeline.segment import SegmentParams
from allscan.train import archs
from allscan.train.calibrate import Calibration, calibrate, forward_samples, raw_colour_gaussian
from allscan.train.data import cache_views, scan_class_folders, split_samples
from allscan.train.distill import Teacher, load_teacher
from allscan.train.export import export_onnx
from allscan.train.loop import TrainConfig, precise_batchnorm, run_training
from allscan.train.ood import ExportNet

CLASS_LABELS = {
    "Benign": "Benign (hematogones)",
    "Early": "Early Pre-B ALL",
    "Pre": "Pre-B ALL",
    "Pro": "Pro-B ALL",
}


def _load_data(config: TrainConfig, log: Callable[[str], None]) -> tuple[tuple[str, ...], dict]:
    """(classes, split parts) of the class folders; the split is logged."""
    classes, samples = scan_class_folders(config.data_dir)
    if config.limit_per_class:
        samples = [
            s for c in range(len(classes)) for s in [x for x in samples if x.label == c][: config.limit_per_class]
        ]
    parts = split_samples(samples, config.split, config.seed)
    log(
        f"{len(samples)} images, classes {', '.join(classes)}; {config.split} split: "
        + ", ".join(f"{k} {len(v)}" for k, v in parts.items())
    )
    return classes, parts


def _build_network(
    config: TrainConfig, classes: tuple[str, ...], checkpoint: Path, log: Callable[[str], None]
) -> nn.Module:
    """The architecture with its initial weights (``--seed``), the hybrid stem copied in when asked."""
    torch.manual_seed(config.seed)  # initial weights follow --seed too, not only the batch order
    net = archs.build(
        config.arch,
        len(classes),
        image_size=config.input.size,
        pretrained=config.pretrained,
        **config.arch_options,
    )
    if config.stem_from and not (config.resume and checkpoint.is_file()):
        copied = archs.load_stem(net, Path(config.out_root) / config.stem_from / "checkpoints" / "last.pt")
        log(f"hybrid stem: {copied} tensors from {config.stem_from}'s checkpoint")
    return net


def _write_split(folder: Path, config: TrainConfig, classes: tuple[str, ...], parts: dict) -> None:
    """split.json: which images trained, calibrated and test the model (evaluate and the audit read it)."""
    split = {
        "mode": config.split,
        "seed": config.seed,
        "data_dir": str(config.data_dir),
        **{k: sorted(f"{classes[s.label]}/{s.path.name}" for s in v) for k, v in parts.items()},
    }
    (folder / "split.json").write_text(json.dumps(split, indent=1) + "\n")


def _training_record(
    config: TrainConfig, parts: dict, history: dict, teacher: Teacher | None, parity: float, cal: Calibration
) -> dict:
    """The card's ``training`` section: data, command, config, split sizes, history, calibration, versions."""
    return {
        "data": "ALL image dataset (Aria et al., 2021, DOI 10.34740/KAGGLE/DSV/2175623), all-pbs copy",
        "command": f"allscan train {config.data_dir} --arch {config.arch} --name {config.name} ...",
        "config": config.to_json(),
        "split": {"mode": config.split, "seed": config.seed, **{k: len(v) for k, v in parts.items()}},
        "history": history,
        "pretrained": config.pretrained,
        "teacher": teacher.model_id if teacher else None,
        "onnx_parity_max_dp": parity,
        "calibration": {
            "accuracy": round(cal.calib_accuracy, 4),
            "flag_rate": round(cal.calib_flag_rate, 4),
            "ood": "max(feature Mahalanobis, colour Mahalanobis), each / its calib 95th percentile"
            + ("" if config.input.colour == "rgb" else "; colour from the raw image, in the pipeline"),
        },
        "environment": {"allscan": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }


def train_model(config: TrainConfig, log: Callable[[str], None] = print) -> Path:
    """Train, calibrate and export; returns the model's folder in the store."""
    torch.set_flush_denormal(True)  # denormal activations made eager CPU inference 30x slower (measurements.md)
    if config.threads:
        torch.set_num_threads(config.threads)
    params = SegmentParams()
    classes, parts = _load_data(config, log)
    train_views = cache_views(parts["train"], config.input, params)
    calib_views = cache_views(parts["calib"], config.input, params)
    for path, reason in train_views.failed + calib_views.failed:
        log(f"skipped {path}: {reason}")
    folder = Path(config.out_root) / config.name
    checkpoint = folder / "checkpoints" / "last.pt"
    net = _build_network(config, classes, checkpoint, log)
    teacher = None
    if config.teacher:
        teacher = load_teacher(config.teacher, config.input, classes, Path(config.out_root), config.threads)
        log(f"distilling from {teacher.model_id} (alpha {config.distill_alpha}, T {config.distill_temperature})")
    history = run_training(net, train_views, calib_views, config, checkpoint, log, teacher)
    if precise_batchnorm(net, train_views, config.input, max_images=2048):
        log("BatchNorm statistics re-estimated on unaugmented training views")
    log("calibrating on the calibration split through the inference preprocessing")
    fwd_train = forward_samples(net, parts["train"], config.input, params)
    fwd_calib = forward_samples(net, parts["calib"], config.input, params)
    cal = calibrate(config.input, fwd_train, fwd_calib)
    example = np.random.default_rng(0).normal(size=(4, 3, config.input.size, config.input.size))
    onnx_path = folder / "model.onnx"
    parity = export_onnx(ExportNet(net, cal.ood_module).eval(), onnx_path, config.input.size, example)
    _write_split(folder, config, classes, parts)
    card = ModelCard(
        name=config.name,
        architecture=config.arch,
        classes=classes,
        input=config.input,
        outputs=("logits", "cam", "ood"),
        heatmap_method=str(net.heatmap_method),
        temperature=round(cal.temperature, 4),
        flags=FlagThresholds(
            ood=round(cal.ood_threshold, 4), low_confidence=cal.low_confidence, colour=raw_colour_gaussian(cal)
        ),
        class_labels={c: CLASS_LABELS.get(c, c) for c in classes},
        training=_training_record(config, parts, history, teacher, parity, cal),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    save_model(card, Path(config.out_root))  # hashes model.onnx, writes card.json last
    log(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB), parity max |dp| {parity:.1e}")
    return folder


def with_input(config: TrainConfig, **changes) -> TrainConfig:
    return replace(config, input=replace(config.input, **changes))


def colour_input(size: int, mode: str, colour: str) -> InputSpec:
    """The input spec for ``--colour``: a grey lightness image is centred at 0.5 with its z-score's spread (40/255),
    colour keeps ImageNet's mean and std (so --pretrained weights see what they were trained on)."""
    if colour == "rgb":
        return InputSpec(size=size, mode=mode, colour=colour)
    return InputSpec(size=size, mode=mode, colour=colour, mean=(0.5, 0.5, 0.5), std=(0.157, 0.157, 0.157))
