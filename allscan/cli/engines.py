"""``allscan build-engine`` (and the hidden ``fp16-check``): TensorRT engines for this GPU, checked against ONNX
Runtime before they are installed.

Every TensorRT / CUDA import happens inside a command, so ``import allscan.cli`` loads none of them (tested).
Refusals are one line on stderr with the cause and the remedy, and exit 2 (1 when the built engine failed parity).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from allscan.cli.errors import fail, reported
from allscan.cli.options import MaybeModelName, ModelName
from allscan.models.store import StoredModel, list_models, load_model, store_root

if TYPE_CHECKING:
    import numpy as np

REPO = Path(__file__).resolve().parents[2]
MAX_VALIDATION_INPUTS = 256
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


def validation_images(model: StoredModel) -> list[Path]:
    """The card's ``training.validation_images`` (relative to the model folder), else ``sample_images/``."""
    listed = model.card.training.get("validation_images") if isinstance(model.card.training, dict) else None
    if listed:
        return [p if p.is_absolute() else model.folder / p for p in map(Path, listed)]
    root = REPO / "sample_images"
    return _image_files(root) if root.is_dir() else []


def _image_files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def validation_batches(model: StoredModel, batch_size: int, images: list[Path] | None = None) -> list[np.ndarray]:
    """Model inputs of the validation images, exactly as ``allscan run`` makes them, in batches.

    Without ``images``: the card's or ``sample_images/``, capped at MAX_VALIDATION_INPUTS inputs.
    """
    import numpy as np

    from allscan.io.images import ImageReadError, decode_image
    from allscan.pipeline.model_input import model_inputs
    from allscan.pipeline.segment import segment

    cap = MAX_VALIDATION_INPUTS if images is None else None
    inputs: list[np.ndarray] = []
    for path in validation_images(model) if images is None else images:
        try:
            bgr = decode_image(path).bgr
        except ImageReadError:
            continue
        inputs.extend(model_inputs(bgr, segment(bgr), model.card.input))
        if cap and len(inputs) >= cap:
            break
    inputs = inputs[:cap]
    return [np.stack(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]


def build_engine_cmd(
    *,
    model: MaybeModelName = None,
    all_models: Annotated[bool, typer.Option("--all", help="Build an engine for every model in the store.")] = False,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Largest batch the engine accepts.")] = 64,
    opt_batch: Annotated[
        int | None, typer.Option("--opt-batch", min=1, help="Batch size TensorRT tunes for (default 16).")
    ] = None,
    workspace_gb: Annotated[float, typer.Option("--workspace-gb", help="Builder workspace limit in GiB.")] = 4.0,
    force: Annotated[
        bool, typer.Option("--force", help="Install the engine even if it fails the parity check.")
    ] = False,
) -> None:
    """Compile a model into a TensorRT FP16 engine for this GPU, check it against ONNX Runtime, install it."""
    from allscan.runtime.engine_build import BuildOptions, build_engine, preflight

    if bool(model) == all_models:
        raise fail("build-engine", "give either --model NAME or --all")
    with reported("build-engine"):  # EngineBuildError carries its exit code (2 here, 1 when the build failed)
        preflight(model or "--all")
    names = list_models() if all_models else [model]
    if not names:
        raise fail("build-engine", f"no models in {store_root()}")
    options = BuildOptions(max_batch=max_batch, opt_batch=opt_batch, workspace_gb=workspace_gb, force=force)
    worst = 0
    for name in names:
        assert name is not None  # --model or --all, checked above
        with reported("build-engine"):
            stored = load_model(name)
            batches = functools.partial(validation_batches, stored)
            result = build_engine(stored, options, batches, log=typer.echo)
        typer.echo(f"{name}: {result.message}")
        if not result.installed:
            worst = max(worst, 1)
    raise typer.Exit(worst)


def fp16_check_cmd(
    *,
    model: ModelName,
    images: Annotated[
        list[Path] | None, typer.Option("--images", help="Image files or folders (default: sample_images/).")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=0, help="Evenly spaced subset of at most this many images (0: all).")
    ] = 0,
) -> None:
    """FP16 ONNX vs FP32 on ONNX Runtime CPU: top-1 agreement and max |delta p| (no GPU needed)."""
    import tempfile

    from allscan.runtime.fp16 import compare_onnx, convert_fp16

    with reported("fp16-check"):
        stored = load_model(model)
    files: list[Path] = []
    for item in images or []:
        files.extend(_image_files(item) if item.is_dir() else [item])
    files = files or validation_images(stored)
    if 1 < limit < len(files):
        files = [files[round(i * (len(files) - 1) / (limit - 1))] for i in range(limit)]
    batches = validation_batches(stored, 16, files)
    if not batches:
        raise fail("fp16-check", "no images to compare on")
    with tempfile.TemporaryDirectory() as tmp:
        fp16 = convert_fp16(stored.onnx_path, Path(tmp) / "model.fp16.onnx")
        parity = compare_onnx(stored.onnx_path, fp16, batches, stored.card.temperature)
    typer.echo(f"{model}: {len(files)} images, {parity.line()}, mean |dp| {parity.mean_abs_dp:.2e}")
    for note in parity.notes:
        typer.echo(f"  {note}")
    raise typer.Exit(0 if parity.passed else 1)
