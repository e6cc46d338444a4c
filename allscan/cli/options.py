"""The options several commands share, each declared once as an ``Annotated`` type.

Why: ``--model``, ``--backend``, ``--batch-size`` and ``--workers`` were declared in five commands with different
types, bounds and help, so ``allscan evaluate --backend cuda`` was accepted and ``--batch-size 0`` was not refused
everywhere. A command takes ``model: ModelName = DEFAULT_MODEL`` and gets the same flag, short name, check and
help as every other command. Nothing heavy is imported here: ``allscan --help`` reads these.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from allscan.models.architectures import arch_help, arch_names


class Backend(str, Enum):
    """Which runner does the inference."""

    auto = "auto"
    tensorrt = "tensorrt"
    onnxruntime = "onnxruntime"


class Heatmaps(str, Enum):
    """Which images get a heatmap PNG."""

    all = "all"
    flagged = "flagged"
    none = "none"


class Executor(str, Enum):
    """Where ``allscan run`` prepares and infers."""

    local = "local"
    ray = "ray"


# An Enum made from the architecture table, so that --arch lists and checks the same names train can build.
Arch = Enum("Arch", {name: name for name in arch_names()}, type=str)  # type: ignore[misc]


def _model_option() -> Any:
    return typer.Option("--model", "-m", help="Model name in the store (engines/; `allscan models` lists them).")


ModelName = Annotated[str, _model_option()]
MaybeModelName = Annotated[str | None, _model_option()]
BackendOpt = Annotated[
    Backend, typer.Option("--backend", help="auto: TensorRT when a usable engine exists, else ONNX Runtime.")
]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Images (model inputs) per batch.")]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=0,
        help="Decode/segment processes (default: CPU cores, none for runs of up to 64 images; 0: in this process).",
    ),
]
HeatmapsOpt = Annotated[
    Heatmaps, typer.Option("--heatmaps", help="Heatmap PNGs for all images, only flagged (non-Benign or any flag).")
]
Inputs = Annotated[
    list[Path],
    typer.Argument(
        metavar="INPUT...",
        help="Folders of slides (one sub-folder per slide; images lying directly in INPUT form a slide named "
        "after it) or single image files.",
        show_default=False,
    ),
]
ResultsOut = Annotated[
    Path, typer.Option("--out", "-o", help="Results folder: tables, heatmaps, report.html, run.json, journal.")
]
NoReport = Annotated[bool, typer.Option("--no-report", help="Do not write report.html.")]
ArchOpt = Annotated[Arch, typer.Option("--arch", help=f"Architecture. {arch_help()}.", show_choices=False)]
ClassFolders = Annotated[
    Path, typer.Argument(exists=True, file_okay=False, help="Folder of class folders (one per class, images inside).")
]
