"""Commands of the 'train' group (scaffold: filled in by its issue)."""

from __future__ import annotations
