"""VGG16 / AlexNet with their ReLU MLP head, and Grad-CAM computed inside the graph without autograd.

Why: the exported ONNX graph has no autograd, yet the brief asks for Grad-CAM at the last conv feature map.
For a head ``y = W3 relu(W2 relu(W1 a + b1) + b2) + b3`` on ``a = flatten(pool(A))`` the gradient is piecewise
linear and can be written as forward matrix products (dropout is the identity in eval)::

    dy_c/da = W1^T (1[h1 > 0] * (W2^T (1[h2 > 0] * W3[c])))

computed for all C classes at once (no loop over classes or samples). Grad-CAM only needs the spatial mean of
``dy_c/dA``; the adaptive average pool ``A -> P`` gives every output bin weights that sum to one over its
input pixels, so ``sum_{u,v} dy_c/dA[d,u,v] = sum_{i,j} dy_c/dP[d,i,j]`` for *any* feature-map size (identity
pool, down-sampling or overlapping bins alike). Hence ``alpha_cd = sum_ij g[c,d,i,j] / (h*w)`` and
``cam_c = sum_d alpha_cd A_d`` (Grad-CAM before its ReLU; the pipeline applies the ReLU when drawing).

The adaptive pool itself is applied as two small constant matrices (``P = Ph A Pw^T``) when the feature map is
not already the pool's size, because torch's ONNX exporter rejects adaptive pooling with non-divisible sizes;
at the native 224 px input the pool is the identity and no op is emitted at all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

# torchvision's classifier layout: indices of (dropout before fc1, fc1, dropout after relu1, fc2,
# dropout after relu2, fc3); None = no dropout there.
_LAYOUT: dict[str, tuple[int | None, int, int | None, int, int | None, int]] = {
    # VGG: Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear
    "vgg16": (None, 0, 2, 3, 5, 6),
    # AlexNet: Dropout, Linear, ReLU, Dropout, Linear, ReLU, Linear
    "alexnet": (0, 1, 3, 4, None, 6),
}


def adaptive_pool_matrix(size_in: int, size_out: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[size_out, size_in] averaging matrix with ``F.adaptive_avg_pool1d``'s bins (rows sum to 1)."""
    m = torch.zeros(size_out, size_in, dtype=dtype)
    for i in range(size_out):
        start = (i * size_in) // size_out
        end = -((-(i + 1) * size_in) // size_out)  # ceil
        m[i, start:end] = 1.0 / (end - start)
    return m


class MlpHeadNet(nn.Module):
    """Conv features + adaptive pool + 3-layer ReLU MLP; forward returns ``(logits, cam, pooled)``."""

    heatmap_method = "grad-cam (analytic ReLU-head gradient)"

    def __init__(
        self,
        features: nn.Module,
        pool_size: tuple[int, int],
        fc1: nn.Linear,
        fc2: nn.Linear,
        fc3: nn.Linear,
        dropout: tuple[float, float, float],
    ) -> None:
        super().__init__()
        self.features = features
        self.pool_size = pool_size
        self.fc1, self.fc2, self.fc3 = fc1, fc2, fc3
        self.drop0, self.drop1, self.drop2 = (nn.Dropout(p) for p in dropout)

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        """``adaptive_avg_pool2d(fmap, pool_size)``, exportable (identity at the native input size)."""
        h, w = int(fmap.shape[2]), int(fmap.shape[3])
        ph, pw = self.pool_size
        if (h, w) == (ph, pw):
            return fmap
        mh = adaptive_pool_matrix(h, ph, fmap.dtype).to(fmap.device)
        mw = adaptive_pool_matrix(w, pw, fmap.dtype).to(fmap.device)
        return torch.einsum("ih,ndhw,jw->ndij", mh, fmap, mw)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fmap = self.features(x)  # A [N,D,h,w]
        n, d, h, w = fmap.shape
        a = torch.flatten(self.pool(fmap), 1)  # [N, D*ph*pw]
        h1 = self.fc1(self.drop0(a))
        h2 = self.fc2(self.drop1(F.relu(h1)))
        logits = self.fc3(self.drop2(F.relu(h2)))
        # Backward pass of the head for every class at once, as forward products (eval: dropout = identity).
        m1 = (h1 > 0).to(fmap.dtype)  # [N,H1]
        m2 = (h2 > 0).to(fmap.dtype)  # [N,H2]
        g2 = self.fc3.weight[None, :, :] * m2[:, None, :]  # dy/dh2: [N,C,H2]
        g1 = torch.matmul(g2, self.fc2.weight) * m1[:, None, :]  # dy/dh1: [N,C,H1]
        ga = torch.matmul(g1, self.fc1.weight)  # dy/da: [N,C,D*ph*pw]
        ph, pw = self.pool_size
        # Spatial mean of dy/dA = (sum over pool cells of dy/dP) / (h*w): each bin's weights sum to one.
        alpha = ga.reshape(n, -1, d, ph * pw).sum(dim=3) / float(h * w)  # [N,C,D]
        cam = torch.einsum("ncd,ndhw->nchw", alpha, fmap)
        pooled = fmap.mean(dim=(2, 3))
        return logits, cam, pooled


def build_mlp_head_net(arch: str, num_classes: int, pretrained: bool) -> nn.Module:
    """torchvision's ``vgg16``/``alexnet`` (ImageNet weights when asked), last layer ``num_classes`` wide."""
    if arch not in _LAYOUT:
        raise ValueError(f"build_mlp_head_net: {arch!r} is not one of {', '.join(_LAYOUT)}")
    weights = torchvision.models.get_model_weights(arch).DEFAULT if pretrained else None
    model = getattr(torchvision.models, arch)(weights=weights)
    i_d0, i_fc1, i_d1, i_fc2, i_d2, i_fc3 = _LAYOUT[arch]
    cls = model.classifier

    def p(index: int | None) -> float:
        return float(cls[index].p) if index is not None else 0.0

    old = cls[i_fc3]
    fc3 = nn.Linear(old.in_features, num_classes)  # new last layer (PyTorch's default init)
    pool = model.avgpool.output_size
    pool_size = (pool, pool) if isinstance(pool, int) else tuple(pool)
    return MlpHeadNet(model.features, pool_size, cls[i_fc1], cls[i_fc2], fc3, (p(i_d0), p(i_d1), p(i_d2)))
