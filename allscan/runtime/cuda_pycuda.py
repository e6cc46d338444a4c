"""The pycuda implementation of :class:`~allscan.runtime.cuda.CudaBackend` (the user's choice of binding).

Kept apart from the probe so that each binding's code is read (and imported) only where it is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from allscan.runtime.cuda import DeviceBuffer, Event, Stream


class _PycudaBuffer:
    def __init__(self, drv: Any, nbytes: int) -> None:
        self.alloc = drv.mem_alloc(max(1, nbytes))
        self.nbytes = nbytes

    @property
    def ptr(self) -> int:
        return int(self.alloc)

    def free(self) -> None:
        self.alloc.free()


class PycudaBackend:
    """pycuda on the device's *primary* context, the one the CUDA runtime (and so TensorRT) uses too."""

    name = "pycuda"

    def __init__(self, device: int = 0) -> None:
        import pycuda.driver as drv  # type: ignore[import-not-found,unused-ignore]

        drv.init()
        self.drv = drv
        self.context = drv.Device(device).retain_primary_context()
        self._pinned: list[np.ndarray] = []

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        # Driver-API contexts are per thread: push for each call so a pipeline thread other than the one that
        # activated the runner can use it.
        self.context.push()
        try:
            yield
        finally:
            self.drv.Context.pop()

    def pinned_empty(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        array: np.ndarray = self.drv.pagelocked_empty(shape, dtype)
        self._pinned.append(array)
        return array

    def device_alloc(self, nbytes: int) -> DeviceBuffer:
        return _PycudaBuffer(self.drv, nbytes)

    def stream(self) -> Stream:
        return _PycudaStream(self.drv.Stream())

    def event(self) -> Event:
        return _PycudaEvent(self.drv.Event())

    def htod_async(self, dst: DeviceBuffer, src: np.ndarray, stream: Stream) -> None:
        assert isinstance(stream, _PycudaStream)
        self.drv.memcpy_htod_async(dst.ptr, src, stream.raw)

    def dtoh_async(self, dst: np.ndarray, src: DeviceBuffer, stream: Stream) -> None:
        assert isinstance(stream, _PycudaStream)
        self.drv.memcpy_dtoh_async(dst, src.ptr, stream.raw)

    def wait_event(self, stream: Stream, event: Event) -> None:
        assert isinstance(stream, _PycudaStream) and isinstance(event, _PycudaEvent)
        stream.raw.wait_for_event(event.raw)

    def close(self) -> None:
        # Free page-locked memory while the context is current, rather than whenever the arrays are collected.
        with contextlib.suppress(Exception), self.scope():
            for array in self._pinned:
                base = getattr(array, "base", None)
                if base is not None and hasattr(base, "free"):
                    base.free()
        self._pinned.clear()
        with contextlib.suppress(Exception):
            self.context.detach()


class _PycudaStream:
    def __init__(self, raw: Any) -> None:
        self.raw = raw

    @property
    def handle(self) -> int:
        return int(self.raw.handle)

    def synchronize(self) -> None:
        self.raw.synchronize()


class _PycudaEvent:
    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def record(self, stream: Stream) -> None:
        assert isinstance(stream, _PycudaStream)
        self.raw.record(stream.raw)

    def synchronize(self) -> None:
        self.raw.synchronize()
