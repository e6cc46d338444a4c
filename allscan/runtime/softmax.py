"""The one softmax: the flags, the parity gates (TensorRT, FP16, ONNX export) and calibration read logits with it.

Why one: the probabilities in ``images.csv`` and the parity numbers in a sidecar must mean the same thing; three
copies had already drifted in dtype and axis handling.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise (last axis) softmax of ``logits / temperature`` in float64 (temperature from the card's
    calibration; 0 or None means 1)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature or 1.0)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
