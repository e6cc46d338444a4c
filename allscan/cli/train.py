"""``allscan train``: class folders -> a trained, calibrated model (model.onnx + card.json) in the store.

torch is the ``train`` extra: :func:`allscan.extras.require` refuses in one line before anything is read, and the
torch side (:mod:`allscan.train`) is imported only after that. ``--arch`` choices and help come from the
architecture table (:mod:`allscan.models.architectures`), so ``allscan train --help`` needs no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from allscan.cli.errors import fail, reported
from allscan.cli.options import ArchOpt, BatchSize, ClassFolders
from allscan.models.architectures import arch_options

TRAIN_MODULES = ("torch", "torchvision", "onnx")  # what train imports before its first epoch


def train_command(
    data_dir: ClassFolders,
    *,
    arch: ArchOpt,
    name: Annotated[str, typer.Option("--name", help="Model name in the store (engines/NAME).")],
    split: Annotated[
        str,
        typer.Option(
            "--split",
            help="blocked (held-out ranges of image numbers), tail (the highest-numbered 12 %% of each class) "
            "or random.",
        ),
    ] = "blocked",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    size: Annotated[int, typer.Option("--size", help="Input side in pixels.")] = 224,
    mode: Annotated[str, typer.Option("--mode", help="Input mode: full, masked or cells.")] = "full",
    colour: Annotated[
        str,
        typer.Option("--colour", help="Model input colour: lightness (stain-free, per-image z-scored LAB L) or rgb."),
    ] = "lightness",
    swap_prob: Annotated[
        float,
        typer.Option(
            "--swap-prob", help="Colour-free input: share of training views recoloured with a random donor's stain."
        ),
    ] = 0.8,
    teacher: Annotated[
        str | None, typer.Option("--teacher", help="Distil from this stored model's soft logits.")
    ] = None,
    distill_alpha: Annotated[
        float, typer.Option("--distill-alpha", help="Weight of the distillation loss (0-1).")
    ] = 0.5,
    stem_from: Annotated[
        str | None,
        typer.Option("--stem-from", help="vit_hybrid: start the CNN stem from this stored resnet18's checkpoint."),
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs")] = 30,
    minutes: Annotated[float | None, typer.Option("--minutes", help="Wall-clock budget (overrides --epochs).")] = None,
    batch_size: BatchSize = 32,
    lr: Annotated[float, typer.Option("--lr")] = 1e-3,
    stain_jitter: Annotated[
        float, typer.Option("--stain-jitter", help="Colour/stain augmentation strength (0 = off).")
    ] = 1.0,
    pretrained: Annotated[
        bool, typer.Option("--pretrained", help="Start from torchvision's ImageNet weights.")
    ] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from engines/NAME/checkpoints/last.pt.")] = False,
    threads: Annotated[int | None, typer.Option("--threads")] = None,
    bf16: Annotated[bool, typer.Option("--bf16/--no-bf16", help="bfloat16 autocast for training (CPU or GPU).")] = True,
    vit_dim: Annotated[int, typer.Option("--vit-dim")] = 192,
    vit_depth: Annotated[int, typer.Option("--vit-depth")] = 12,
    vit_heads: Annotated[int, typer.Option("--vit-heads")] = 3,
    vit_patch: Annotated[int, typer.Option("--vit-patch")] = 16,
    conv_stem: Annotated[
        bool, typer.Option("--conv-stem", help="ViT: convolutional stem instead of patchify.")
    ] = False,
    limit_per_class: Annotated[
        int | None, typer.Option("--limit-per-class", help="Use only N images per class.")
    ] = None,
    out_root: Annotated[Path | None, typer.Option("--store", help="Model store (default: engines/).")] = None,
) -> None:
    """Train a model on class folders, calibrate it, and export model.onnx + card.json into the store."""
    from allscan.extras import require
    from allscan.models.store import store_root

    with reported("train"):
        for module in TRAIN_MODULES:
            require(module, "train", "allscan train")
    from allscan.train.loop import TrainConfig
    from allscan.train.pipeline import colour_input, train_model

    if pretrained:
        typer.echo("note: --pretrained downloads torchvision weights; this fails on a machine without internet")
    given = {"vit_dim": vit_dim, "vit_depth": vit_depth, "vit_heads": vit_heads, "vit_patch": vit_patch}
    options = arch_options(arch.value, {**given, "conv_stem": conv_stem})  # only those this architecture takes
    config = TrainConfig(
        data_dir=data_dir,
        arch=arch.value,
        name=name,
        out_root=out_root or store_root(),
        split=split,
        seed=seed,
        epochs=epochs,
        minutes=minutes,
        batch_size=batch_size,
        lr=lr,
        stain_jitter=stain_jitter,
        pretrained=pretrained,
        resume=resume,
        threads=threads,
        input=colour_input(size, mode, colour),
        swap_prob=swap_prob,
        bf16=bf16,
        teacher=teacher,
        distill_alpha=distill_alpha,
        stem_from=stem_from,
        arch_options=options,
        limit_per_class=limit_per_class,
    )
    try:
        with reported("train", usage=(ValueError, FileNotFoundError)):
            folder = train_model(config, log=lambda line: typer.echo(line))
    except OSError as exc:  # not FileNotFoundError: reported() turned that into exit 2 already
        if not pretrained:
            raise
        raise fail("train", f"cannot fetch pretrained weights (offline?): {exc}") from None
    typer.echo(f"model written to {folder}")
