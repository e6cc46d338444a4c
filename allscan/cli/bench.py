"""Commands of the 'bench' group (scaffold: filled in by its issue)."""

from __future__ import annotations
