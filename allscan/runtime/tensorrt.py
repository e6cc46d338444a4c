"""TensorRT runner behind the common Runner interface, and what this machine offers TensorRT.

The runner takes a lazy loader (``trt_plan.EngineFromPlan``) that, at activation, refuses with one line
before the next step can crash: a CUDA device answers (a ``trt.Runtime`` made without a driver segfaults later),
TensorRT is really installed (not just its type stubs), the sidecar matches this GPU, TensorRT version and model,
the plan's bytes match the sidecar, and only then ``deserialize_cuda_engine``. Inference uses the named-tensor
API (``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) through
:class:`~allscan.runtime.pipelined.DoubleBufferedExecutor`.

``tensorrt`` is imported inside functions only: ``import allscan.runtime.tensorrt`` is free on any machine.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from allscan.runtime import cuda
from allscan.runtime.base import Runner, RunnerError
from allscan.runtime.pipelined import DoubleBufferedExecutor, ExecutionError, TensorSpec
from allscan.runtime.sidecar import MachineInfo

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


@dataclass
class LoadedEngine:
    """What an engine loader hands the runner: the CUDA backend whose context holds the engine, the deserialized
    engine and the runtime that must outlive it. :meth:`release` frees them in reverse order of creation."""

    cuda: cuda.CudaBackend
    runtime: Any
    engine: Any
    plan_name: str
    fix: str  # the command that rebuilds the engine, for messages

    def release(self) -> None:
        with self.cuda.scope():
            self.engine = None  # engine, then runtime: TensorRT objects die in reverse order of creation
            self.runtime = None
        self.cuda.close()


class EngineLoader(Protocol):
    """A lazy loader (polygraphy's shape): nothing happens until it is called, at the runner's activation."""

    plan_path: Path

    def __call__(self) -> LoadedEngine: ...


class TensorRTRunner(Runner):
    """Runs the engine its loader gives (see ``trt_plan.EngineFromPlan``, which checks the sidecar before
    deserializing); ``infer_many`` keeps two batches in flight."""

    backend = "tensorrt"
    precision = "fp16"

    def __init__(self, loader: EngineLoader) -> None:
        super().__init__()
        self.loader = loader
        self.plan_path = Path(loader.plan_path)
        self._loaded: LoadedEngine | None = None
        self._context: trt_t.IExecutionContext | None = None
        self._executor: DoubleBufferedExecutor | None = None
        self.max_batch = 0
        self.input_spec: TensorSpec | None = None
        self.output_specs: list[TensorSpec] = []

    # -- activation ------------------------------------------------------------------------------------------

    def activate_impl(self) -> None:
        self._loaded = loaded = self.loader()
        try:
            with loaded.cuda.scope():
                self._prepare(loaded)
        except RunnerError:
            self.deactivate_impl()
            raise
        except (ExecutionError, cuda.CudaError) as exc:
            self.deactivate_impl()
            raise RunnerError(f"{self.plan_path.name}: {exc}") from exc

    def _io_names(self, engine: trt_t.ICudaEngine) -> tuple[str, list[str]]:
        import tensorrt as trt  # typed by tensorrt-stubs; the loader already proved it is real

        inputs: list[str] = []
        outputs: list[str] = []
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(name)
        if len(inputs) != 1:
            raise RunnerError(f"{self.plan_path.name}: expected one input tensor, found {inputs}")
        missing = {"logits", "cam"} - set(outputs)
        if missing:
            raise RunnerError(f"{self.plan_path.name}: engine has no output {', '.join(sorted(missing))}")
        return inputs[0], outputs

    def _prepare(self, loaded: LoadedEngine) -> None:
        """Execution context, IO specs and the double-buffered executor for the loaded engine."""
        import tensorrt as trt

        engine: trt_t.ICudaEngine = loaded.engine
        context = engine.create_execution_context()
        if context is None:
            raise RunnerError(f"{self.plan_path.name}: TensorRT could not create an execution context (GPU memory?)")
        self._context = context
        name, outputs = self._io_names(engine)
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
        self._executor = DoubleBufferedExecutor(
            context, loaded.cuda, self.input_spec, self.output_specs, self.max_batch
        )
        self._executor.allocate()

    def deactivate_impl(self) -> None:
        if self._executor is not None:
            self._executor.free()
        if self._loaded is not None:
            with self._loaded.cuda.scope():
                self._executor = None  # context before engine and runtime
                self._context = None
            self._loaded.release()
        self._executor, self._context, self._loaded = None, None, None

    # -- inference -------------------------------------------------------------------------------------------

    def _chunks(self, batches: Iterable[np.ndarray]) -> Iterator[tuple[tuple[int, bool], np.ndarray]]:
        """Split batches larger than the engine's max batch; tag = (batch index, last chunk of that batch)."""
        for index, batch in enumerate(batches):
            if len(batch) == 0:
                yield (index, True), batch
                continue
            for start in range(0, len(batch), self.max_batch):
                yield (index, start + self.max_batch >= len(batch)), batch[start : start + self.max_batch]

    def infer_many_impl(self, batches: Iterator[np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """Outputs for each (checked) batch, in order, with the upload of the next batch overlapping this one's
        compute."""
        if self._executor is None:
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
        (outputs,) = list(self.infer_many_impl(iter([batch])))
        return outputs
