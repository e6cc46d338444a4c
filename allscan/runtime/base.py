"""The runner interface every backend implements (polygraphy's pattern).

A runner takes a float32 batch ``[N, 3, H, W]`` and returns named arrays: ``logits [N, C]``, ``cam [N, C, h, w]``
and, where the model has it, ``ood [N]``. The public methods do the checks once; backends write only ``*_impl``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from types import TracebackType

import numpy as np

REQUIRED_OUTPUTS = ("logits", "cam")


class RunnerError(Exception):
    """A backend cannot run; the message is one line naming the cause and, where there is one, the remedy."""


class Runner(ABC):
    """Base runner: ``with runner: outputs = runner.infer(batch)``."""

    backend: str = "base"
    precision: str = "fp32"

    def __init__(self) -> None:
        self.is_active = False

    def activate(self) -> None:
        if not self.is_active:
            self.activate_impl()
            self.is_active = True

    def deactivate(self) -> None:
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.deactivate()

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if not self.is_active:
            raise RunnerError(f"{self.backend} runner used before activate()")
        if batch.dtype != np.float32 or batch.ndim != 4:
            raise RunnerError(f"runner input must be float32 [N,3,H,W], got {batch.dtype} {batch.shape}")
        outputs = self.infer_impl(np.ascontiguousarray(batch))
        missing = [name for name in REQUIRED_OUTPUTS if name not in outputs]
        if missing:
            raise RunnerError(f"{self.backend} runner returned no {', '.join(missing)}")
        return outputs

    def infer_many(self, batches: Iterable[np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """Outputs for each batch in order. Backends that can overlap transfers with compute (TensorRT) override
        this; the pipeline may always call it instead of ``infer`` in a loop."""
        for batch in batches:
            yield self.infer(batch)

    @abstractmethod
    def activate_impl(self) -> None: ...

    @abstractmethod
    def infer_impl(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...

    def deactivate_impl(self) -> None:  # noqa: B027 - optional hook
        """Release resources; default nothing."""
