"""The notebooks' whole job, as the second baseline: classify *and* explain every image, one at a time.

What seed notebook 001 does per image: PIL open, torchvision ``Resize -> ToTensor -> Normalize``, the network in
torch eager at batch 1 with autograd on, Grad-CAM by autograd (the last 4-D feature map's gradient of the top
class, averaged per channel, weighting the map), upsampled to the image, colour-mapped, blended over it and saved
as a PNG. ``naive_ips`` (``naive.py``) times the classification alone; this times what a lab would actually
run to get both labels and heatmaps, which is what ``allscan run`` replaces.

Same network, weights, thread choice and denormal flushing as ``naive.py``, so the two baselines differ only by
the explanation and the PNG.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from allscan.bench.naive import NaiveResult, fastest_threads, notebook_setup
from allscan.bench.stats import median, rate, timed
from allscan.models.store import StoredModel


class _LastFeatureMap:
    """Forward hooks on every 2-D convolution keep the last 4-D activation of a forward pass (Grad-CAM's
    target layer, as the notebooks pick it: the deepest convolution)."""

    def __init__(self, net: Any) -> None:
        import torch

        self.value: Any = None
        self.handles = [m.register_forward_hook(self._keep) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
        if not self.handles:
            raise ValueError("the network has no 2-D convolution to take Grad-CAM from")

    def _keep(self, _module: Any, _inputs: Any, output: Any) -> None:
        if output.dim() == 4 and output.requires_grad:
            output.retain_grad()
            self.value = output

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _overlay(rgb: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """The heatmap blended over the picture, as the notebooks draw it (jet colour map, 40 % opacity)."""
    import cv2

    heat = cv2.applyColorMap((255 * cam).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    return (0.6 * rgb + 0.4 * heat).astype(np.uint8)


def measure_naive_full(model: StoredModel, images: list[Path], max_threads: int, reps: int) -> NaiveResult:
    """Images per second of classify + Grad-CAM + PNG overlay, one image at a time."""
    setup = notebook_setup(model)
    if isinstance(setup, NaiveResult):
        return setup
    import torch
    import torch.nn.functional as F  # noqa: N812 - torch's own spelling
    from PIL import Image

    net, weights, transform = setup.net, setup.weights, setup.transform
    try:
        hook = _LastFeatureMap(net)
    except ValueError as exc:
        return NaiveResult(ips=None, skipped=f"no torch network for {model.card.architecture!r}: {exc}")
    out_dir = Path(tempfile.mkdtemp(prefix="allscan-naive-full-"))

    def explain(path: Path, k: int) -> None:
        picture = Image.open(path).convert("RGB")
        x = transform(picture).unsqueeze(0)
        net.zero_grad(set_to_none=True)
        out = net(x)
        logits = out[0] if isinstance(out, tuple) else out
        top = int(torch.softmax(logits, dim=1).argmax(dim=1).item())
        logits[0, top].backward()
        feature = hook.value
        weights_c = feature.grad.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights_c * feature).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=(picture.height, picture.width), mode="bilinear", align_corners=False)[0, 0]
        cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-8)
        Image.fromarray(_overlay(np.asarray(picture), cam.detach().numpy())).save(out_dir / f"{k}.png")

    def one_rep(paths: list[Path]) -> None:
        for k, path in enumerate(paths):
            explain(path, k)

    try:
        threads = fastest_threads(lambda: one_rep(images[:4]), max_threads)
        rates = [rate(len(images), timed(lambda: one_rep(images))[0]) for _ in range(reps)]
    finally:
        hook.remove()
        for png in out_dir.glob("*.png"):
            png.unlink()
        out_dir.rmdir()
    return NaiveResult(ips=median(rates), weights=weights, threads=threads)
