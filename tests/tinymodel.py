"""A tiny but real model for tests: an ONNX graph with the store's contract, built with onnx.helper (no torch).

Graph: image [N,3,S,S] -> AveragePool(k) -> 1x1 Conv to C class maps = ``cam [N,C,S/k,S/k]`` -> GlobalAveragePool
-> ``logits [N,C]`` (so CAM is exact: logits are the spatial mean of the maps), and ``ood [N]`` = mean squared
input. Weights are fixed so that a red-dominant image scores class 0 and a blue-dominant one class C-1.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CLASSES = ("Benign", "Early", "Pre", "Pro")


def build_tiny_onnx(
    path: Path, size: int = 64, pool: int = 8, classes: tuple[str, ...] = CLASSES, grey: bool = False
) -> None:
    """``grey``: weights for a colour-free input (equal over channels): the sign of the mean input decides between
    the first and the last class, so the answer follows the lightness histogram's shape, never the stain."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n_cls = len(classes)
    weight = np.zeros((n_cls, 3, 1, 1), dtype=np.float32)
    for c in range(n_cls):
        t = c / max(1, n_cls - 1)
        weight[c, 0, 0, 0] = 2.0 * (1 - t) - 1.0  # R
        weight[c, 1, 0, 0] = 0.2
        weight[c, 2, 0, 0] = 2.0 * t - 1.0  # B
        if grey:
            weight[c, :, 0, 0] = 4.0 * (t - 0.5)
    bias = np.zeros((n_cls,), dtype=np.float32)
    nodes = [
        helper.make_node("AveragePool", ["image"], ["pooled"], kernel_shape=[pool, pool], strides=[pool, pool]),
        helper.make_node("Conv", ["pooled", "W", "B"], ["cam"]),
        helper.make_node("GlobalAveragePool", ["cam"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["logits"], axis=1),
        helper.make_node("Mul", ["image", "image"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["ood"], axes=[1, 2, 3], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "allscan_tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", n_cls]),
            helper.make_tensor_value_info("cam", TensorProto.FLOAT, ["N", n_cls, size // pool, size // pool]),
            helper.make_tensor_value_info("ood", TensorProto.FLOAT, ["N"]),
        ],
        initializer=[
            numpy_helper.from_array(weight, "W"),
            numpy_helper.from_array(bias, "B"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def make_tiny_store(root: Path, name: str = "tiny", size: int = 64, mode: str = "full", colour: str = "rgb") -> Path:
    """Write ``root/name/{model.onnx, card.json}`` and return the model folder."""
    from allscan.models.card import FlagThresholds, InputSpec, ModelCard, sha256_file, write_card

    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    build_tiny_onnx(folder / "model.onnx", size=size, grey=colour != "rgb")
    card = ModelCard(
        name=name,
        architecture="tiny_cam_test",
        classes=CLASSES,
        input=InputSpec(size=size, mode=mode, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), colour=colour),
        outputs=("logits", "cam", "ood"),
        heatmap_method="cam",
        flags=FlagThresholds(ood=1.5, low_confidence=0.4),
        class_labels={"Pro": "Pro-B ALL"},  # the report names a class by its card's label (test_report_browser)
        training={"note": "test model built by tests/tinymodel.py; not trained"},
        onnx_sha256=sha256_file(folder / "model.onnx"),
    )
    write_card(card, folder / "card.json")
    return folder


if __name__ == "__main__":  # pragma: no cover - manual use
    import sys

    print(json.dumps(str(make_tiny_store(Path(sys.argv[1])))))
