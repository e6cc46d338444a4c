"""A fake GPU for CPU tests of the TensorRT path: deferred CUDA streams, and a fake ``tensorrt`` module.

The fake streams *defer* every copy and kernel until someone waits on them (an event or stream synchronize),
the way a GPU runs work later than the host enqueues it. So an executor that forgets a wait, or reuses a
pinned buffer too early, reads stale bytes and the test's numbers come out wrong: these fakes test
synchronisation, not mocks. The fake engine computes the tiny test model with ONNX Runtime on the bytes found
in "device memory"."""

from __future__ import annotations

import contextlib
import itertools
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from allscan.runtime.cuda import CudaProbe, GpuInfo

FAKE_GPU = GpuInfo(0, "NVIDIA Fake A100", (8, 0), 40 << 30)
FAKE_TRT_VERSION = "10.13.0.35"


def fake_probe(gpu: GpuInfo = FAKE_GPU) -> CudaProbe:
    return CudaProbe((gpu,), "12.4", "12.4", "cuda-python", ("cuda-python",))


def no_gpu_probe() -> CudaProbe:
    return CudaProbe(bindings=("cuda-python",), problems=("cuda-python: no NVIDIA driver (fake)",))


class FakeStream:
    _ids = itertools.count(1)

    def __init__(self, log: list[tuple[str, ...]]) -> None:
        self.id = next(self._ids)
        self.ops: list[Callable[[], None]] = []
        self.done = 0  # ops executed so far
        self.log = log

    @property
    def handle(self) -> int:
        return self.id

    def enqueue(self, op: Callable[[], None]) -> None:
        self.ops.append(op)

    def run_until(self, position: int) -> None:
        while self.done < position:
            op = self.ops[self.done]
            self.done += 1
            op()

    def synchronize(self) -> None:
        self.run_until(len(self.ops))


class FakeEvent:
    _ids = itertools.count(1)

    def __init__(self, log: list[tuple[str, ...]]) -> None:
        self.id = next(self._ids)
        self.stream: FakeStream | None = None
        self.position = 0
        self.log = log

    def record(self, stream: Any) -> None:
        self.stream, self.position = stream, len(stream.ops)

    def complete(self) -> None:
        if self.stream is not None:
            self.stream.run_until(self.position)

    def synchronize(self) -> None:
        self.log.append(("host_wait", str(self.id)))
        self.complete()


class FakeBuffer:
    def __init__(self, memory: dict[int, np.ndarray], ptr: int, nbytes: int) -> None:
        self.memory, self._ptr, self.nbytes = memory, ptr, nbytes
        memory[ptr] = np.full(max(1, nbytes), 0xAB, dtype=np.uint8)  # garbage, like cudaMalloc

    @property
    def ptr(self) -> int:
        return self._ptr

    def free(self) -> None:
        self.memory.pop(self._ptr, None)


class FakeBackend:
    """Implements allscan.runtime.cuda.CudaBackend on host memory with deferred streams."""

    name = "fake"

    def __init__(self) -> None:
        self.memory: dict[int, np.ndarray] = {}
        self.streams: dict[int, FakeStream] = {}
        self.log: list[tuple[str, ...]] = []
        self._next = 0x1000
        self.closed = False
        self.skip_waits = False  # break synchronisation on purpose (test of the test)

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        yield

    def pinned_empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return np.full(shape, np.nan if np.dtype(dtype).kind == "f" else 0, dtype=dtype)

    def device_alloc(self, nbytes: int) -> FakeBuffer:
        ptr, self._next = self._next, self._next + max(1, nbytes) + 256
        return FakeBuffer(self.memory, ptr, nbytes)

    def stream(self) -> FakeStream:
        s = FakeStream(self.log)
        self.streams[s.id] = s
        return s

    def event(self) -> FakeEvent:
        return FakeEvent(self.log)

    def htod_async(self, dst: FakeBuffer, src: np.ndarray, stream: FakeStream) -> None:
        assert src.flags.c_contiguous and src.nbytes <= dst.nbytes
        self.log.append(("enqueue_htod", str(dst.ptr)))

        def op() -> None:  # reads the host buffer when it runs, not when it is enqueued
            self.memory[dst.ptr][: src.nbytes] = src.reshape(-1).view(np.uint8)

        stream.enqueue(op)

    def dtoh_async(self, dst: np.ndarray, src: FakeBuffer, stream: FakeStream) -> None:
        assert dst.flags.c_contiguous and dst.nbytes <= src.nbytes

        def op() -> None:
            dst.reshape(-1).view(np.uint8)[:] = self.memory[src.ptr][: dst.nbytes]

        stream.enqueue(op)

    def wait_event(self, stream: FakeStream, event: FakeEvent) -> None:
        # Like cudaStreamWaitEvent: waits for the event's most recent record *at the time of this call*.
        recorded, position = event.stream, event.position
        if not self.skip_waits and recorded is not None:
            stream.enqueue(lambda: recorded.run_until(position))

    def close(self) -> None:
        self.closed = True


class FakeContext:
    """IExecutionContext computing the tiny ONNX model with ONNX Runtime on fake device memory."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shape: tuple[int, ...] | None = None
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        lo, _, hi = self.engine.profile
        if name != "image" or not all(a <= b <= c for a, b, c in zip(lo, shape, hi, strict=True)):
            return False
        self.shape = tuple(shape)
        return True

    def set_tensor_address(self, name: str, memory: int) -> bool:
        self.addresses[name] = memory
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        assert self.shape is not None
        n = self.shape[0]
        return {"image": self.shape, **{k: (n, *v) for k, v in self.engine.sample_out.items()}}[name]

    def execute_async_v3(self, stream_handle: int) -> bool:
        backend = self.engine.backend
        shape, addresses = self.shape, dict(self.addresses)  # captured at enqueue, like TensorRT
        assert shape is not None
        backend.log.append(("enqueue_execute", str(shape[0])))

        def op() -> None:
            n_bytes = int(np.prod(shape)) * 4
            x = backend.memory[addresses["image"]][:n_bytes].view(np.float32).reshape(shape).copy()
            names = list(self.engine.sample_out)
            for name, value in zip(names, self.engine.session.run(names, {"image": x}), strict=True):
                flat = np.ascontiguousarray(value, dtype=np.float32).reshape(-1).view(np.uint8)
                backend.memory[addresses[name]][: flat.size] = flat

        backend.streams[stream_handle].enqueue(op)
        return True


class FakeEngine:
    def __init__(self, backend: FakeBackend, onnx_path: Path, max_batch: int, size: int = 64) -> None:
        import onnxruntime as ort

        self.backend = backend
        self.session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        self.profile = (
            (1, 3, size, size),
            (max(1, max_batch // 2), 3, size, size),
            (max_batch, 3, size, size),
        )
        self.sample_out = {"logits": (4,), "cam": (4, size // 8, size // 8), "ood": ()}
        self.names = ["image", *self.sample_out]
        self.num_io_tensors = len(self.names)

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> str:
        return "INPUT" if name == "image" else "OUTPUT"

    def get_tensor_dtype(self, name: str) -> str:
        return "float32"

    def get_tensor_profile_shape(self, name: str, profile: int) -> tuple[tuple[int, ...], ...]:
        return self.profile

    def create_execution_context(self) -> FakeContext:
        return FakeContext(self)


def fake_tensorrt(
    backend: FakeBackend, onnx_path: Path, max_batch: int = 8, valid_plan: bytes = b"fake-plan"
) -> types.ModuleType:
    """A stand-in ``tensorrt`` module: Runtime.deserialize_cuda_engine returns None unless given
    ``valid_plan``."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = FAKE_TRT_VERSION  # type: ignore[attr-defined]
    trt.runtimes_created = []  # type: ignore[attr-defined]

    class Logger:
        WARNING = 2

        def __init__(self, severity: int = 2) -> None:
            self.severity = severity

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            trt.runtimes_created.append(self)  # type: ignore[attr-defined]

        def deserialize_cuda_engine(self, plan: bytes) -> FakeEngine | None:
            return FakeEngine(backend, onnx_path, max_batch) if plan == valid_plan else None

    trt.Logger = Logger  # type: ignore[attr-defined]
    trt.Runtime = Runtime  # type: ignore[attr-defined]
    trt.Builder = object  # type: ignore[attr-defined]
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")  # type: ignore[attr-defined]
    trt.nptype = lambda dtype: np.float32  # type: ignore[attr-defined]
    return trt
