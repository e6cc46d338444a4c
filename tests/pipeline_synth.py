"""Synthetic smear fields for pipeline tests: purple 'white cells', salmon 'red cells', pale background.

Small (64-96 px) so that dozens of images cost milliseconds; seeded, so every test run writes the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

BACKGROUND_BGR = (238, 232, 242)  # near-white, faintly lavender
PURPLE_BGR = (160, 60, 130)  # RGB (130, 60, 160): hue ~141 on OpenCV's scale, well inside the stain band
PINK_BGR = (150, 160, 240)  # RGB (240, 160, 150): salmon red cell, hue ~3, outside the band


def field(
    size: int = 96,
    purple: list[tuple[int, int, int]] | None = None,
    pink: list[tuple[int, int, int]] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """A BGR field with discs given as (x, y, radius); light noise so it looks like a photo, not a drawing."""
    rng = np.random.default_rng(seed)
    img = np.empty((size, size, 3), dtype=np.uint8)
    img[:] = BACKGROUND_BGR
    for x, y, r in pink or []:
        cv2.circle(img, (x, y), r, PINK_BGR, thickness=-1, lineType=cv2.LINE_AA)
    for x, y, r in purple or []:
        cv2.circle(img, (x, y), r, PURPLE_BGR, thickness=-1, lineType=cv2.LINE_AA)
    noise = rng.normal(0, 2.0, img.shape)
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def random_field(seed: int, size: int = 64) -> np.ndarray:
    """A field with 0-2 purple cells and a few red cells at seeded random places."""
    rng = np.random.default_rng(seed)
    r = size // 8
    purple = [(int(rng.integers(r, size - r)), int(rng.integers(r, size - r)), r) for _ in range(rng.integers(0, 3))]
    pink = [(int(rng.integers(r, size - r)), int(rng.integers(r, size - r)), r - 1) for _ in range(3)]
    return field(size, purple=purple, pink=pink, seed=seed)


def write_jpeg(path: Path, bgr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    path.write_bytes(data.tobytes())
    return path


def make_slides(root: Path, n_images: int, n_slides: int = 3, size: int = 64) -> list[Path]:
    """``root/slide-k/img-NNN.jpg``: n_images spread over n_slides, deterministic content."""
    paths = []
    for i in range(n_images):
        paths.append(write_jpeg(root / f"slide-{i % n_slides}" / f"img-{i:03d}.jpg", random_field(i, size)))
    return paths
