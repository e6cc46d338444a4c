"""Double-buffered execution of a TensorRT context: the copy of batch k+1 overlaps the compute of batch k.

Written against two small interfaces, an execution context (TensorRT's ``IExecutionContext`` named-tensor API)
and a :class:`~allscan.runtime.cuda.CudaBackend`, so the buffer and synchronisation logic is tested on a CPU
with a fake backend whose streams really defer their work (a missing wait shows up as wrong numbers).

Per slot (two of them): pinned host input, device input, device outputs, pinned host outputs, and three
events. For batch k in slot s = k mod 2:

1. host copies the batch into ``pinned_in[s]`` (safe: batch k-2 in this slot was collected, so its upload
   ended);
2. copy stream: wait ``computed[s]`` (batch k-2 no longer reads ``dev_in[s]``), upload, record
   ``uploaded[s]``;
3. compute stream: wait ``uploaded[s]``, set shapes/addresses, ``execute_async_v3``, record ``computed[s]``,
   download outputs, record ``downloaded[s]``;
4. collect batch k-1: host waits on ``downloaded[s']`` and copies the outputs out of pinned memory.

While the host collects k-1 and prepares k+1, the GPU computes k, and the upload of k+1 runs on its own
stream."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from allscan.runtime.cuda import CudaBackend, DeviceBuffer, Event

Tag = TypeVar("Tag")


class ExecutionContext(Protocol):
    """The part of TensorRT's ``IExecutionContext`` used here."""

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool: ...

    def set_tensor_address(self, name: str, memory: int) -> bool: ...

    def execute_async_v3(self, stream_handle: int) -> bool: ...

    def get_tensor_shape(self, name: str) -> Any: ...


@dataclass(frozen=True)
class TensorSpec:
    """A named IO tensor: per-sample shape (without the batch axis) and dtype."""

    name: str
    sample_shape: tuple[int, ...]
    dtype: np.dtype[Any]

    def nbytes(self, batch: int) -> int:
        return int(batch * int(np.prod(self.sample_shape, dtype=np.int64)) * self.dtype.itemsize)


class ExecutionError(RuntimeError):
    """TensorRT refused a shape or an enqueue; the message is one line."""


@dataclass
class _Slot:
    pinned_in: np.ndarray
    dev_in: DeviceBuffer
    dev_out: dict[str, DeviceBuffer]
    pinned_out: dict[str, np.ndarray]  # flat, max-batch sized
    uploaded: Event
    computed: Event
    downloaded: Event
    computed_recorded: bool = False
    views: dict[str, np.ndarray] = field(default_factory=dict)  # this batch's outputs inside pinned_out


class DoubleBufferedExecutor:
    """Runs batches of at most ``max_batch`` through ``context``, two in flight at a time."""

    def __init__(
        self,
        context: ExecutionContext,
        backend: CudaBackend,
        input_spec: TensorSpec,
        output_specs: Sequence[TensorSpec],
        max_batch: int,
        n_slots: int = 2,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.context = context
        self.backend = backend
        self.input = input_spec
        self.outputs = list(output_specs)
        self.max_batch = max_batch
        self.n_slots = n_slots
        self.slots: list[_Slot] = []
        self.copy_stream: Any = None
        self.compute_stream: Any = None

    def allocate(self) -> None:
        """Pinned and device buffers for ``n_slots`` batches of ``max_batch`` (once, at activation)."""
        b = self.backend
        with b.scope():
            self.copy_stream, self.compute_stream = b.stream(), b.stream()
            for _ in range(self.n_slots):
                pinned_in = b.pinned_empty((self.max_batch, *self.input.sample_shape), self.input.dtype)
                dev_out = {o.name: b.device_alloc(o.nbytes(self.max_batch)) for o in self.outputs}
                pinned_out = {
                    o.name: b.pinned_empty((o.nbytes(self.max_batch) // o.dtype.itemsize,), o.dtype)
                    for o in self.outputs
                }
                self.slots.append(
                    _Slot(
                        pinned_in,
                        b.device_alloc(self.input.nbytes(self.max_batch)),
                        dev_out,
                        pinned_out,
                        b.event(),
                        b.event(),
                        b.event(),
                    )
                )

    def free(self) -> None:
        with self.backend.scope():
            for slot in self.slots:
                slot.dev_in.free()
                for buf in slot.dev_out.values():
                    buf.free()
        self.slots.clear()

    def _submit(self, slot: _Slot, batch: np.ndarray) -> None:
        n = len(batch)
        b, ctx, name = self.backend, self.context, self.input.name
        staged = slot.pinned_in[:n]
        np.copyto(staged, batch, casting="no")
        if slot.computed_recorded:
            b.wait_event(self.copy_stream, slot.computed)
        b.htod_async(slot.dev_in, staged, self.copy_stream)
        slot.uploaded.record(self.copy_stream)
        b.wait_event(self.compute_stream, slot.uploaded)
        if not ctx.set_input_shape(name, (n, *self.input.sample_shape)):
            raise ExecutionError(f"TensorRT refused input shape {(n, *self.input.sample_shape)} for {name!r}")
        ctx.set_tensor_address(name, slot.dev_in.ptr)
        for out in self.outputs:
            ctx.set_tensor_address(out.name, slot.dev_out[out.name].ptr)
        if not ctx.execute_async_v3(self.compute_stream.handle):
            raise ExecutionError("TensorRT execute_async_v3 failed (see TensorRT's log)")
        slot.computed.record(self.compute_stream)
        slot.computed_recorded = True
        slot.views = {}
        for out in self.outputs:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(out.name))
            if len(shape) != len(out.sample_shape) + 1 or shape[0] != n or min(shape) < 0:
                raise ExecutionError(f"output {out.name!r} has shape {shape} for a batch of {n}")
            size = int(np.prod(shape, dtype=np.int64))
            view = slot.pinned_out[out.name][:size].reshape(shape)
            b.dtoh_async(view, slot.dev_out[out.name], self.compute_stream)
            slot.views[out.name] = view
        slot.downloaded.record(self.compute_stream)

    def _collect(self, slot: _Slot) -> dict[str, np.ndarray]:
        slot.downloaded.synchronize()
        return {name: view.copy() for name, view in slot.views.items()}

    def _empty(self) -> dict[str, np.ndarray]:
        return {o.name: np.zeros((0, *o.sample_shape), dtype=o.dtype) for o in self.outputs}

    def run(self, batches: Iterable[tuple[Tag, np.ndarray]]) -> Iterator[tuple[Tag, dict[str, np.ndarray]]]:
        """Yield ``(tag, outputs)`` for each ``(tag, batch)``, in order, keeping two batches in flight."""
        if not self.slots:
            raise ExecutionError("executor used before allocate()")
        pending: deque[tuple[Tag, _Slot]] = deque()
        free = deque(self.slots)
        scope = self.backend.scope
        for tag, batch in batches:
            if batch.shape[1:] != self.input.sample_shape or batch.dtype != self.input.dtype:
                raise ExecutionError(
                    f"batch {batch.dtype} {batch.shape} does not match the engine's input "
                    f"{self.input.dtype} {('N', *self.input.sample_shape)}"
                )
            if not 0 < len(batch) <= self.max_batch:
                if len(batch) == 0:  # nothing to run; keep the order of results
                    while pending:
                        done_tag, slot = pending.popleft()
                        with scope():
                            result = self._collect(slot)
                        free.append(slot)
                        yield done_tag, result
                    yield tag, self._empty()
                    continue
                raise ExecutionError(f"batch of {len(batch)} exceeds the engine's max batch {self.max_batch}")
            slot = free.popleft()
            with scope():
                self._submit(slot, batch)
            pending.append((tag, slot))
            if not free:  # every slot in flight: collect the oldest while the newest computes
                done_tag, done = pending.popleft()
                with scope():
                    result = self._collect(done)
                free.append(done)
                yield done_tag, result
        while pending:
            done_tag, slot = pending.popleft()
            with scope():
                result = self._collect(slot)
            free.append(slot)
            yield done_tag, result
