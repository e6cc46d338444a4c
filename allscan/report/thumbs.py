"""Small JPEG thumbnails of the images and heatmaps, written once under `<out>/report/thumbs/`.

The page loads them lazily, so its size does not grow with the pictures; a thumbnail newer than its source is
kept, so rebuilding the report after a nightly run only decodes what is new.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from allscan.io.atomic import write_bytes_atomic

THUMB_DIR = "report/thumbs"
THUMB_SIZE = 96  # longest side, px
JPEG_QUALITY = 75
IMAGE_SUFFIX = ".jpg"
HEAT_SUFFIX = "h.jpg"


def thumb_key(slide: str, image: str) -> str:
    """Stable file-name stem for an image's thumbnails: safe whatever the slide or image is called."""
    return hashlib.sha1(f"{slide}\0{image}".encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ThumbJob:
    """Make `dest` from `src` (an image or heatmap); `hint` is the source's (width, height) when known."""

    src: Path
    dest: Path
    hint: tuple[int, int] | None = None


def _reduced_flag(hint: tuple[int, int] | None, size: int) -> int:
    """Let the JPEG decoder drop detail we would throw away (2x, 4x, 8x), keeping >= size px long."""
    import cv2

    if not hint or min(hint) <= 0:
        return cv2.IMREAD_COLOR
    longest = max(hint)
    for factor, flag in (
        (8, cv2.IMREAD_REDUCED_COLOR_8),
        (4, cv2.IMREAD_REDUCED_COLOR_4),
        (2, cv2.IMREAD_REDUCED_COLOR_2),
    ):
        if longest // factor >= size:
            return flag
    return cv2.IMREAD_COLOR


def make_thumb(job: ThumbJob, size: int = THUMB_SIZE) -> bool:
    """Write one thumbnail atomically; False when the source cannot be read (the page then shows none)."""
    import cv2

    try:
        buf = np.fromfile(str(job.src), dtype=np.uint8)
    except OSError:
        return False
    try:
        image = cv2.imdecode(buf, _reduced_flag(job.hint, size)) if buf.size else None
    except cv2.error:  # OpenCV's own pixel limit, or a decoder that gives up: no thumbnail, the page stands
        return False
    if image is None or image.size == 0:
        return False
    h, w = image.shape[:2]
    scale = size / max(h, w)
    if scale < 1:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        return False
    job.dest.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(job.dest, data.tobytes())
    return True


def is_fresh(job: ThumbJob) -> bool:
    """A thumbnail at least as new as its source is kept."""
    try:
        return job.dest.stat().st_mtime_ns >= job.src.stat().st_mtime_ns
    except OSError:
        return job.dest.is_file() and not job.src.exists()


def ensure_thumbs(jobs: Iterable[ThumbJob], workers: int | None = None) -> set[Path]:
    """Make missing or stale thumbnails (OpenCV frees the GIL, so threads help); return those that exist."""
    todo, done = [], set()
    for job in jobs:
        if is_fresh(job):
            done.add(job.dest)
        elif job.src.is_file():
            todo.append(job)
    if todo:
        workers = workers or min(4, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for job, ok in zip(todo, pool.map(make_thumb, todo), strict=True):
                if ok:
                    done.add(job.dest)
    return done
