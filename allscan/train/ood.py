"""The out-of-distribution score, computed inside the exported graph.

Two distances, each divided by its 95th percentile on in-distribution calibration images so they share a scale:
- feature distance: squared Mahalanobis distance of the pooled penultimate features to the nearest class mean, with
  one shared (shrunk) covariance (Lee et al., 2018);
- colour distance: squared Mahalanobis distance of the image's colour statistics (mean and std of R, G, B over the
  pixels the model sees, i.e. not the mask fill) to the training images' colour distribution.
``ood = max(feature, colour)``: a foreign lab's smear is caught by its stain even when its cells look familiar.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def colour_statistics(x: torch.Tensor, mean, std, fill_rgb, masked: bool) -> torch.Tensor:
    """[N, 6] mean and std of RGB in 0-1 over the real (non-fill) pixels of a normalised batch."""
    mean_t = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    rgb = x * std_t + mean_t
    if masked:
        fill = torch.tensor(fill_rgb, dtype=x.dtype).view(1, 3, 1, 1) / 255.0
        keep = ((rgb - fill).abs().sum(dim=1, keepdim=True) > 1e-3).to(x.dtype)
    else:
        keep = torch.ones_like(rgb[:, :1])
    count = keep.sum(dim=(2, 3)).clamp_min(1.0)
    mu = (rgb * keep).sum(dim=(2, 3)) / count
    var = (((rgb - mu[:, :, None, None]) ** 2) * keep).sum(dim=(2, 3)) / count
    return torch.cat([mu, var.clamp_min(0).sqrt()], dim=1)


def fit_gaussian(features: np.ndarray, labels: np.ndarray | None, shrink: float = 0.1):
    """Class means (one mean when labels is None) and the shrunk shared precision matrix."""
    features = features.astype(np.float64)
    if labels is None:
        means = features.mean(0, keepdims=True)
        centred = features - means
    else:
        classes = np.unique(labels)
        means = np.stack([features[labels == c].mean(0) for c in classes])
        centred = features - means[np.searchsorted(classes, labels)]
    cov = centred.T @ centred / max(1, len(features) - 1)
    cov = (1 - shrink) * cov + shrink * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    return means.astype(np.float32), np.linalg.inv(cov).astype(np.float32)


def min_mahalanobis(f: torch.Tensor, means: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """[N]: min over rows of ``means`` of (f - mu)^T P (f - mu), written with matmuls only (exports cleanly).

    The differences are formed first: the expanded form ``f'Pf - 2 f'P mu + mu'P mu`` cancels catastrophically
    in float32 when the features sit far from the origin relative to their spread (it returned large negative
    "squared distances" for a barely trained EfficientNet whose covariance is tiny and precision huge).
    """
    diff = f[:, None, :] - means[None, :, :]  # [N,K,D]
    return (torch.matmul(diff, precision) * diff).sum(dim=2).min(dim=1).values


class OodScore(nn.Module):
    """Graph module: (normalised input, pooled features) -> ood [N]."""

    feat_means: torch.Tensor  # buffers (register_buffer), typed for mypy
    feat_precision: torch.Tensor
    col_means: torch.Tensor
    col_precision: torch.Tensor

    def __init__(
        self,
        spec,
        feat_means,
        feat_precision,
        col_means,
        col_precision,
        feat_scale,
        col_scale,
        colour_in_graph: bool = True,
    ) -> None:
        super().__init__()
        # A colour-free input has no colour left to measure in the graph: the pipeline scores the raw image's colour
        # with the same Gaussian (card flags.colour) and takes the maximum with this output.
        self.colour_in_graph = colour_in_graph
        self.spec_mean, self.spec_std = tuple(spec.mean), tuple(spec.std)
        self.fill, self.masked = tuple(spec.mask_fill), spec.mode == "masked"
        self.register_buffer("feat_means", torch.as_tensor(feat_means))
        self.register_buffer("feat_precision", torch.as_tensor(feat_precision))
        self.register_buffer("col_means", torch.as_tensor(col_means))
        self.register_buffer("col_precision", torch.as_tensor(col_precision))
        self.feat_scale = float(feat_scale)
        self.col_scale = float(col_scale)

    def parts(self, x: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d_feat = min_mahalanobis(pooled, self.feat_means, self.feat_precision) / self.feat_scale
        colour = colour_statistics(x, self.spec_mean, self.spec_std, self.fill, self.masked)
        d_col = min_mahalanobis(colour, self.col_means, self.col_precision) / self.col_scale
        return d_feat, d_col

    def forward(self, x: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        if not self.colour_in_graph:
            return min_mahalanobis(pooled, self.feat_means, self.feat_precision) / self.feat_scale
        d_feat, d_col = self.parts(x, pooled)
        return torch.maximum(d_feat, d_col)


class ExportNet(nn.Module):
    """What goes into model.onnx: image -> (logits, cam, ood)."""

    def __init__(self, net: nn.Module, ood: OodScore) -> None:
        super().__init__()
        self.net = net
        self.ood = ood

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, cam, pooled = self.net(x)
        return logits, cam, self.ood(x, pooled)
