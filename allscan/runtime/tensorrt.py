"""TensorRT runner behind the common Runner interface, and what this machine offers TensorRT.

Order of activation, each step refusing with one line before the next can crash: a CUDA device answers (a
``trt.Runtime`` made without a driver segfaults later), TensorRT is really installed (not just its type
stubs), the sidecar matches this GPU, TensorRT version and model, the plan's bytes match the sidecar, and only
then ``deserialize_cuda_engine``. Inference uses the named-tensor API (``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``) through
:class:`~allscan.runtime.pipelined.DoubleBufferedExecutor`.

``tensorrt`` is imported inside functions only: ``import allscan.runtime.tensorrt`` is free on any machine.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from allscan.runtime import cuda
from allscan.runtime.base import Runner, RunnerError
from allscan.runtime.pipelined import DoubleBufferedExecutor, ExecutionError, TensorSpec
from allscan.runtime.sidecar import MachineInfo, Sidecar, check_sidecar

if TYPE_CHECKING:
    import tensorrt as trt_t

INSTALL_HINT = "pip install 'allscan[gpu]' (TensorRT wheels come from NVIDIA's package index)"


def import_tensorrt() -> Any:
    """The real ``tensorrt`` module, or ImportError saying what is wrong.

    ``tensorrt-stubs`` installs a ``tensorrt/`` folder holding only ``.pyi`` files, which Python imports as an
    empty namespace package; that is not TensorRT.
    """
    import tensorrt as trt

    if not hasattr(trt, "Builder") or not hasattr(trt, "__version__"):
        raise ImportError("the tensorrt package found has no libraries (type stubs only?)")
    return trt


def tensorrt_status() -> tuple[str | None, str]:
    """(TensorRT version or None, one-line problem when None). Imports TensorRT, creates nothing."""
    try:
        trt = import_tensorrt()
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) or "None in sys.modules" in str(exc):
            return None, "TensorRT is not installed"
        return None, f"TensorRT is not usable: {str(exc).strip().splitlines()[0]}"
    except Exception as exc:  # noqa: BLE001 - a broken install raises OSError and friends on import
        return None, f"TensorRT failed to import: {str(exc).strip().splitlines()[0]}"
    return str(trt.__version__), ""


def machine_info(device: int = 0, probe: cuda.CudaProbe | None = None, with_tensorrt: bool = True) -> MachineInfo:
    """This machine as :func:`check_sidecar` needs it. TensorRT is only imported when a CUDA device
    answered."""
    probe = probe or cuda.probe_cuda()
    if not probe.usable or device >= len(probe.devices):
        problem = probe.reason or f"CUDA device {device} not found ({len(probe.devices)} devices)"
        return MachineInfo(device_problem=problem, tensorrt_problem="not checked: no CUDA device")
    gpu = probe.devices[device]
    version, problem = tensorrt_status() if with_tensorrt else (None, "not checked")
    return MachineInfo(gpu.name, gpu.cc, version, "", problem)


def _dims(dims: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in dims)


class TensorRTRunner(Runner):
    """Runs a serialized FP16 plan; ``infer_many`` keeps two batches in flight."""

    backend = "tensorrt"
    precision = "fp16"

    def __init__(
        self,
        plan_path: Path,
        sidecar: Sidecar | None,
        model_name: str = "",
        onnx_sha256: str | None = None,
        device: int = 0,
        cuda_backend: str | None = None,
    ) -> None:
        """``sidecar`` None skips the sidecar check: only for ``build-engine``'s parity gate on its own fresh
        plan."""
        super().__init__()
        self.plan_path = Path(plan_path)
        self.sidecar = sidecar
        self.model_name = model_name or (sidecar.model_name if sidecar else "")
        self.onnx_sha256 = onnx_sha256
        self.device = device
        self.cuda_backend_name = cuda_backend
        self.fix = f"run `allscan build-engine --model {self.model_name}`" if self.model_name else "rebuild the engine"
        self._runtime: trt_t.Runtime | None = None
        self._engine: trt_t.ICudaEngine | None = None
        self._context: trt_t.IExecutionContext | None = None
        self._cuda: cuda.CudaBackend | None = None
        self._executor: DoubleBufferedExecutor | None = None
        self.max_batch = 0
        self.input_spec: TensorSpec | None = None
        self.output_specs: list[TensorSpec] = []

    # -- activation ------------------------------------------------------------------------------------------

    def activate_impl(self) -> None:
        probe = cuda.probe_cuda()
        if not probe.usable:
            raise RunnerError(f"TensorRT needs a CUDA GPU: {probe.reason}; use --backend onnxruntime")
        version, problem = tensorrt_status()
        if version is None:
            raise RunnerError(f"{problem}; {INSTALL_HINT}")
        if self.sidecar is not None:
            machine = MachineInfo(probe.devices[self.device].name, probe.devices[self.device].cc, version)
            usable, reason = check_sidecar(self.sidecar, machine, self.onnx_sha256, self.plan_path.parent)
            if not usable:
                raise RunnerError(f"{self.plan_path.name}: {reason}; {self.fix}")
        try:
            plan = self.plan_path.read_bytes()
        except OSError as exc:
            raise RunnerError(f"{self.plan_path}: cannot read plan ({exc.strerror}); {self.fix}") from exc
        try:
            self._cuda = cuda.open_backend(self.device, self.cuda_backend_name)
        except cuda.CudaError as exc:
            raise RunnerError(f"{exc}; {INSTALL_HINT}") from exc
        try:
            with self._cuda.scope():
                self._load(plan)
        except RunnerError:
            self.deactivate_impl()
            raise
        except (ExecutionError, cuda.CudaError) as exc:
            self.deactivate_impl()
            raise RunnerError(f"{self.plan_path.name}: {exc}") from exc

    def _load(self, plan: bytes) -> None:
        import tensorrt as trt  # typed by tensorrt-stubs; import_tensorrt() already proved it is real

        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise RunnerError(
                f"{self.plan_path.name}: TensorRT could not deserialize the plan (its log says why); {self.fix}"
            )
        self._engine = engine
        context = engine.create_execution_context()
        if context is None:
            raise RunnerError(f"{self.plan_path.name}: TensorRT could not create an execution context (GPU memory?)")
        self._context = context
        inputs, outputs = [], []
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                inputs.append(name)
            else:
                outputs.append(name)
        if len(inputs) != 1:
            raise RunnerError(f"{self.plan_path.name}: expected one input tensor, found {inputs}")
        name = inputs[0]
        _, _, max_shape = engine.get_tensor_profile_shape(name, 0)
        max_dims = _dims(max_shape)
        self.max_batch = max_dims[0]
        self.input_spec = TensorSpec(name, max_dims[1:], np.dtype(trt.nptype(engine.get_tensor_dtype(name))))
        if self.input_spec.dtype != np.float32:
            raise RunnerError(f"{self.plan_path.name}: input {name!r} is {self.input_spec.dtype}, expected float32")
        # Output shapes for one sample, resolved by TensorRT for a concrete input shape.
        if not context.set_input_shape(name, (1, *self.input_spec.sample_shape)):
            raise RunnerError(
                f"{self.plan_path.name}: TensorRT refused input shape (1, {self.input_spec.sample_shape})"
            )
        self.output_specs = [
            TensorSpec(
                out,
                _dims(context.get_tensor_shape(out))[1:],
                np.dtype(trt.nptype(engine.get_tensor_dtype(out))),
            )
            for out in outputs
        ]
        missing = {"logits", "cam"} - set(outputs)
        if missing:
            raise RunnerError(f"{self.plan_path.name}: engine has no output {', '.join(sorted(missing))}")
        assert self._cuda is not None
        self._executor = DoubleBufferedExecutor(context, self._cuda, self.input_spec, self.output_specs, self.max_batch)
        self._executor.allocate()

    def deactivate_impl(self) -> None:
        if self._executor is not None:
            self._executor.free()
        if self._cuda is not None:
            with self._cuda.scope():
                # Context, then engine, then runtime: TensorRT objects die in reverse order of creation.
                self._executor = None
                self._context = None
                self._engine = None
                self._runtime = None
            self._cuda.close()
        self._executor, self._context, self._engine, self._runtime, self._cuda = None, None, None, None, None

    # -- inference -------------------------------------------------------------------------------------------

    def _chunks(self, batches: Iterable[np.ndarray]) -> Iterator[tuple[tuple[int, bool], np.ndarray]]:
        """Split batches larger than the engine's max batch; tag = (batch index, last chunk of that batch)."""
        for index, batch in enumerate(batches):
            if batch.dtype != np.float32 or batch.ndim != 4:
                raise RunnerError(f"runner input must be float32 [N,3,H,W], got {batch.dtype} {batch.shape}")
            batch = np.ascontiguousarray(batch)
            if len(batch) == 0:
                yield (index, True), batch
                continue
            for start in range(0, len(batch), self.max_batch):
                yield (index, start + self.max_batch >= len(batch)), batch[start : start + self.max_batch]

    def infer_many(self, batches: Iterable[np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """Outputs for each batch, in order, with the upload of the next batch overlapping this one's
        compute."""
        if not self.is_active or self._executor is None:
            raise RunnerError("tensorrt runner used before activate()")
        parts: list[dict[str, np.ndarray]] = []
        try:
            for (_, last), outputs in self._executor.run(self._chunks(batches)):
                parts.append(outputs)
                if last:
                    yield (
                        parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
                    )
                    parts = []
        except ExecutionError as exc:
            raise RunnerError(f"{self.plan_path.name}: {exc}") from exc

    def infer_impl(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        (outputs,) = list(self.infer_many([batch]))
        return outputs
