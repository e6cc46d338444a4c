"""Which images the benchmark reads, and folders of symlinks holding exactly as many as a measurement needs.

Default: the shared all-pbs dataset when present (``$ALLSCAN_BENCH_IMAGES``, else ``../shared/datasets/all-
pbs`` next to the checkout), otherwise the checkout's ``sample_images`` repeated. An image's first place in a
view is a symlink; each repeat is a file of its own (a hard link, or a copy across file systems): discovery
lists symlink aliases of one real path once, so repeats as symlinks would be one image, and a "256-image" run
would time 14 images plus the start-up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from allscan.pipeline.discover import discover

REPO = Path(__file__).resolve().parents[2]
MIN_IMAGES = 256  # below this a run is dominated by start-up costs
PER_SLIDE = 64  # images per slide folder in a materialised view


def default_images_dir() -> Path:
    """The shared dataset when it is there, else the checkout's sample images."""
    env = os.environ.get("ALLSCAN_BENCH_IMAGES")
    if env:
        return Path(env)
    shared = REPO.parent / "shared" / "datasets" / "all-pbs"
    return shared if shared.is_dir() else REPO / "sample_images"


def list_images(root: Path) -> list[Path]:
    """Readable image files under ``root`` in the pipeline's own discovery order (walk problems left out)."""
    return [Path(found.path) for found in discover([Path(root)]) if not found.error]


def materialise(images: list[Path], count: int, dest: Path) -> Path:
    """``dest`` filled with ``count`` images cycling through ``images``, in slide folders of PER_SLIDE: the first
    round as symlinks, every repeat as a file of its own (see the module docstring)."""
    if not images:
        raise ValueError("no images to benchmark on")
    dest.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        src = images[k % len(images)].resolve()
        slide = dest / f"slide{k // PER_SLIDE:04d}"
        slide.mkdir(exist_ok=True)
        target = slide / f"{k:06d}-{src.name}"
        if k < len(images):
            target.symlink_to(src)
            continue
        try:
            os.link(src, target)
        except OSError:
            shutil.copyfile(src, target)
    return dest


def warm_page_cache(images: list[Path]) -> None:
    """Read every file once, so the first timed run does not pay for the disk and later ones do not gain."""
    for path in images:
        with contextlib.suppress(OSError):
            path.read_bytes()
