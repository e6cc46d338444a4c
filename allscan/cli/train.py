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
from allscan.models.architectures import VIT_DEPTH, VIT_DIM, VIT_HEADS, VIT_PATCH, arch_options

TRAIN_MODULES = ("torch", "torchvision", "onnx")  # what train imports before its first epoch
# Options that are TrainConfig fields of the same name and pass through unchanged (tested against TrainConfig).
PASSED = (
    "data_dir",
    "name",
    "split",
    "seed",
    "epochs",
    "minutes",
    "batch_size",
    "lr",
    "stain_jitter",
    "pretrained",
    "resume",
    "threads",
    "swap_prob",
    "bf16",
    "teacher",
    "distill_alpha",
    "stem_from",
    "focus_weight",
    "init_from",
    "limit_per_class",
)
VIT_OPTIONS = ("vit_dim", "vit_depth", "vit_heads", "vit_patch", "conv_stem")  # the table says which arch takes which

Name = Annotated[str, typer.Option("--name", help="Model name in the store (engines/NAME).")]
Split = Annotated[
    str,
    typer.Option(
        "--split",
        help="blocked (held-out ranges of image numbers), tail (the highest-numbered 12 %% of each class) or random.",
    ),
]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the split, the initial weights and the batch order.")]
Size = Annotated[int, typer.Option("--size", help="Input side in pixels.")]
Mode = Annotated[str, typer.Option("--mode", help="Input mode: full, masked or cells.")]
Colour = Annotated[
    str, typer.Option("--colour", help="Model input colour: lightness (stain-free, per-image z-scored LAB L) or rgb.")
]
SwapProb = Annotated[
    float,
    typer.Option(
        "--swap-prob", help="Colour-free input: share of training views recoloured with a random donor's stain."
    ),
]
Teacher = Annotated[str | None, typer.Option("--teacher", help="Distil from this stored model's soft logits.")]
DistillAlpha = Annotated[float, typer.Option("--distill-alpha", help="Weight of the distillation loss (0-1).")]
StemFrom = Annotated[
    str | None,
    typer.Option("--stem-from", help="vit_hybrid: start the CNN stem from this stored resnet18's checkpoint."),
]
FocusWeight = Annotated[
    float,
    typer.Option(
        "--focus-weight",
        help="Evidence penalty: weight of the true class's heatmap share outside the segmented cells (0 = off).",
    ),
]
InitFrom = Annotated[
    str | None,
    typer.Option("--init-from", help="Start from this stored model's checkpoint (or a .pt file): a fine-tune."),
]
Epochs = Annotated[int, typer.Option("--epochs", help="Passes over the training split.")]
Minutes = Annotated[float | None, typer.Option("--minutes", help="Wall-clock budget (overrides --epochs).")]
Lr = Annotated[float, typer.Option("--lr", help="Peak learning rate (cosine schedule).")]
StainJitter = Annotated[float, typer.Option("--stain-jitter", help="Colour/stain augmentation strength (0 = off).")]
Pretrained = Annotated[bool, typer.Option("--pretrained", help="Start from torchvision's ImageNet weights.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from engines/NAME/checkpoints/last.pt.")]
Threads = Annotated[int | None, typer.Option("--threads", help="torch CPU threads (default: torch's).")]
Bf16 = Annotated[bool, typer.Option("--bf16/--no-bf16", help="bfloat16 autocast for training (CPU or GPU).")]
VitDim = Annotated[int, typer.Option("--vit-dim", help="ViT token width.")]
VitDepth = Annotated[int, typer.Option("--vit-depth", help="ViT encoder blocks.")]
VitHeads = Annotated[int, typer.Option("--vit-heads", help="ViT attention heads.")]
VitPatch = Annotated[int, typer.Option("--vit-patch", help="ViT patch side in pixels.")]
ConvStem = Annotated[bool, typer.Option("--conv-stem", help="ViT: convolutional stem instead of patchify.")]
LimitPerClass = Annotated[int | None, typer.Option("--limit-per-class", help="Use only N images per class.")]
Store = Annotated[Path | None, typer.Option("--store", help="Model store (default: engines/, or $ALLSCAN_ENGINES).")]


def _require_train_extra() -> None:
    """Refuse in one line, before any work, where the `train` extra is missing."""
    from allscan.extras import require

    with reported("train"):
        for module in TRAIN_MODULES:
            require(module, "train", "allscan train")


def train_command(
    data_dir: ClassFolders,
    *,
    arch: ArchOpt,
    name: Name,
    split: Split = "blocked",
    seed: Seed = 0,
    size: Size = 224,
    mode: Mode = "full",
    colour: Colour = "lightness",
    swap_prob: SwapProb = 0.8,
    teacher: Teacher = None,
    distill_alpha: DistillAlpha = 0.5,
    stem_from: StemFrom = None,
    focus_weight: FocusWeight = 0.0,
    init_from: InitFrom = None,
    epochs: Epochs = 30,
    minutes: Minutes = None,
    batch_size: BatchSize = 32,
    lr: Lr = 1e-3,
    stain_jitter: StainJitter = 1.0,
    pretrained: Pretrained = False,
    resume: Resume = False,
    threads: Threads = None,
    bf16: Bf16 = True,
    vit_dim: VitDim = VIT_DIM,
    vit_depth: VitDepth = VIT_DEPTH,
    vit_heads: VitHeads = VIT_HEADS,
    vit_patch: VitPatch = VIT_PATCH,
    conv_stem: ConvStem = False,
    limit_per_class: LimitPerClass = None,
    out_root: Store = None,
) -> None:
    """Train a model on class folders, calibrate it, and export model.onnx + card.json into the store."""
    given = dict(locals())  # the options by name, taken before anything else is bound in this function
    _require_train_extra()
    from allscan.models.store import store_root
    from allscan.train.loop import TrainConfig
    from allscan.train.pipeline import colour_input, train_model

    if pretrained:
        typer.echo("note: --pretrained downloads torchvision weights; this fails on a machine without internet")
    config = TrainConfig(
        **{key: given[key] for key in PASSED},
        arch=arch.value,
        out_root=out_root or store_root(),
        input=colour_input(size, mode, colour),
        arch_options=arch_options(arch.value, {key: given[key] for key in VIT_OPTIONS}),  # those the arch takes
    )
    try:
        with reported("train", usage=(ValueError, FileNotFoundError)):
            folder = train_model(config, log=lambda line: typer.echo(line))
    except OSError as exc:  # not FileNotFoundError: reported() turned that into exit 2 already
        if not pretrained:
            raise
        raise fail("train", f"cannot fetch pretrained weights (offline?): {exc}") from None
    typer.echo(f"model written to {folder}")
