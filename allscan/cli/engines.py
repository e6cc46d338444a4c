"""``allscan build-engine``, ``allscan doctor`` and ``allscan models``: TensorRT engines and what this machine
can do.

Every TensorRT / CUDA import happens inside a command, so ``import allscan.cli`` loads none of them (tested).
Refusals are one line on stderr with the cause and the remedy, and exit 2.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from allscan.cli import app
from allscan.models.store import ModelStoreError, StoredModel, list_models, load_model, store_root

REPO = Path(__file__).resolve().parents[2]
MAX_VALIDATION_INPUTS = 256
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


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


@app.command("build-engine")
def build_engine_cmd(
    model: str = typer.Option(None, "--model", "-m", help="Model to build an engine for."),
    all_models: bool = typer.Option(False, "--all", help="Build an engine for every model in the store."),
    max_batch: int = typer.Option(64, "--max-batch", help="Largest batch the engine accepts."),
    opt_batch: int = typer.Option(None, "--opt-batch", help="Batch size TensorRT tunes for (default 16)."),
    workspace_gb: float = typer.Option(4.0, "--workspace-gb", help="Builder workspace limit in GiB."),
    force: bool = typer.Option(False, "--force", help="Install the engine even if it fails the parity check."),
) -> None:
    """Compile a model into a TensorRT FP16 engine for this GPU, check it against ONNX Runtime, install it."""
    from allscan.runtime.engine_build import BuildOptions, EngineBuildError, build_engine, preflight

    if bool(model) == all_models:
        raise _fail("give either --model NAME or --all")
    try:
        preflight(model or "--all")
    except EngineBuildError as exc:
        raise _fail(str(exc), exc.exit_code) from None
    names = list_models() if all_models else [model]
    if not names:
        raise _fail(f"no models in {store_root()}")
    options = BuildOptions(max_batch=max_batch, opt_batch=opt_batch, workspace_gb=workspace_gb, force=force)
    worst = 0
    for name in names:
        try:
            stored = load_model(name)
            batches = functools.partial(validation_batches, stored)
            result = build_engine(stored, options, batches, log=typer.echo)
        except ModelStoreError as exc:
            raise _fail(str(exc)) from None
        except EngineBuildError as exc:
            raise _fail(str(exc), exc.exit_code) from None
        typer.echo(f"{name}: {result.message}")
        if not result.installed:
            worst = max(worst, 1)
    raise typer.Exit(worst)


@app.command("fp16-check", hidden=True)
def fp16_check_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Model whose FP16 ONNX to check."),
    images: list[Path] = typer.Option(None, "--images", help="Image files or folders (default: sample_images/)."),
    limit: int = typer.Option(0, "--limit", help="Evenly spaced subset of at most this many images (0: all)."),
) -> None:
    """FP16 ONNX vs FP32 on ONNX Runtime CPU: top-1 agreement and max |delta p| (no GPU needed)."""
    import tempfile

    from allscan.runtime.fp16 import compare_onnx, convert_fp16

    try:
        stored = load_model(model)
    except ModelStoreError as exc:
        raise _fail(str(exc)) from None
    files: list[Path] = []
    for item in images or []:
        files.extend(_image_files(item) if item.is_dir() else [item])
    files = files or validation_images(stored)
    if 1 < limit < len(files):
        files = [files[round(i * (len(files) - 1) / (limit - 1))] for i in range(limit)]
    batches = validation_batches(stored, 16, files)
    if not batches:
        raise _fail("no images to compare on")
    with tempfile.TemporaryDirectory() as tmp:
        fp16 = convert_fp16(stored.onnx_path, Path(tmp) / "model.fp16.onnx")
        parity = compare_onnx(stored.onnx_path, fp16, batches, stored.card.temperature)
    typer.echo(f"{model}: {len(files)} images, {parity.line()}, mean |dp| {parity.mean_abs_dp:.2e}")
    for note in parity.notes:
        typer.echo(f"  {note}")
    raise typer.Exit(0 if parity.passed else 1)


def _engines_cell(model: StoredModel, machine: Any) -> str:
    from allscan.runtime.sidecar import engine_statuses

    statuses = engine_statuses(model, machine)
    if not statuses:
        return "none built"
    lines = []
    for s in statuses:
        mark = "usable" if s.usable else "not usable"
        lines.append(f"{s.plan.name}: {mark} - {s.reason}" if not s.usable else f"{s.plan.name}: {mark}")
    return "\n".join(lines)


@app.command("doctor")
def doctor() -> None:
    """What this machine offers: GPUs, driver and CUDA, TensorRT, CUDA bindings, ONNX Runtime, usable
    engines."""
    from allscan.runtime.cuda import probe_cuda
    from allscan.runtime.tensorrt import INSTALL_HINT, machine_info, tensorrt_status

    console = Console(highlight=False, markup=False, soft_wrap=True)
    probe = probe_cuda(allow_nvidia_smi=True)
    if probe.devices:
        for gpu in probe.devices:
            console.print(
                f"GPU {gpu.index}: {gpu.name}, compute capability {gpu.cc}, "
                f"{gpu.total_memory / 2**30:.1f} GiB" + ("" if probe.usable else " (seen by nvidia-smi only)")
            )
    else:
        console.print(f"GPU: none ({probe.reason})")
    console.print(
        f"CUDA driver: {probe.driver_version or 'unknown'}, "
        f"CUDA runtime: {probe.runtime_version or 'unknown'}"
        f" (via {probe.source})"
    )
    console.print(f"CUDA bindings: {', '.join(probe.bindings) or 'none'} (pycuda preferred, cuda-python fallback)")
    for problem in probe.problems:
        console.print(f"  {problem}")
    version, problem = tensorrt_status()
    console.print(f"TensorRT: {version}" if version else f"TensorRT: none ({problem}; {INSTALL_HINT})")
    try:
        import onnxruntime as ort

        console.print(f"ONNX Runtime {ort.__version__}: {', '.join(ort.get_available_providers())}")
    except Exception as exc:  # noqa: BLE001 - doctor reports, never fails
        console.print(f"ONNX Runtime: not usable ({exc})")
    machine = machine_info(probe=probe)
    console.print(f"Models in {store_root()}:")
    names = list_models()
    if not names:
        console.print("  none")
    for name in names:
        try:
            stored = load_model(name, verify_hash=False)
        except ModelStoreError as exc:
            console.print(f"  {name}: {exc}")
            continue
        console.print(f"  {name}: " + _engines_cell(stored, machine).replace("\n", "\n    "))
    raise typer.Exit(0)


def _metric(metrics: dict[str, Any], *keys: str, field: str = "accuracy") -> str:
    """A card metric by the first of ``keys`` present; ``field`` may be a dotted path (``swap.swap_gap``)."""
    for key in keys:
        value: Any = metrics.get(key)
        for part in field.split("."):
            if not isinstance(value, dict):
                break
            value = value.get(part, value.get("acc") if part == "accuracy" else None)
        if isinstance(value, int | float):
            return f"{value:+.3f}" if field.endswith("gap") else f"{value:.3f}"
    return "-"


@app.command("models")
def models_cmd() -> None:
    """Models in the store, their card metrics, and the TensorRT engines built for this machine."""
    from allscan.runtime.tensorrt import machine_info

    console = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 200)  # logs: no wrap
    names = list_models()
    if not names:
        console.print(f"no models in {store_root()}")
        raise typer.Exit(0)
    machine = machine_info()
    table = Table(title=f"Models in {store_root()}")
    for column in (
        "model",
        "architecture",
        "input",
        "classes",
        "macro-F1 (blocked)",
        "macro-F1 (tail)",
        "swap gap",
        "ALL sensitivity",
        "engines",
    ):
        table.add_column(column)
    for name in names:
        try:
            stored = load_model(name, verify_hash=False)
        except ModelStoreError as exc:
            table.add_row(name, "-", "-", "-", "-", "-", "-", "-", str(exc))
            continue
        card = stored.card
        table.add_row(
            name,
            card.architecture,
            f"{card.input.size}px {card.input.mode} {card.input.colour}",
            ", ".join(card.classes),
            _metric(card.metrics, "blocked_test", "blocked", field="macro_f1"),
            _metric(card.metrics, "tail_test", field="macro_f1"),
            _metric(card.metrics, "blocked_test", "tail_test", field="swap.swap_gap"),
            _metric(card.metrics, "blocked_test", "tail_test", field="binary.sensitivity"),
            _engines_cell(stored, machine),
        )
    console.print(table)
    raise typer.Exit(0)
