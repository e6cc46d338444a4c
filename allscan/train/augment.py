"""Batch augmentation on tensors: scale jitter, flips, 90-degree turns, colour and stain jitter.

Stain jitter multiplies each image by a random colour matrix near the identity and shifts brightness/contrast:
a second lab's stain moves colours in exactly these ways, and a model that must stay right under them has to read
the cells' shapes rather than the training lab's palette. Masked pixels are reset to the fill value after jitter,
so the background carries no information.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def random_crops(
    images: np.ndarray, masks: np.ndarray, size: int, rng: np.random.Generator | None, train: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop (train: random side in [size, full], random place; eval: the whole view), resize to ``size``.

    ``masks`` is [N, S, S] or [N, K, S, S] (several masks, e.g. keep and cells): each is cut and resized
    (nearest) exactly like its image.
    """
    n, side = images.shape[0], images.shape[1]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.from_numpy(masks).float()
    if m.ndim == 3:
        m = m.unsqueeze(1)
    if not train or rng is None:
        return F.interpolate(x, size=(size, size), mode="area"), F.interpolate(m, size=(size, size), mode="nearest")
    xs, ms = [], []
    for i in range(n):
        crop = int(rng.integers(int(0.8 * side), side + 1))
        y0, x0 = (int(rng.integers(0, side - crop + 1)) for _ in range(2))
        zoomed = F.interpolate(
            x[i : i + 1, :, y0 : y0 + crop, x0 : x0 + crop], size=(size, size), mode="bilinear", align_corners=False
        )
        xs.append(zoomed)
        ms.append(F.interpolate(m[i : i + 1, :, y0 : y0 + crop, x0 : x0 + crop], size=(size, size), mode="nearest"))
    return torch.cat(xs), torch.cat(ms)


def geometric(x: torch.Tensor, m: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    out_x, out_m = [], []
    for i in range(x.shape[0]):
        xi, mi = x[i], m[i]
        k = int(rng.integers(0, 4))
        if k:
            xi, mi = torch.rot90(xi, k, (1, 2)), torch.rot90(mi, k, (1, 2))
        if rng.random() < 0.5:
            xi, mi = xi.flip(2), mi.flip(2)
        out_x.append(xi)
        out_m.append(mi)
    return torch.stack(out_x), torch.stack(out_m)


def stain_jitter(x: torch.Tensor, rng: np.random.Generator, strength: float = 1.0) -> torch.Tensor:
    """Random near-identity colour matrix, gains, brightness and contrast per image (x in 0-1 RGB)."""
    n = x.shape[0]
    mats = np.eye(3)[None] + rng.normal(0, 0.08 * strength, size=(n, 3, 3))
    gains = rng.uniform(1 - 0.15 * strength, 1 + 0.15 * strength, size=(n, 3, 1))
    matrices = torch.from_numpy(mats * gains).float()
    y = torch.einsum("nij,njhw->nihw", matrices, x)
    contrast = torch.from_numpy(rng.uniform(1 - 0.2 * strength, 1 + 0.2 * strength, size=(n, 1, 1, 1))).float()
    bright = torch.from_numpy(rng.uniform(-0.08 * strength, 0.08 * strength, size=(n, 1, 1, 1))).float()
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - mean) * contrast + mean + bright
    # Saturation: blend with the grey image.
    sat = torch.from_numpy(rng.uniform(1 - 0.3 * strength, 1 + 0.3 * strength, size=(n, 1, 1, 1))).float()
    grey = y.mean(dim=1, keepdim=True)
    y = grey + (y - grey) * sat
    return y.clamp_(0.0, 1.0)


def normalise(x: torch.Tensor, m: torch.Tensor, mean, std, fill_rgb, masked: bool) -> torch.Tensor:
    """Reset masked-out pixels to the fill value and apply mean/std normalisation (as the inference path does)."""
    if masked:
        fill = torch.tensor(fill_rgb, dtype=x.dtype).view(1, 3, 1, 1) / 255.0
        x = x * m + fill * (1 - m)
    mean_t = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def colour_augment(bgr: np.ndarray, rng: np.random.Generator, donors: np.ndarray, swap_prob: float = 0.8) -> np.ndarray:
    """Stain and intensity augmentation of one 8-bit BGR view, before the colour-free transform.

    - Reinhard swap (probability ``swap_prob``): the view takes the LAB statistics of a random training image of
      any class, slightly perturbed, so the stain carries no label (the evaluation's swap test, as augmentation).
    - Gamma (log-uniform 0.6-1.6) and a contrast stretch with clipping: a swap that saturates pixels is not affine in
      lightness, and a model trained long enough learns such intensity cues unless they vary (measurements.md).
    - A slight blur now and then: other cameras and focus.
    """
    from allscan.pipeline.colour import reinhard_transfer

    out = bgr
    valid = donors[~np.isnan(donors).any(axis=1)]
    if len(valid) and rng.random() < swap_prob:
        target = valid[int(rng.integers(len(valid)))].copy()
        target[:3] += rng.normal(0, [3.0, 3.0, 3.0])
        target[3:] *= rng.uniform(0.8, 1.25, size=3)
        out = reinhard_transfer(out, target)
    if rng.random() < 0.5:
        gamma = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
        lut = np.clip(((np.arange(256) / 255.0) ** gamma) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        out = cv2.LUT(out, lut)
    if rng.random() < 0.3:
        gain, shift = rng.uniform(1.0, 1.5), rng.uniform(-40, 20)
        out = cv2.convertScaleAbs(out, alpha=gain, beta=shift)
    if rng.random() < 0.2:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=float(rng.uniform(0.3, 1.0)))
    return out
