"""Colour handling of the model input: the stain-free view the network sees, the raw colour statistics the flags
see, and the Reinhard stain swap used by training augmentation and by the evaluation's shortcut audit.

Why: the public dataset's classes can be told apart by global colour alone (0.96 macro-F1 on later patients), so a
network fed colour learns the lab's stain and camera rather than the cells. ``lightness`` gives it the LAB
lightness of the image, z-scored per image: any affine change of brightness or contrast (and the lightness part of
a Reinhard stain transfer) cancels out, and hue carries nothing. The raw colour still tells the
out-of-distribution flag that an image comes from another lab, but it never decides the call.

This module is numpy/OpenCV only: ``allscan run`` imports it, training and evaluation call the same functions.
"""

from __future__ import annotations

import cv2
import numpy as np

from allscan.models.card import COLOUR_MODES  # noqa: F401 - declared once, with the card it validates

LIGHTNESS_SCALE = 40.0  # z-score * 40 + 128: about +-3.2 standard deviations fit in 8 bits
LIGHTNESS_CENTRE = 128.0


def lab(bgr: np.ndarray) -> np.ndarray:
    """float32 CIE LAB (L in 0-100, a and b about -128..127) of an 8-bit BGR image."""
    return cv2.cvtColor(bgr.astype(np.float32) * (1.0 / 255.0), cv2.COLOR_BGR2LAB)


def colour_statistics(bgr: np.ndarray, lab_image: np.ndarray | None = None) -> np.ndarray:
    """float64 [6]: mean and standard deviation of L, a, b over the whole image (the Reinhard statistics).

    These are the numbers a stain swap replaces, so an image recoloured with another in-distribution image's stain
    keeps in-distribution colour statistics, while a foreign lab's stain moves them. OpenCV accumulates in double
    in one pass: within 1e-12 (relative) of numpy's two-pass mean/std over a float64 copy, at a tenth of its cost.
    ``lab_image``: ``lab(bgr)`` when the caller already has it (the float LAB conversion is most of the cost).
    """
    mean, std = cv2.meanStdDev(lab(bgr) if lab_image is None else lab_image)
    return np.concatenate([mean.ravel(), std.ravel()]).astype(np.float64)


def normalised_lightness(bgr: np.ndarray, lab_image: np.ndarray | None = None) -> np.ndarray:
    """uint8 [H, W]: the LAB lightness, z-scored over the image, as ``z * 40 + 128`` clipped to 0-255.

    ``lab_image``: ``lab(bgr)`` when the caller already has it. The arithmetic runs in place on one float32
    buffer: the same float32 operations in the same order as ``np.clip((L - m) * k + 128 + 0.5, 0, 255)``."""
    light = (lab(bgr) if lab_image is None else lab_image)[:, :, 0]
    mean, std = float(light.mean()), float(light.std())
    z = light - mean
    z *= LIGHTNESS_SCALE / max(std, 1e-3)
    z += LIGHTNESS_CENTRE
    z += 0.5
    np.clip(z, 0, 255, out=z)
    return z.astype(np.uint8)


def apply_colour(bgr: np.ndarray, mode: str) -> np.ndarray:
    """The card's ``input.colour`` applied to an 8-bit BGR image; returns 8-bit BGR of the same size.

    ``rgb``: unchanged. ``lightness``: the normalised lightness in all three channels (the networks keep their
    3-channel stems, so ImageNet weights still load with ``--pretrained``).
    """
    if mode == "rgb":
        return bgr
    if mode == "lightness":
        return cv2.merge([normalised_lightness(bgr)] * 3)
    raise ValueError(f"input.colour must be one of {COLOUR_MODES}, not {mode!r}")


def reinhard_transfer(bgr: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``bgr`` recoloured so that its LAB mean and standard deviation per channel become ``target`` ([6]).

    Reinhard et al. (2001) colour transfer: the cells keep their shapes, only the stain moves. Values outside the
    displayable range are clipped, as a camera would.
    """
    image = lab(bgr)
    flat = image.reshape(-1, 3)
    mean, std = flat.mean(axis=0), np.maximum(flat.std(axis=0), 1e-6)
    target = np.asarray(target, dtype=np.float32)
    moved = (image - mean) * (target[3:] / std) + target[:3]
    out = cv2.cvtColor(moved.astype(np.float32), cv2.COLOR_LAB2BGR)
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def colour_distance(stats: np.ndarray, gaussian: dict) -> float:
    """Squared Mahalanobis distance of ``stats`` to the nearest mean of the card's colour Gaussian, over its scale
    (1.0 = the 95th percentile of in-distribution calibration images)."""
    means = np.asarray(gaussian["means"], dtype=np.float64).reshape(-1, 6)
    precision = np.asarray(gaussian["precision"], dtype=np.float64)
    diff = np.asarray(stats, dtype=np.float64)[None, :] - means
    return float(np.min(np.einsum("ki,ij,kj->k", diff, precision, diff)) / float(gaussian["scale"]))
