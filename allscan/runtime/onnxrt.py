"""ONNX Runtime runner: the reference backend, on any machine.

ONNX Runtime's CPU kernels round a row's result differently depending on its position in the batch (measured on
the shipped ViT: the heatmap of one image differs in ~150 of its 4,096 values between positions 0-3 of a batch,
and the ``ood`` score in its last digits). A table must not depend on ``--batch-size``, on the order images arrive
in or on where an interrupted run resumed, so ``allscan run`` asks for ``position_independent`` runs: every row
is computed on its own (a batch of one), which costs about 10 % of inference throughput on 2 cores.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from allscan.runtime.base import Runner, RunnerError


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"
    precision = "fp32"

    def __init__(
        self,
        onnx_path: Path,
        threads: int | None = None,
        providers: list[str] | None = None,
        position_independent: bool = False,
    ) -> None:
        super().__init__()
        self.position_independent = position_independent  # each row alone: bit-identical whatever the batch
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
        if not self.position_independent or len(batch) == 1:
            values = self.session.run(self.output_names, {self.input_name: batch})
            return dict(zip(self.output_names, values, strict=True))
        rows = [self.session.run(self.output_names, {self.input_name: batch[i : i + 1]}) for i in range(len(batch))]
        return {name: np.concatenate([r[k] for r in rows]) for k, name in enumerate(self.output_names)}

    def deactivate_impl(self) -> None:
        self.session = None
