"""Shared fixtures: a tiny real ONNX model store, and sample images."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tinymodel import make_tiny_store  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def tiny_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An engines/ folder with model 'tiny' (and 'tiny_masked'), selected through $ALLSCAN_ENGINES."""
    root = tmp_path / "engines"
    make_tiny_store(root, "tiny")
    make_tiny_store(root, "tiny_masked", mode="masked")
    monkeypatch.setenv("ALLSCAN_ENGINES", str(root))
    return root


@pytest.fixture()
def sample_dir() -> Path:
    return REPO / "sample_images"
