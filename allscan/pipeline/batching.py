"""Whole batches for the runner, whatever number of model inputs each image brings.

An image gives one input row ('full', 'masked') or one per cell crop ('cells'); a runner (above all a TensorRT
engine with a fixed optimisation profile) is fastest fed exactly ``batch_size`` rows. Rows of consecutive
images are packed into full batches, an image's rows may straddle two batches, and an image is released, in
arrival order, as soon as all its rows have outputs. Only the last batch of a run may be short.

:func:`infer_stream` is what ``allscan run`` uses: it hands the runner's ``infer_many`` a lazy iterator of
batches, so the runner may keep batch k+1 in flight (uploading it, or preparing it on the CPU) while batch k
computes. :class:`Batcher` is the same packing for one batch at a time (the Ray actors).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from allscan.pipeline.workers import Prepared

Infer = Callable[[np.ndarray], dict[str, np.ndarray]]
InferMany = Callable[[Iterable[np.ndarray]], Iterator[dict[str, np.ndarray]]]
Outputs = dict[str, np.ndarray]


@dataclass
class _Entry:
    item: Prepared
    sent: int = 0  # rows already given to the runner
    received: int = 0  # rows whose outputs came back
    chunks: list[Outputs] = field(default_factory=list)

    @property
    def rows(self) -> int:
        assert self.item.tensors is not None
        return int(self.item.tensors.shape[0])


_Plan = list[tuple[_Entry, int, int]]  # (entry, first row, count) making up one batch


class _Packer:
    """The packing state shared by both ways of running: entries in arrival order, rows not yet sent."""

    def __init__(self, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.batch_size = batch_size
        self.entries: deque[_Entry] = deque()
        self.waiting = 0  # rows not yet sent

    def add(self, item: Prepared) -> Iterator[tuple[np.ndarray, _Plan]]:
        entry = _Entry(item)
        self.entries.append(entry)
        self.waiting += entry.rows
        while self.waiting >= self.batch_size:
            yield self._take(self.batch_size)

    def flush(self) -> Iterator[tuple[np.ndarray, _Plan]]:
        while self.waiting > 0:
            yield self._take(min(self.batch_size, self.waiting))

    def _take(self, n: int) -> tuple[np.ndarray, _Plan]:
        plan: _Plan = []
        need = n
        for entry in self.entries:
            if need == 0:
                break
            free = entry.rows - entry.sent
            if free <= 0:
                continue
            take = min(free, need)
            plan.append((entry, entry.sent, take))
            entry.sent += take
            need -= take
        self.waiting -= n
        if len(plan) == 1 and plan[0][2] == plan[0][0].rows:  # one whole image: its rows are the batch
            return plan[0][0].item.tensors, plan  # type: ignore[return-value]
        batch = np.concatenate([e.item.tensors[s : s + k] for e, s, k in plan])  # type: ignore[index]
        return batch, plan

    def deliver(self, plan: _Plan, outputs: Outputs) -> list[tuple[Prepared, Outputs]]:
        """Hand a batch's outputs to its images; return those now complete, in arrival order."""
        offset = 0
        for entry, _, count in plan:
            entry.chunks.append({name: value[offset : offset + count] for name, value in outputs.items()})
            entry.received += count
            offset += count
        done = []
        while self.entries and self.entries[0].received == self.entries[0].rows:
            entry = self.entries.popleft()
            if len(entry.chunks) == 1:
                done.append((entry.item, entry.chunks[0]))
                continue
            names = entry.chunks[0].keys()
            done.append((entry.item, {name: np.concatenate([c[name] for c in entry.chunks]) for name in names}))
        return done


def infer_stream(
    items: Iterable[Prepared], infer_many: InferMany, batch_size: int
) -> Iterator[tuple[Prepared, Outputs]]:
    """``(image, outputs)`` for each of ``items`` (all with tensors), in order, through ``infer_many``.

    ``items`` is pulled only when the runner asks for its next batch, so preparation runs while the runner holds
    earlier batches.
    """
    packer = _Packer(batch_size)
    plans: deque[_Plan] = deque()

    def batches() -> Iterator[np.ndarray]:
        for item in items:
            for batch, plan in packer.add(item):
                plans.append(plan)
                yield batch
        for batch, plan in packer.flush():
            plans.append(plan)
            yield batch

    for outputs in infer_many(batches()):
        yield from packer.deliver(plans.popleft(), outputs)


class Batcher:
    """``add`` images, get back ``(image, outputs)`` pairs whose outputs are complete, in arrival order; each
    batch runs through ``infer`` as soon as it is full."""

    def __init__(self, infer: Infer, batch_size: int) -> None:
        self.infer = infer
        self._packer = _Packer(batch_size)
        self.batch_size = batch_size

    def add(self, item: Prepared) -> list[tuple[Prepared, Outputs]]:
        return self._run(self._packer.add(item))

    def flush(self) -> list[tuple[Prepared, Outputs]]:
        return self._run(self._packer.flush())

    def _run(self, batches: Iterator[tuple[np.ndarray, _Plan]]) -> list[tuple[Prepared, Outputs]]:
        done = []
        for batch, plan in batches:
            done.extend(self._packer.deliver(plan, self.infer(batch)))
        return done
