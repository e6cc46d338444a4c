"""Shards: which slides ``allscan run --shard K/N`` processes, so N machines can share one night's slides.

A slide's shard depends only on its name as the tables write it (sha256, modulo N), never on its position in the
discovery: a slide added tonight does not move any other slide to another shard, so every shard's journal keeps
serving its slides night after night. Each shard is an ordinary run (journal, lock, resume) into its own
``--out``; ``allscan merge`` puts the shards' tables back together in the single run's order.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from allscan.io.names import escape_name

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


class ShardError(ValueError):
    """A ``--shard`` value that is not K/N with 1 <= K <= N; one line for the user."""


def shard_of(slide: str, n: int) -> int:
    """The shard (1..n) that holds ``slide`` (a name as discovered: escaped here as the tables write it)."""
    digest = hashlib.sha256(escape_name(slide).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % n + 1


@dataclass(frozen=True)
class Shard:
    """Shard ``k`` of ``n`` (1-based, as Slurm's array task ids are)."""

    k: int
    n: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"K/N"`` -> Shard; :class:`ShardError` for anything else (``0/3``, ``4/3``, ``x``)."""
        match = _SPEC.match(text)
        if not match:
            raise ShardError(f"--shard must be K/N (e.g. 2/8), not {text!r}")
        k, n = int(match.group(1)), int(match.group(2))
        if n < 1 or not 1 <= k <= n:
            raise ShardError(f"--shard {text}: K must be between 1 and N (N at least 1)")
        return cls(k, n)

    def holds(self, slide: str) -> bool:
        return shard_of(slide, self.n) == self.k

    def __str__(self) -> str:
        return f"{self.k}/{self.n}"


__all__ = ["Shard", "ShardError", "shard_of"]
