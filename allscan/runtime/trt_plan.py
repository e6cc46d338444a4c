"""The loader the TensorRT runner runs from: a plan file, checked against its sidecar, deserialized on this GPU.

It sits beside the build loaders of ``engine_build`` (same lazy-callable shape) but is the only one ``allscan run``
needs, so a run never imports the builder. Every step refuses with one line before the next can crash.
"""

from __future__ import annotations

from pathlib import Path

from allscan.runtime import cuda
from allscan.runtime.base import RunnerError
from allscan.runtime.sidecar import MachineInfo, Sidecar, check_sidecar
from allscan.runtime.tensorrt import INSTALL_HINT, LoadedEngine, tensorrt_status


class EngineFromPlan:
    """Loader: a serialized plan deserialized on this GPU, after its sidecar said it may be.

    Each step refuses with one line before the next can crash: a CUDA device answers (a ``trt.Runtime`` made
    without a driver segfaults later), TensorRT is really installed, the sidecar matches this GPU, TensorRT
    version and model and the plan's bytes match the sidecar, and only then ``deserialize_cuda_engine``.
    ``sidecar`` None skips the sidecar check: only for ``build-engine``'s parity gate on its own fresh plan.
    """

    def __init__(
        self,
        plan_path: Path,
        sidecar: Sidecar | None,
        model_name: str = "",
        onnx_sha256: str | None = None,
        device: int = 0,
        cuda_backend: str | None = None,
    ) -> None:
        self.plan_path = Path(plan_path)
        self.sidecar = sidecar
        self.model_name = model_name or (sidecar.model_name if sidecar else "")
        self.onnx_sha256 = onnx_sha256
        self.device = device
        self.cuda_backend = cuda_backend
        self.fix = f"run `allscan build-engine --model {self.model_name}`" if self.model_name else "rebuild the engine"

    def _checked_plan(self) -> bytes:
        probe = cuda.probe_cuda()
        if not probe.usable:
            raise RunnerError(f"TensorRT needs a CUDA GPU: {probe.reason}; use --backend onnxruntime")
        version, problem = tensorrt_status()
        if version is None:
            raise RunnerError(f"{problem}; {INSTALL_HINT}")
        if self.sidecar is not None:
            gpu = probe.devices[self.device]
            usable, reason = check_sidecar(
                self.sidecar, MachineInfo(gpu.name, gpu.cc, version), self.onnx_sha256, self.plan_path.parent
            )
            if not usable:
                raise RunnerError(f"{self.plan_path.name}: {reason}; {self.fix}")
        try:
            return self.plan_path.read_bytes()
        except OSError as exc:
            raise RunnerError(f"{self.plan_path}: cannot read plan ({exc.strerror}); {self.fix}") from exc

    def __call__(self) -> LoadedEngine:
        plan = self._checked_plan()
        try:
            backend = cuda.open_backend(self.device, self.cuda_backend)
        except cuda.CudaError as exc:
            raise RunnerError(f"{exc}; {INSTALL_HINT}") from exc
        loaded = LoadedEngine(backend, None, None, self.plan_path.name, self.fix)
        try:
            with backend.scope():
                import tensorrt as trt  # typed by tensorrt-stubs; tensorrt_status() proved it is real

                loaded.runtime = runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
                loaded.engine = runtime.deserialize_cuda_engine(plan)
        except BaseException:
            loaded.release()
            raise
        if loaded.engine is None:
            loaded.release()
            raise RunnerError(
                f"{self.plan_path.name}: TensorRT could not deserialize the plan (its log says why); {self.fix}"
            )
        return loaded
