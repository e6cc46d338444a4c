"""Whole batches for the runner, whatever number of model inputs each image brings.

An image gives one input row ('full', 'masked') or one per cell crop ('cells'); a runner (above all a TensorRT
engine with a fixed optimisation profile) is fastest fed exactly ``batch_size`` rows. Rows of consecutive
images are packed into full batches, an image's rows may straddle two batches, and an image is released, in
arrival order, as soon as all its rows have outputs. Only the last batch of a run may be short.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from allscan.pipeline.workers import Prepared

Infer = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass
class _Entry:
    item: Prepared
    sent: int = 0  # rows already given to the runner
    chunks: list[dict[str, np.ndarray]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        assert self.item.tensors is not None
        return int(self.item.tensors.shape[0])


class Batcher:
    """``add`` images, get back ``(image, outputs)`` pairs whose outputs are complete, in arrival order."""

    def __init__(self, infer: Infer, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.infer = infer
        self.batch_size = batch_size
        self.entries: deque[_Entry] = deque()
        self.waiting = 0  # rows not yet sent

    def add(self, item: Prepared) -> list[tuple[Prepared, dict[str, np.ndarray]]]:
        entry = _Entry(item)
        self.entries.append(entry)
        self.waiting += entry.rows
        while self.waiting >= self.batch_size:
            self._run(self.batch_size)
        return self._release()

    def flush(self) -> list[tuple[Prepared, dict[str, np.ndarray]]]:
        while self.waiting > 0:
            self._run(min(self.batch_size, self.waiting))
        return self._release()

    def _run(self, n: int) -> None:
        parts: list[tuple[_Entry, int, int]] = []  # (entry, first row, count)
        need = n
        for entry in self.entries:
            if need == 0:
                break
            free = entry.rows - entry.sent
            if free <= 0:
                continue
            take = min(free, need)
            parts.append((entry, entry.sent, take))
            need -= take
        batch = np.concatenate([e.item.tensors[s : s + k] for e, s, k in parts])  # type: ignore[index]
        outputs = self.infer(batch)
        offset = 0
        for entry, _, count in parts:
            entry.chunks.append({name: value[offset : offset + count] for name, value in outputs.items()})
            entry.sent += count
            offset += count
        self.waiting -= n

    def _release(self) -> list[tuple[Prepared, dict[str, np.ndarray]]]:
        done = []
        while self.entries and self.entries[0].sent == self.entries[0].rows:
            entry = self.entries.popleft()
            names = entry.chunks[0].keys()
            outputs = {name: np.concatenate([c[name] for c in entry.chunks]) for name in names}
            done.append((entry.item, outputs))
        return done
