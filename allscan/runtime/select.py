"""Backend choice: which runner serves a model on this machine, and why.

``auto`` prefers a usable TensorRT engine for this GPU and falls back to ONNX Runtime with a one-line reason.
The TensorRT side is filled in by the TensorRT issue; until then ``auto`` always reports why it used ONNX Runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

from allscan.models.store import StoredModel
from allscan.runtime.base import Runner, RunnerError
from allscan.runtime.onnxrt import OnnxRuntimeRunner

BACKENDS = ("auto", "tensorrt", "onnxruntime")


@dataclass(frozen=True)
class RunnerChoice:
    runner: Runner
    reason: str  # one line for the log: why this backend


def select_runner(model: StoredModel, backend: str = "auto", batch_size: int = 16) -> RunnerChoice:
    if backend not in BACKENDS:
        raise RunnerError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if backend in ("auto", "tensorrt"):
        if backend == "tensorrt":
            raise RunnerError(
                f"no usable TensorRT engine for model {model.card.name!r}: TensorRT support is not installed; "
                f"run `allscan build-engine --model {model.card.name}` on a GPU machine"
            )
        return RunnerChoice(OnnxRuntimeRunner(model.onnx_path), "onnxruntime: TensorRT support not available")
    return RunnerChoice(OnnxRuntimeRunner(model.onnx_path), "onnxruntime: requested with --backend onnxruntime")
