"""``allscan doctor``: what this machine offers: GPUs, driver and CUDA, TensorRT, CUDA bindings, ONNX Runtime,
and which engines in the store it can use. It reports, it never fails: exit 0.
"""

from __future__ import annotations

import typer
from rich.console import Console

from allscan.cli.models import engines_cell
from allscan.models.store import ModelStoreError, list_models, load_model, store_root


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
        console.print(f"  {name}: " + engines_cell(stored, machine).replace("\n", "\n    "))
    raise typer.Exit(0)
