"""Training data: class folders decoded once into memory through the inference path's own code.

Every image goes through :func:`allscan.io.images.decode_image`, :func:`allscan.pipeline.segment.segment` and
:func:`allscan.pipeline.model_input.model_view`, exactly as ``allscan run`` does, so what is trained is what runs.
Views are cached slightly larger than the input size (for scale jitter) as uint8 RGB with their cell masks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from allscan.io.images import IMAGE_SUFFIXES, ImageReadError, decode_image
from allscan.models.card import InputSpec
from allscan.pipeline.colour import colour_statistics
from allscan.pipeline.model_input import cell_boxes, grow_mask, model_view, resize_view
from allscan.pipeline.segment import Segmentation, SegmentParams, segment

SPLITS = ("blocked", "tail", "random")
TAIL_FRAC = 0.12
_NUMBER = re.compile(r"(\d+)(?!.*\d)")


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int
    number: int  # the trailing number in the file name: acquisition order in the public dataset


def scan_class_folders(root: Path, classes: tuple[str, ...] | None = None) -> tuple[tuple[str, ...], list[Sample]]:
    """Samples from ``root/<class>/*`` (sorted), and the class names (folder names, sorted, unless given)."""
    root = Path(root)
    found = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))
    classes = classes or found
    missing = [c for c in classes if c not in found]
    if missing:
        raise FileNotFoundError(f"{root}: no class folder(s) {', '.join(missing)}")
    samples = []
    for label, name in enumerate(classes):
        for path in sorted((root / name).rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                match = _NUMBER.search(path.stem)
                samples.append(Sample(path, label, int(match.group(1)) if match else -1))
    return classes, samples


def split_samples(
    samples: list[Sample],
    mode: str,
    seed: int,
    test_frac: float = 0.15,
    calib_frac: float = 0.10,
    blocks: int = 20,
) -> dict[str, list[Sample]]:
    """train / calib / test split.

    ``tail``: the highest-numbered 12 % of each class held out (a prospective check). ``random``: stratified
    random. ``blocked``: each class's images sorted by number are cut into ``blocks``
    contiguous ranges; whole ranges go to test and calibration, so neighbouring (same-patient) images do not
    straddle the split.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, list[Sample]] = {"train": [], "calib": [], "test": []}
    for label in sorted({s.label for s in samples}):
        items = sorted((s for s in samples if s.label == label), key=lambda s: (s.number, s.path.name))
        if mode == "random":
            order = rng.permutation(len(items))
            n_test, n_cal = round(test_frac * len(items)), round(calib_frac * len(items))
            out["test"] += [items[i] for i in order[:n_test]]
            out["calib"] += [items[i] for i in order[n_test : n_test + n_cal]]
            out["train"] += [items[i] for i in order[n_test + n_cal :]]
        elif mode == "blocked":
            chunks = np.array_split(np.arange(len(items)), blocks)
            order = rng.permutation(blocks)
            n_test, n_cal = max(1, round(test_frac * blocks)), max(1, round(calib_frac * blocks))
            for rank, b in enumerate(order):
                part = "test" if rank < n_test else "calib" if rank < n_test + n_cal else "train"
                out[part] += [items[i] for i in chunks[b]]
        elif mode == "tail":
            # The prospective check: the highest-numbered TAIL_FRAC of each class (the latest patients) is the test
            # set; calibration takes whole blocks of what remains, as in 'blocked'.
            n_tail = max(1, round(TAIL_FRAC * len(items)))
            out["test"] += items[len(items) - n_tail :]
            rest = items[: len(items) - n_tail]
            chunks = np.array_split(np.arange(len(rest)), blocks)
            n_cal = max(1, round(calib_frac * blocks))
            for rank, b in enumerate(rng.permutation(blocks)):
                out["calib" if rank < n_cal else "train"] += [rest[i] for i in chunks[b]]
        else:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {mode!r}")
    return out


@dataclass
class CachedViews:
    """uint8 BGR views [M, S, S, 3] at the card's size (before its colour transform), keep-masks [M, S, S]
    (1 = real pixels), the grown white-cell masks [M, S, S] (the evidence penalty's target, allscan.train.focus),
    labels and image index per view, and each source image's raw LAB statistics."""

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    image_index: np.ndarray
    colour_stats: np.ndarray  # [n_images, 6]: LAB mean and std of the raw image (colour.colour_statistics)
    failed: list[tuple[Path, str]]
    cells: np.ndarray | None = None  # uint8 [M, S, S]: 1 on the segmented white cells, grown like 'masked' mode


def cell_mask_views(seg: Segmentation, spec: InputSpec, shape: tuple[int, int]) -> list[np.ndarray]:
    """The grown white-cell mask cut like :func:`model_view` cuts the image (one per view, same order).

    Grown by the card's ``mask_dilate_frac`` (the cell context 'masked' mode keeps), so a cell's rim, where
    the cytoplasm lies and the HSV cut is unsure, counts as cell.
    """
    grown = grow_mask(seg.mask, int(round(spec.mask_dilate_frac * min(shape))))
    if spec.mode == "cells" and seg.cells:
        return [grown[y0:y1, x0:x1] for x0, y0, x1, y1 in cell_boxes(seg, spec, shape)]
    return [grown]


def _square_mask(mask: np.ndarray, side: int) -> np.ndarray:
    """A 0/1 mask at ``side`` x ``side``, resized like the view (area-weighted, then cut at a half)."""
    if mask.shape == (side, side):
        return mask.astype(np.uint8)
    return (cv2.resize(mask.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA) >= 0.5).astype(np.uint8)


def _views(sample: Sample, spec: InputSpec, params: SegmentParams) -> tuple[np.ndarray, list]:
    decoded = decode_image(sample.path)
    seg = segment(decoded.bgr, params)
    views = model_view(decoded.bgr, seg, spec)
    cells = cell_mask_views(seg, spec, decoded.bgr.shape[:2])
    fill = np.array(spec.mask_fill[::-1], dtype=np.uint8)
    out = []
    for view, cell in zip(views, cells, strict=True):
        keep = np.any(view != fill, axis=2).astype(np.uint8) if spec.mode == "masked" else None
        out.append((view, keep, cell))
    return colour_statistics(decoded.bgr), out


def cache_views(samples: list[Sample], spec: InputSpec, params: SegmentParams) -> CachedViews:
    """Decode, segment and cut every sample once, resized exactly as the inference path resizes.

    The views are kept at the input size (no larger cache to crop from: a second resize was the train/inference
    mismatch of the first release); scale jitter zooms in from this view.
    """
    side = spec.size
    imgs, masks, cells, labels, index, colours, failed = [], [], [], [], [], [], []
    for i, sample in enumerate(samples):
        try:
            stats, views = _views(sample, spec, params)
        except ImageReadError as exc:
            failed.append((sample.path, str(exc)))
            stats, views = np.full(6, np.nan), []
        for view, keep, cell in views:
            imgs.append(resize_view(view, spec))
            cells.append(_square_mask(cell, side))
            mask = (
                np.ones((side, side), np.uint8)
                if keep is None
                else cv2.resize(keep, (side, side), interpolation=cv2.INTER_NEAREST)
            )
            masks.append(mask)
            labels.append(sample.label)
            index.append(i)
        colours.append(stats)
    return CachedViews(
        images=np.stack(imgs) if imgs else np.zeros((0, side, side, 3), np.uint8),
        masks=np.stack(masks) if masks else np.zeros((0, side, side), np.uint8),
        labels=np.asarray(labels, dtype=np.int64),
        image_index=np.asarray(index, dtype=np.int64),
        colour_stats=np.asarray(colours, dtype=np.float64),
        failed=failed,
        cells=np.stack(cells) if cells else np.zeros((0, side, side), np.uint8),
    )


def iter_batches(n: int, batch_size: int, rng: np.random.Generator | None) -> Iterator[np.ndarray]:
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]
