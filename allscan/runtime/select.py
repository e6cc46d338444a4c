"""Backend choice: which runner serves a model on this machine, and why.

``auto`` takes TensorRT when the model's ``trt/`` folder holds an engine whose sidecar matches this GPU,
TensorRT version and model (and whose plan file is intact), else ONNX Runtime, with a one-line reason either
way. ``tensorrt`` without such an engine raises RunnerError naming the cause and the exact command that fixes
it. Nothing here imports TensorRT or a CUDA binding unless the model has engines or TensorRT was asked for."""

from __future__ import annotations

from dataclasses import dataclass

from allscan.models.store import StoredModel
from allscan.runtime.base import Runner, RunnerError
from allscan.runtime.onnxrt import OnnxRuntimeRunner
from allscan.runtime.sidecar import EngineStatus, engine_statuses, pick_engine

BACKENDS = ("auto", "tensorrt", "onnxruntime")


@dataclass(frozen=True)
class RunnerChoice:
    runner: Runner
    reason: str  # one line for the log: why this backend


def usable_engine(model: StoredModel, batch_size: int = 16) -> tuple[EngineStatus | None, str, str]:
    """(engine to run or None, one-line reason, the command that fixes it when None)."""
    from allscan.runtime.tensorrt import INSTALL_HINT, machine_info

    name = model.card.name
    build = f"allscan build-engine --model {name}"
    has_engines = model.trt_dir.is_dir() and any(p.suffix == ".json" for p in model.trt_dir.iterdir())
    machine = machine_info(with_tensorrt=has_engines)
    if machine.gpu_name is None:
        return (
            None,
            machine.device_problem,
            f"`{build}` on a machine with an NVIDIA GPU, or --backend onnxruntime",
        )
    if not has_engines:
        return None, f"no TensorRT engine built for model {name!r}", f"`{build}`"
    if machine.tensorrt_version is None:
        return None, machine.tensorrt_problem, f"{INSTALL_HINT}, then `{build}`"
    statuses = engine_statuses(model, machine)
    chosen = pick_engine(statuses, batch_size)
    if chosen is not None:
        return chosen, chosen.reason, ""
    reason = (
        statuses[0].reason if len(statuses) == 1 else f"{len(statuses)} engines, none usable ({statuses[0].reason})"
    )
    return None, reason, f"`{build}`"


def select_runner(model: StoredModel, backend: str = "auto", batch_size: int = 16) -> RunnerChoice:
    if backend not in BACKENDS:
        raise RunnerError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if backend == "onnxruntime":
        return RunnerChoice(
            OnnxRuntimeRunner(model.onnx_path, position_independent=True),
            "onnxruntime: requested with --backend onnxruntime",
        )
    engine, reason, fix = usable_engine(model, batch_size)
    if engine is not None and engine.sidecar is not None:
        from allscan.runtime.tensorrt import TensorRTRunner
        from allscan.runtime.trt_plan import EngineFromPlan

        loader = EngineFromPlan(engine.plan, engine.sidecar, model.card.name, model.card.onnx_sha256 or None)
        runner = TensorRTRunner(loader)
        return RunnerChoice(runner, f"tensorrt: {reason}")
    if backend == "tensorrt":
        raise RunnerError(f"no usable TensorRT engine for model {model.card.name!r}: {reason}; fix: {fix}")
    return RunnerChoice(OnnxRuntimeRunner(model.onnx_path, position_independent=True), f"onnxruntime: {reason}")
