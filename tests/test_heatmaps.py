"""In-graph heatmaps equal autograd Grad-CAM at the last feature map (issue 3, "Heatmaps in the graph").

Grad-CAM is computed here the textbook way: a forward hook keeps the last feature map A of the real
forward pass, ``torch.autograd.grad`` gives dy_c/dA, ``alpha_cd`` is its spatial mean and the map is
``sum_d alpha_cd A_d`` (before the ReLU, like the in-graph maps). Random weights, random inputs, eval mode.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from allscan.train import archs  # noqa: E402
from allscan.train.mlp_head import adaptive_pool_matrix, build_mlp_head_net  # noqa: E402

MIN_PEARSON = 0.999


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)


def pearson(u: torch.Tensor, v: torch.Tensor) -> float:
    u = u.flatten().double() - u.double().mean()
    v = v.flatten().double() - v.double().mean()
    return float((u @ v) / (u.norm() * v.norm()))


def autograd_gradcam(
    net: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], feature_module: torch.nn.Module, x: torch.Tensor
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """(net outputs, Grad-CAM [N,C,h,w]) with the gradient taken at ``feature_module``'s output."""
    kept: list[torch.Tensor] = []
    handle = feature_module.register_forward_hook(lambda _m, _i, out: kept.append(out))
    try:
        outputs = net(x)
    finally:
        handle.remove()
    fmap, logits = kept[0], outputs[0]
    maps = []
    for c in range(logits.shape[1]):
        # Samples are independent in eval mode, so the gradient of the batch sum is each sample's gradient.
        (grad,) = torch.autograd.grad(logits[:, c].sum(), fmap, retain_graph=True)
        alpha = grad.mean(dim=(2, 3), keepdim=True)
        maps.append((alpha * fmap).sum(dim=1))
    return tuple(o.detach() for o in outputs), torch.stack(maps, dim=1).detach()


def settle_batchnorm(net: torch.nn.Module, size: int) -> torch.nn.Module:
    """Set BatchNorm running statistics from one random batch, then eval mode.

    Freshly initialised nets in eval mode use running var 1, so activations of deep random trunks
    (GoogLeNet, EfficientNet) shrink to ~1e-13 and the maps drown in float32 rounding; trained nets do not.
    """
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 1.0
    net.train()
    with torch.no_grad():
        net(torch.randn(4, 3, size, size))
    return net.eval()


def check_maps(cam: torch.Tensor, gradcam: torch.Tensor, label: str) -> float:
    """Every (sample, class) map correlates >= MIN_PEARSON; returns the smallest correlation."""
    assert cam.shape == gradcam.shape, (label, cam.shape, gradcam.shape)
    worst = 1.0
    for n in range(cam.shape[0]):
        for c in range(cam.shape[1]):
            assert float(gradcam[n, c].std()) > 0, f"{label}: flat Grad-CAM map, test input is degenerate"
            r = pearson(cam[n, c], gradcam[n, c])
            worst = min(worst, r)
            assert r >= MIN_PEARSON, f"{label}: sample {n} class {c}: Pearson {r:.6f}"
    print(f"{label}: min Pearson {worst:.9f} (1 - r = {1 - worst:.1e}) over {cam.shape[0] * cam.shape[1]} maps")
    return worst


GAP_CASES: dict[str, tuple[int, dict]] = {
    "resnet18": (160, {}),
    "efficientnet_b0": (160, {}),
    "googlenet": (160, {}),
    "cnn": (64, {}),
    "vit": (64, {"vit_dim": 32, "vit_depth": 2, "vit_heads": 2, "vit_patch": 8, "conv_stem": True}),
    "vit_patchify": (64, {"vit_dim": 32, "vit_depth": 2, "vit_heads": 2, "vit_patch": 8}),
}


@pytest.mark.parametrize("case", sorted(GAP_CASES))
def test_gap_cam_equals_gradcam(case: str) -> None:
    size, options = GAP_CASES[case]
    arch = "vit" if case.startswith("vit") else case
    net = settle_batchnorm(archs.build(arch, 4, image_size=size, **options), size)
    assert isinstance(net, archs.GapNet)
    x = torch.randn(2, 3, size, size)
    # The ViT's drawn map is rollout-propagated (tested below); its token CAM, the GAP-form forward, is tested here.
    forward = (lambda inp: archs.GapNet.forward(net, inp)) if isinstance(net, archs.VitNet) else net
    (logits, cam, pooled), gradcam = autograd_gradcam(forward, net.backbone, x)
    h, w = cam.shape[2:]
    # The head is linear on the spatial mean, so dy_c/dA[d,u,v] = W_cd / (h*w) at every pixel: Grad-CAM's
    # weights are W_c / (h*w), and Grad-CAM = (cam_c - b_c) / (h*w). The in-graph CAM adds the bias b_c to
    # every pixel so that logits are exactly its spatial mean; Pearson ignores the offset and the positive
    # scale, and the direct comparison below removes both.
    bias = net.head.bias.detach()[None, :, None, None]
    check_maps(cam - bias, gradcam, case)
    torch.testing.assert_close((cam - bias) / (h * w), gradcam, rtol=1e-4, atol=1e-5 * float(gradcam.abs().max()))
    # logits are exactly the spatial mean of the class maps.
    torch.testing.assert_close(cam.mean(dim=(2, 3)), logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pooled, net.backbone(x).mean(dim=(2, 3)))


@pytest.mark.parametrize(
    ("arch", "size", "batch"),
    [
        ("vgg16", 224, 1),  # native size: the adaptive pool is the identity (7x7)
        ("alexnet", 224, 2),  # native size: 6x6
        ("alexnet", 256, 2),  # 7x7 feature map pooled to 6x6 with overlapping bins
        ("alexnet", 160, 2),  # 4x4 feature map stretched to 6x6
    ],
)
def test_mlp_head_gradcam_equals_autograd(arch: str, size: int, batch: int) -> None:
    net = build_mlp_head_net(arch, 4, pretrained=False).eval()
    assert net.heatmap_method == "grad-cam (analytic ReLU-head gradient)"
    x = torch.randn(batch, 3, size, size)
    (logits, cam, pooled), gradcam = autograd_gradcam(net, net.features, x)
    check_maps(cam, gradcam, f"{arch}@{size}")
    torch.testing.assert_close(cam, gradcam, rtol=1e-3, atol=1e-4 * float(gradcam.abs().max()))
    # The head is torchvision's: same logits as the original adaptive pool + classifier in eval mode.
    fmap = net.features(x)
    a = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(fmap, net.pool_size), 1)
    expected = net.fc3(torch.relu(net.fc2(torch.relu(net.fc1(a)))))
    torch.testing.assert_close(logits, expected.detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(pooled, fmap.mean(dim=(2, 3)).detach())


@pytest.mark.parametrize(("size_in", "size_out"), [(7, 7), (14, 7), (8, 7), (3, 6), (1, 6), (13, 6)])
def test_adaptive_pool_matrix_matches_torch(size_in: int, size_out: int) -> None:
    x = torch.randn(2, 5, size_in, size_in + 1)
    mh = adaptive_pool_matrix(size_in, size_out)
    mw = adaptive_pool_matrix(size_in + 1, size_out)
    torch.testing.assert_close(
        torch.einsum("ih,ndhw,jw->ndij", mh, x, mw), torch.nn.functional.adaptive_avg_pool2d(x, size_out)
    )
    torch.testing.assert_close(mh.sum(1), torch.ones(size_out))


def test_mlp_head_archs_reachable_through_build() -> None:
    builder: Callable[..., torch.nn.Module] = archs.build
    net = builder("alexnet", 3, image_size=224)
    assert net.fc3.out_features == 3
    with pytest.raises(ValueError):
        build_mlp_head_net("resnet18", 3, pretrained=False)


@pytest.mark.parametrize("conv_stem", [True, False])
def test_vit_rollout_uses_torchs_own_attention(conv_stem: bool) -> None:
    """The in-graph attention weights equal nn.MultiheadAttention's (need_weights=True), the trunk's tokens equal
    torchvision's encoder, and the drawn map is token CAM carried through the rollout of those weights."""
    size = 64
    net = archs.build("vit", 4, image_size=size, vit_dim=32, vit_depth=3, vit_heads=4, vit_patch=8, conv_stem=conv_stem)
    net.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        fmap, rollout = net.backbone.tokens_and_rollout(x)
        torch.testing.assert_close(fmap, net.backbone(x))
        encoder = net.backbone.vit.encoder
        t = net.backbone._tokens(x) + encoder.pos_embedding
        expected = torch.eye(t.shape[1]).expand(2, -1, -1)
        for block in encoder.layers:
            y = block.ln_1(t)
            _, weights = block.self_attention(y, y, y, need_weights=True, average_attn_weights=True)
            torch.testing.assert_close(archs.attention_weights(block, t), weights, rtol=1e-5, atol=1e-6)
            a = 0.5 * weights + 0.5 * torch.eye(t.shape[1])
            expected = (a / a.sum(-1, keepdim=True)) @ expected
            t = block(t)
        torch.testing.assert_close(rollout, expected[:, 1:, 1:], rtol=1e-5, atol=1e-6)
        logits, cam, _ = net(x)
        scores = net.token_cam(fmap)
        torch.testing.assert_close(scores.mean(dim=(2, 3)), logits, rtol=1e-5, atol=1e-5)
        g = scores.shape[-1]
        manual = torch.einsum("nci,nij->ncj", scores.flatten(2), expected[:, 1:, 1:]).reshape(2, 4, g, g)
        torch.testing.assert_close(cam, manual, rtol=1e-4, atol=1e-5)
