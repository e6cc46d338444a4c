"""The cuda-python (``cuda.bindings.runtime``) implementation of :class:`~allscan.runtime.cuda.CudaBackend`,
used where pycuda is not installed.

Kept apart from the probe so that each binding's code is read (and imported) only where it is used.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from typing import Any

import numpy as np

from allscan.runtime.cuda import DeviceBuffer, Event, Stream, check_cudart, import_cudart


class _CudartBuffer:
    def __init__(self, cudart: Any, nbytes: int) -> None:
        self.cudart = cudart
        self._ptr = int(check_cudart(cudart, cudart.cudaMalloc(max(1, nbytes))))
        self.nbytes = nbytes

    @property
    def ptr(self) -> int:
        return self._ptr

    def free(self) -> None:
        if self._ptr:
            check_cudart(self.cudart, self.cudart.cudaFree(self._ptr))
            self._ptr = 0


class _CudartStream:
    def __init__(self, cudart: Any) -> None:
        self.cudart = cudart
        self.raw = check_cudart(cudart, cudart.cudaStreamCreate())

    @property
    def handle(self) -> int:
        return int(self.raw)

    def synchronize(self) -> None:
        check_cudart(self.cudart, self.cudart.cudaStreamSynchronize(self.raw))


class _CudartEvent:
    def __init__(self, cudart: Any) -> None:
        self.cudart = cudart
        self.raw = check_cudart(cudart, cudart.cudaEventCreate())

    def record(self, stream: Stream) -> None:
        assert isinstance(stream, _CudartStream)
        check_cudart(self.cudart, self.cudart.cudaEventRecord(self.raw, stream.raw))

    def synchronize(self) -> None:
        check_cudart(self.cudart, self.cudart.cudaEventSynchronize(self.raw))


class CudartBackend:
    """cuda-python's runtime API: pinned memory from ``cudaMallocHost`` viewed as numpy arrays."""

    name = "cuda-python"

    def __init__(self, device: int = 0) -> None:
        self.cudart = import_cudart()
        self.device = device
        check_cudart(self.cudart, self.cudart.cudaSetDevice(device))
        self._host_ptrs: list[int] = []
        self._objects: list[Any] = []

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        # The runtime API binds the device per thread; setting it is cheap and makes any thread safe to use.
        check_cudart(self.cudart, self.cudart.cudaSetDevice(self.device))
        yield

    def pinned_empty(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = max(1, int(np.prod(shape)) * dtype.itemsize)
        ptr = int(check_cudart(self.cudart, self.cudart.cudaMallocHost(nbytes)))
        self._host_ptrs.append(ptr)
        raw = (ctypes.c_byte * nbytes).from_address(ptr)
        return np.frombuffer(memoryview(raw).cast("B"), dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def device_alloc(self, nbytes: int) -> DeviceBuffer:
        buf = _CudartBuffer(self.cudart, nbytes)
        self._objects.append(buf)
        return buf

    def stream(self) -> Stream:
        stream = _CudartStream(self.cudart)
        self._objects.append(stream)
        return stream

    def event(self) -> Event:
        event = _CudartEvent(self.cudart)
        self._objects.append(event)
        return event

    def htod_async(self, dst: DeviceBuffer, src: np.ndarray, stream: Stream) -> None:
        assert isinstance(stream, _CudartStream) and src.flags.c_contiguous and src.nbytes <= dst.nbytes
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        check_cudart(self.cudart, self.cudart.cudaMemcpyAsync(dst.ptr, src.ctypes.data, src.nbytes, kind, stream.raw))

    def dtoh_async(self, dst: np.ndarray, src: DeviceBuffer, stream: Stream) -> None:
        assert isinstance(stream, _CudartStream) and dst.flags.c_contiguous and dst.nbytes <= src.nbytes
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check_cudart(self.cudart, self.cudart.cudaMemcpyAsync(dst.ctypes.data, src.ptr, dst.nbytes, kind, stream.raw))

    def wait_event(self, stream: Stream, event: Event) -> None:
        assert isinstance(stream, _CudartStream) and isinstance(event, _CudartEvent)
        check_cudart(self.cudart, self.cudart.cudaStreamWaitEvent(stream.raw, event.raw, 0))

    def close(self) -> None:
        cudart = self.cudart
        for obj in self._objects:
            with contextlib.suppress(Exception):
                if isinstance(obj, _CudartBuffer):
                    obj.free()
                elif isinstance(obj, _CudartStream):
                    cudart.cudaStreamDestroy(obj.raw)
                elif isinstance(obj, _CudartEvent):
                    cudart.cudaEventDestroy(obj.raw)
        for ptr in self._host_ptrs:
            with contextlib.suppress(Exception):
                cudart.cudaFreeHost(ptr)
        self._objects.clear()
        self._host_ptrs.clear()
