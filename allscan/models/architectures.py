"""The names of the architectures ``allscan train --arch`` can build, with a line each and the options they take.

Why a table apart from the builders: ``allscan --help`` and ``allscan train --help`` list the architectures, and the
CLI must not import torch to do it (``allscan run`` on a CPU never loads torch). The builders register themselves
under these names in :mod:`allscan.train.archs` (timm's ``register_model`` shape); a test checks the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

VIT_SHAPE = ("vit_dim", "vit_depth", "vit_heads")  # the --vit-* options a configurable ViT takes
# Their defaults (ViT-Tiny's shape, 16 px patches), declared once for the CLI and the builders.
VIT_DIM, VIT_DEPTH, VIT_HEADS, VIT_PATCH = 192, 12, 3, 16


@dataclass(frozen=True)
class ArchInfo:
    """One architecture: its ``--arch`` name, what it is, and which ``build()`` options (--vit-*, --conv-stem) apply."""

    name: str
    description: str
    options: tuple[str, ...] = ()


ARCHITECTURES: dict[str, ArchInfo] = {
    info.name: info
    for info in (
        ArchInfo(
            "vit", "small ViT, shape from --vit-*, head on the mean patch token", (*VIT_SHAPE, "vit_patch", "conv_stem")
        ),
        ArchInfo("vit_hybrid", "ResNet-18 stem + ViT encoder (--stem-from, --teacher)", VIT_SHAPE),
        ArchInfo("vit_ti_16", "ViT-Ti/16 (192 wide, 12 deep)", ("conv_stem",)),
        ArchInfo("vit_b_16", "ViT-B/16 (768 wide; torchvision weights with --pretrained)", ("conv_stem",)),
        ArchInfo("resnet18", "ResNet-18, CAM from its last feature map"),
        ArchInfo("resnet50", "ResNet-50, CAM from its last feature map"),
        ArchInfo("efficientnet_b0", "EfficientNet-B0, CAM from its last feature map"),
        ArchInfo("googlenet", "GoogLeNet, CAM from its last feature map"),
        ArchInfo("cnn", "the notebooks' 4-block CNN, fully convolutional"),
        ArchInfo("vgg16", "VGG16 with its ReLU MLP head, Grad-CAM as forward products"),
        ArchInfo("alexnet", "AlexNet with its ReLU MLP head, Grad-CAM as forward products"),
    )
}


def arch_names() -> tuple[str, ...]:
    """The ``--arch`` choices, in the table's order."""
    return tuple(ARCHITECTURES)


def arch_help() -> str:
    """``--arch`` help: every name with its line."""
    return "; ".join(f"{info.name}: {info.description}" for info in ARCHITECTURES.values())


def arch_options(name: str, given: dict[str, object]) -> dict[str, object]:
    """The subset of ``given`` (all --vit-* / --conv-stem values) that architecture ``name`` takes."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose from {', '.join(ARCHITECTURES)}")
    return {key: given[key] for key in ARCHITECTURES[name].options if key in given}
