"""Commands of the 'run' group (scaffold: filled in by its issue)."""

from __future__ import annotations
