"""ONNX Runtime: the one session factory, and the reference runner on any machine.

ONNX Runtime's CPU kernels round a row's result differently depending on its position in the batch (measured on
the shipped ViT: the heatmap of one image differs in ~150 of its 4,096 values between positions 0-3 of a batch,
and the ``ood`` score in its last digits). A table must not depend on ``--batch-size``, on the order images arrive
in or on where an interrupted run resumed, so ``allscan run`` asks for ``position_independent`` runs: every row
is computed on its own (a batch of one), which costs about 10 % of inference throughput on 2 cores.

``infer_many`` computes batch k on one background thread (ONNX Runtime releases the GIL) while the caller
prepares batch k+1 and finishes batch k-1: the same double buffering the TensorRT runner does on the GPU. The
numbers are those of ``infer``: the same session runs the same rows, only on another thread.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from allscan.runtime.base import Runner, RunnerError

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def ort_session(
    onnx_path: Path,
    threads: int | None = None,
    optimization: str = "all",
    spinning: bool = True,
    providers: list[str] | None = None,
    optimized_model_path: Path | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession``; RunnerError (one line, the original exception as its cause) when
    ONNX Runtime cannot load the file. Every caller in allscan makes its sessions here.

    ``threads`` None leaves ONNX Runtime's default; ``spinning`` False stops idle intra-op threads from spinning,
    which otherwise take the cores that decode/segment workers need.
    """
    import onnxruntime as ort

    levels = ort.GraphOptimizationLevel
    level = {
        "disable": levels.ORT_DISABLE_ALL,
        "basic": levels.ORT_ENABLE_BASIC,
        "extended": levels.ORT_ENABLE_EXTENDED,
        "all": levels.ORT_ENABLE_ALL,
    }[optimization]
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    if threads:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    try:
        return ort.InferenceSession(str(onnx_path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunnerError(f"{onnx_path}: ONNX Runtime cannot load the model: {first}") from exc


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
        self.session: Any = None
        self.output_names: list[str] = []
        self.input_name = "image"
        self._thread: ThreadPoolExecutor | None = None

    def activate_impl(self) -> None:
        threads = self.threads or (os.cpu_count() or 1)
        self.session = ort_session(self.onnx_path, threads, spinning=False, providers=self.providers)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def infer_impl(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        assert self.session is not None
        if not self.position_independent or len(batch) == 1:
            values = self.session.run(self.output_names, {self.input_name: batch})
            return dict(zip(self.output_names, values, strict=True))
        rows = [self.session.run(self.output_names, {self.input_name: batch[i : i + 1]}) for i in range(len(batch))]
        return {name: np.concatenate([r[k] for r in rows]) for k, name in enumerate(self.output_names)}

    def infer_many_impl(self, batches: Iterator[np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """Batch k runs on a thread while the caller's iterator makes batch k+1 and the consumer finishes k-1."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ort-infer")
        pending: deque[Future[dict[str, np.ndarray]]] = deque()
        try:
            for batch in batches:
                pending.append(self._thread.submit(self.infer_impl, batch))
                if len(pending) > 1:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:  # closed early: let a running batch end before the session can go
                if not future.cancel():
                    future.exception()

    def deactivate_impl(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
        self.session = None
