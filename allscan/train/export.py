"""Export to the store: ``engines/<name>/model.onnx`` (image -> logits, cam, ood; dynamic batch; opset 17) with an
ONNX Runtime vs torch parity check, and ``card.json``.

The TorchScript-based exporter (``dynamo=False``) is used on purpose: torch 2.14's default exporter fixed the batch
dimension at 1 for torchvision ViTs and failed on trained ResNet/EfficientNet (see shared measurements).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from allscan.runtime.onnxrt import ort_session
from allscan.runtime.softmax import softmax

OPSET = 17
PARITY_MAX_DP = 1e-4


def export_onnx(model: nn.Module, path: Path, size: int, example: np.ndarray | None = None) -> float:
    """Write the ONNX file and return the max |delta softmax| between ONNX Runtime and torch on ``example``."""
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.randn(2, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["image"],
            output_names=["logits", "cam", "ood"],
            dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}, "cam": {0: "N"}, "ood": {0: "N"}},
        )
    x = example if example is not None else np.random.default_rng(0).normal(size=(4, 3, size, size))
    x = x.astype(np.float32)
    session = ort_session(path)
    ort_logits = session.run(["logits"], {"image": x})[0]
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(x))[0].numpy()
    delta = float(np.abs(softmax(ort_logits) - softmax(torch_logits)).max())
    if delta > PARITY_MAX_DP:
        raise RuntimeError(f"ONNX Runtime vs torch parity failed: max |dp| = {delta:.2e} > {PARITY_MAX_DP}")
    return delta
