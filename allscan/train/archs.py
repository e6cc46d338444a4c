"""Architectures, each wrapped so that one forward pass returns logits, a class-activation map and the pooled
features (for the out-of-distribution score).

Why these forms: a network that ends in global average pooling and one linear layer has logits that are exactly
the spatial mean of its class maps ``cam_c = W_c . A + b_c``; Grad-CAM at the last feature map equals this CAM up to
a positive scale, so the heatmap needs no autograd at inference and lives inside the ONNX graph. The ViT is given
the same form by pooling its patch tokens (no class token in the head): each token's class score is its CAM value
("token CAM", forward-only), and attention rollout carries those scores back to the input patches
(:class:`VitNet`). VGG16/AlexNet keep their ReLU MLP head, whose Grad-CAM weights are written as forward
matrix products (see :class:`MlpHeadNet`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torchvision
from torch import nn

from allscan.models.architectures import ARCHITECTURES, VIT_DEPTH, VIT_DIM, VIT_HEADS, VIT_PATCH, arch_names

ARCHS = arch_names()  # the names, from the torch-free table the CLI's --arch help is made of


@dataclass(frozen=True)
class BuildArgs:
    """What a registered builder gets: the classes, the input side and the --vit-* / --conv-stem options."""

    num_classes: int
    image_size: int = 224
    pretrained: bool = False
    vit_dim: int = VIT_DIM
    vit_depth: int = VIT_DEPTH
    vit_heads: int = VIT_HEADS
    vit_patch: int = VIT_PATCH
    conv_stem: bool = False


Builder = Callable[[BuildArgs], nn.Module]
_REGISTRY: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Register a builder under ``name`` (timm's shape); the name must be in the CLI's table, and only once."""

    def add(builder: Builder) -> Builder:
        if name not in ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is not in allscan.models.architectures.ARCHITECTURES")
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} registered twice")
        _REGISTRY[name] = builder
        return builder

    return add


def registered() -> tuple[str, ...]:
    """The names with a builder, in registration order."""
    return tuple(_REGISTRY)


class GapNet(nn.Module):
    """Backbone producing a feature map [N,D,h,w] + linear head on its spatial mean."""

    heatmap_method = "cam"

    def __init__(self, backbone: nn.Module, dim: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fmap = self.backbone(x)
        pooled = fmap.mean(dim=(2, 3))
        logits = self.head(self.dropout(pooled))
        cam = torch.einsum("cd,ndhw->nchw", self.head.weight, fmap) + self.head.bias[None, :, None, None]
        return logits, cam, pooled


class TorchvisionTrunk(nn.Module):
    """A torchvision CNN cut before its pooling and classifier."""

    def __init__(self, layers: nn.Module) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class VitTrunk(nn.Module):
    """torchvision's VisionTransformer returning its patch tokens as a feature map [N,D,g,g].

    The class token still takes part in attention (so pretrained weights load), but the head reads the mean of the
    patch tokens, which makes token CAM exact. :meth:`tokens_and_rollout` also returns the attention rollout.
    """

    def __init__(self, vit: torchvision.models.VisionTransformer) -> None:
        super().__init__()
        self.vit = vit
        self.grid = vit.image_size // vit.patch_size

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.vit._process_input(x)
        cls = self.vit.class_token.expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1)

    def _as_map(self, tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, 1:, :]
        return patches.transpose(1, 2).reshape(tokens.shape[0], patches.shape[2], self.grid, self.grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._as_map(self.vit.encoder(self._tokens(x)))

    def tokens_and_rollout(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(feature map [N,D,g,g], patch-to-patch attention rollout [N,P,P]).

        Rollout (Abnar & Zuidema, 2020): each layer's head-averaged attention, mixed half and half with the
        identity for the residual path and row-normalised, multiplied through the layers. ``R[i, j]`` is how much
        output token i draws on input patch j. Same arithmetic as torchvision's encoder, which runs alongside.
        """
        encoder = self.vit.encoder
        t = encoder.dropout(self._tokens(x) + encoder.pos_embedding)
        length = t.shape[1]
        eye = torch.eye(length, dtype=t.dtype, device=t.device)
        rollout = None
        for block in encoder.layers:
            a = 0.5 * attention_weights(block, t) + 0.5 * eye
            a = a / a.sum(dim=-1, keepdim=True)
            rollout = a if rollout is None else a @ rollout
            t = block(t)
        assert rollout is not None
        return self._as_map(encoder.ln(t)), rollout[:, 1:, 1:]


def attention_weights(block: Any, t: torch.Tensor) -> torch.Tensor:  # torchvision's EncoderBlock (untyped)
    """Head-averaged softmax attention [N,L,L] of a torchvision EncoderBlock on its input ``t``."""
    attn = block.self_attention
    y = block.ln_1(t)
    n, length, dim = y.shape
    heads = attn.num_heads
    q, k, _ = torch.nn.functional.linear(y, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q = q.reshape(n, length, heads, dim // heads).transpose(1, 2)
    k = k.reshape(n, length, heads, dim // heads).transpose(1, 2)
    weights = torch.softmax(q @ k.transpose(-1, -2) / (dim // heads) ** 0.5, dim=-1)
    return weights.mean(dim=1)


class VitNet(GapNet):
    """ViT with a head on the mean patch token; its heatmap is token CAM carried back to the input patches by
    attention rollout.

    Token CAM alone (each output token's class score) is exact, but after global attention every output token
    carries the whole image, so its map is nearly flat; rollout moves each token's score onto the input patches it
    attends to, which is where the evidence is. Forward-only, inside the graph.
    """

    heatmap_method = "token CAM propagated to input patches by attention rollout"

    def token_cam(self, fmap: torch.Tensor) -> torch.Tensor:
        """Each output patch token's class scores [N,C,g,g]; their spatial mean is exactly the logits."""
        return torch.einsum("cd,ndhw->nchw", self.head.weight, fmap) + self.head.bias[None, :, None, None]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fmap, rollout = cast(VitTrunk, self.backbone).tokens_and_rollout(x)
        pooled = fmap.mean(dim=(2, 3))
        logits = self.head(self.dropout(pooled))
        scores = self.token_cam(fmap)
        n, c, g, _ = scores.shape
        cam = (scores.reshape(n, c, g * g) @ rollout).reshape(n, c, g, g)
        return logits, cam, pooled


def small_cnn(width: int = 32) -> tuple[nn.Module, int]:
    """The notebooks' baseline CNN, made fully convolutional: 4 conv blocks, BN, ReLU, max-pool."""
    layers: list[nn.Module] = []
    cin = 3
    for k in range(4):
        cout = width * 2**k
        layers += [
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        ]
        if k < 3:
            layers.append(nn.MaxPool2d(2))
        cin = cout
    return nn.Sequential(*layers), cin


def vit(
    image_size: int, patch: int = 16, dim: int = 192, depth: int = 12, heads: int = 3, conv_stem: bool = False
) -> tuple[nn.Module, int]:
    stem = None
    if conv_stem:
        # "Early convolutions help transformers see better" (Xiao et al., 2021): stride-2 3x3 convs down to the
        # patch grid, then the usual 1x1 projection; trains far faster from scratch than a 16x16 patchify.
        from torchvision.models.vision_transformer import ConvStemConfig

        channels, k = [], patch
        out = dim // 8
        while k > 1:
            channels.append(ConvStemConfig(out_channels=out, kernel_size=3, stride=2))
            out = min(out * 2, dim)
            k //= 2
        stem = channels
    model = torchvision.models.VisionTransformer(
        image_size=image_size,
        patch_size=patch,
        num_layers=depth,
        num_heads=heads,
        hidden_dim=dim,
        mlp_dim=4 * dim,
        num_classes=1,
        conv_stem_configs=stem,
    )
    model.heads = nn.Identity()
    return VitTrunk(model), dim


def vit_hybrid(image_size: int, dim: int = 192, depth: int = 4, heads: int = 3) -> tuple[nn.Module, int]:
    """ViT-Hybrid (Dosovitskiy et al., 2021, section 3.1): the tokens are the 14x14 feature map of ResNet-18's first
    three stages (stride 16), projected to ``dim``, then a standard transformer encoder with class token and position
    embeddings. The stem makes a ViT learn from 2,400 images at 224 px within a CPU's hours; the stem can start from a
    trained CNN's weights (``--stem-from``) and the whole net is distilled from it (``--teacher``)."""
    model = torchvision.models.VisionTransformer(
        image_size=image_size,
        patch_size=16,
        num_layers=depth,
        num_heads=heads,
        hidden_dim=dim,
        mlp_dim=4 * dim,
        num_classes=1,
    )
    r = torchvision.models.resnet18()
    model.conv_proj = nn.Sequential(
        r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3, nn.Conv2d(256, dim, 1)
    )
    model.heads = nn.Identity()
    return VitTrunk(model), dim


def load_stem(net: nn.Module, checkpoint: Path) -> int:
    """Copy ResNet-18 stages 0-6 (conv1 ... layer3) of a trained ``resnet18`` checkpoint into a hybrid ViT's stem."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
    prefix = "backbone.layers."
    stem = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix) and int(k.split(".")[2]) <= 6}
    if not stem:
        raise ValueError(f"{checkpoint}: no ResNet stages to copy (is it a resnet18 checkpoint?)")
    target = cast(Any, net).backbone.vit.conv_proj
    missing = target.load_state_dict(stem, strict=False)
    if missing.unexpected_keys:
        raise ValueError(f"{checkpoint}: stem keys do not fit: {missing.unexpected_keys[:3]}")
    return len(stem)


def _pretrained(name: str, enabled: bool) -> object | None:
    """torchvision's ImageNet weights enum for ``name`` when requested (downloads need a network)."""
    if not enabled:
        return None
    return torchvision.models.get_model_weights(name).DEFAULT


def build(
    arch: str,
    num_classes: int,
    image_size: int = 224,
    pretrained: bool = False,
    vit_dim: int = VIT_DIM,
    vit_depth: int = VIT_DEPTH,
    vit_heads: int = VIT_HEADS,
    vit_patch: int = VIT_PATCH,
    conv_stem: bool = False,
) -> nn.Module:
    """Build ``arch`` with the allscan forward: ``(logits, cam, pooled_features)``."""
    if arch not in _REGISTRY:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")
    args = BuildArgs(num_classes, image_size, pretrained, vit_dim, vit_depth, vit_heads, vit_patch, conv_stem)
    return _REGISTRY[arch](args)


def _head(trunk: nn.Module, dim: int, args: BuildArgs) -> nn.Module:
    """The linear head on the trunk's spatial mean; a ViT trunk's heatmap is carried back by rollout."""
    if isinstance(trunk, VitTrunk):
        return VitNet(trunk, dim, args.num_classes, dropout=0.1)
    return GapNet(trunk, dim, args.num_classes, dropout=0.1)


@register_model("vit")
def _vit(a: BuildArgs) -> nn.Module:
    return _head(*vit(a.image_size, a.vit_patch, a.vit_dim, a.vit_depth, a.vit_heads, a.conv_stem), a)


@register_model("vit_hybrid")
def _vit_hybrid(a: BuildArgs) -> nn.Module:
    return _head(*vit_hybrid(a.image_size, a.vit_dim, a.vit_depth, a.vit_heads), a)


@register_model("vit_ti_16")
def _vit_ti_16(a: BuildArgs) -> nn.Module:
    return _head(*vit(a.image_size, 16, 192, 12, 3, a.conv_stem), a)


@register_model("vit_b_16")
def _vit_b_16_model(a: BuildArgs) -> nn.Module:
    return _head(*_vit_b_16(a.image_size, a.pretrained, a.conv_stem), a)


@register_model("resnet18")
def _resnet18(a: BuildArgs) -> nn.Module:
    return _head(*_resnet(torchvision.models.resnet18(weights=_pretrained("resnet18", a.pretrained))), a)


@register_model("resnet50")
def _resnet50(a: BuildArgs) -> nn.Module:
    return _head(*_resnet(torchvision.models.resnet50(weights=_pretrained("resnet50", a.pretrained))), a)


@register_model("efficientnet_b0")
def _efficientnet_b0(a: BuildArgs) -> nn.Module:
    net = torchvision.models.efficientnet_b0(weights=_pretrained("efficientnet_b0", a.pretrained))
    return _head(TorchvisionTrunk(net.features), 1280, a)


@register_model("googlenet")
def _googlenet_model(a: BuildArgs) -> nn.Module:
    return _head(*_googlenet(a.pretrained), a)


@register_model("cnn")
def _cnn(a: BuildArgs) -> nn.Module:
    return _head(*small_cnn(), a)


@register_model("vgg16")
def _vgg16(a: BuildArgs) -> nn.Module:
    from allscan.train.mlp_head import build_mlp_head_net

    return build_mlp_head_net("vgg16", a.num_classes, a.pretrained)


@register_model("alexnet")
def _alexnet(a: BuildArgs) -> nn.Module:
    from allscan.train.mlp_head import build_mlp_head_net

    return build_mlp_head_net("alexnet", a.num_classes, a.pretrained)


def _resnet(model: Any) -> tuple[nn.Module, int]:  # a torchvision ResNet
    dim = model.fc.in_features
    layers = nn.Sequential(*(list(model.children())[:-2]))
    return TorchvisionTrunk(layers), dim


def _googlenet(pretrained: bool) -> tuple[nn.Module, int]:
    weights = _pretrained("googlenet", pretrained)
    model = torchvision.models.googlenet(weights=weights, aux_logits=False, init_weights=weights is None)
    keep = [c for n, c in model.named_children() if n not in ("avgpool", "dropout", "fc", "aux1", "aux2")]
    trunk = nn.Sequential(*keep)
    if getattr(model, "transform_input", False):
        trunk = nn.Sequential(_GoogleNetInput(), trunk)
    return TorchvisionTrunk(trunk), 1024


class _GoogleNetInput(nn.Module):
    """torchvision's GoogLeNet input re-normalisation for its pretrained weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = x[:, 0:1] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
        x1 = x[:, 1:2] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
        x2 = x[:, 2:3] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
        return torch.cat([x0, x1, x2], 1)


def _vit_b_16(image_size: int, pretrained: bool, conv_stem: bool) -> tuple[nn.Module, int]:
    if pretrained:
        model = torchvision.models.vit_b_16(weights=_pretrained("vit_b_16", True))
        model.heads = nn.Identity()
        return VitTrunk(model), 768
    return vit(image_size, 16, 768, 12, 12, conv_stem)
