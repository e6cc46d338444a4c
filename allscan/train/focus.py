"""The evidence penalty ("right for the right reasons", Ross et al., 2017): class evidence belongs on the cells.

A full-field model may call a class from the field around the white cells (red cells, background, the smear's
thickness): the shipped models put ~6 % of their heatmap energy on the segmented cells, about what an evenly
spread map gives. Training adds ``weight * outside_share``: the share of the true class's class-activation map
that lies outside the grown white-cell mask, at the map's own resolution (7 x 7 for ResNet-18, 14 x 14 for the
hybrid ViT), the mask area-averaged down to it. The map is ReLU'd and its minimum subtracted, as the pipeline's
``cell_focus`` min-max scales it, so the penalty and the measured focus read the same map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-6


def cell_share_at(cam_size: tuple[int, int], cells: torch.Tensor) -> torch.Tensor:
    """[N, h, w]: each CAM cell's share of white-cell pixels (``cells`` is [N, 1, S, S] of 0/1)."""
    return F.interpolate(cells.float(), size=cam_size, mode="area")[:, 0]


def outside_share(cam: torch.Tensor, labels: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """[N]: share of class ``labels[i]``'s map energy outside the cells (0 = all on cells); differentiable.

    ``cam`` is [N, C, h, w]. A map with no energy at all counts 0 (it points nowhere, so nowhere wrong).
    """
    heat = torch.relu(cam[torch.arange(cam.shape[0]), labels].float())
    heat = heat - heat.amin(dim=(1, 2), keepdim=True)
    inside = cell_share_at((heat.shape[-2], heat.shape[-1]), cells)
    total = heat.sum(dim=(1, 2))
    return (heat * (1.0 - inside)).sum(dim=(1, 2)) / total.clamp_min(EPS)


def focus_penalty(cam: torch.Tensor, labels: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Mean :func:`outside_share` over the views that have a segmented cell (a view with none has no target)."""
    has_cells = cells.flatten(1).amax(dim=1) > 0
    if not bool(has_cells.any()):
        return cam.sum() * 0.0
    return outside_share(cam[has_cells], labels[has_cells], cells[has_cells]).mean()
