"""Commands of the 'engines' group (scaffold: filled in by its issue)."""

from __future__ import annotations
