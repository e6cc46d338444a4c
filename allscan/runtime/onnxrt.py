"""ONNX Runtime runner: the reference backend, on any machine."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from allscan.runtime.base import Runner, RunnerError


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"
    precision = "fp32"

    def __init__(self, onnx_path: Path, threads: int | None = None, providers: list[str] | None = None) -> None:
        super().__init__()
        self.onnx_path = Path(onnx_path)
        self.threads = threads
        self.providers = providers or ["CPUExecutionProvider"]
        self.session = None
        self.output_names: list[str] = []
        self.input_name = "image"

    def activate_impl(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads or (os.cpu_count() or 1)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle ORT threads otherwise spin and take the cores that decode/segment workers need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.onnx_path), options, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RunnerError(f"{self.onnx_path}: ONNX Runtime cannot load the model: {first}") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def infer_impl(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        assert self.session is not None
        values = self.session.run(self.output_names, {self.input_name: batch})
        return dict(zip(self.output_names, values, strict=True))

    def deactivate_impl(self) -> None:
        self.session = None
