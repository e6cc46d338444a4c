"""FP16 conversion: IO stays float32, normalisation stays FP32, predictions stay put on ONNX Runtime CPU."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from allscan.runtime.engine_build import Fp16OnnxFromPath
from allscan.runtime.fp16 import FP32_OPS, block_list, compare_onnx, convert_fp16, tensor_types

FLOAT, FLOAT16 = 1, 10
REPO = Path(__file__).resolve().parents[1]


def _inputs(n_batches: int = 4, batch: int = 8, size: int = 64, scale: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [(scale * rng.normal(size=(batch, 3, size, size))).astype(np.float32) for _ in range(n_batches)]


def test_tiny_model_fp16_keeps_io_float32_and_predictions(tiny_store: Path, tmp_path: Path) -> None:
    import onnx

    src = tiny_store / "tiny" / "model.onnx"
    dst = convert_fp16(src, tmp_path / "tiny.fp16.onnx")
    model = onnx.load(str(dst))
    io_types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}
    assert io_types == {"image": FLOAT, "logits": FLOAT, "cam": FLOAT, "ood": FLOAT}
    assert any(init.data_type == FLOAT16 for init in model.graph.initializer)  # weights really are FP16
    # The tiny graph hits both converter defects (input feeding two nodes, output `cam` consumed inside):
    # loading it in ONNX Runtime at all is the regression test of the repair.
    parity = compare_onnx(src, dst, _inputs())
    assert parity.passed, parity.line()
    assert parity.n_images == 32 and parity.top1_agreement == 1.0 and parity.max_abs_dp < 1e-3


class _Block:
    """A ViT-like block built lazily with torch (only the test imports torch)."""

    @staticmethod
    def export(path: Path, scale: float = 1.0) -> None:
        import torch
        from torch import nn

        class TinyViT(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.patch = nn.Conv2d(3, 32, kernel_size=8, stride=8)
                self.norm1 = nn.LayerNorm(32)
                self.qkv = nn.Linear(32, 96)
                self.proj = nn.Linear(32, 32)
                self.norm2 = nn.LayerNorm(32)
                self.mlp = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
                self.norm = nn.LayerNorm(32)
                self.head = nn.Linear(32, 4)

            def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                x = self.patch(image) * scale  # scale > 256 makes x^2 overflow FP16 inside LayerNorm
                n, c, h, w = x.shape
                x = x.flatten(2).transpose(1, 2)
                qkv = self.qkv(self.norm1(x)).reshape(n, h * w, 3, 4, 8).permute(2, 0, 3, 1, 4)
                q, k, v = qkv[0], qkv[1], qkv[2]
                attn = torch.softmax(q @ k.transpose(-2, -1) / 8**0.5, dim=-1)  # [N, heads, T, T]
                x = x + self.proj((attn @ v).transpose(1, 2).reshape(n, h * w, 32))
                x = x + self.mlp(self.norm2(x))
                tokens = self.head(self.norm(x))  # [N, h*w, C]
                cam = tokens.transpose(1, 2).reshape(n, 4, h, w)
                return tokens.mean(1), cam

        torch.manual_seed(0)
        model = TinyViT().eval()
        with torch.no_grad():
            torch.onnx.export(
                model,
                (torch.randn(2, 3, 64, 64),),
                str(path),
                input_names=["image"],
                output_names=["logits", "cam"],
                dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}, "cam": {0: "N"}},
                opset_version=17,
                dynamo=False,
            )


@pytest.fixture(scope="module")
def vit_block(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("vit") / "block.onnx"
    _Block.export(path, scale=300.0)
    return path


def test_layernorm_and_softmax_stay_fp32_in_a_transformer_block(vit_block: Path, tmp_path: Path) -> None:
    import onnx

    dst = convert_fp16(vit_block, tmp_path / "block.fp16.onnx")
    model = onnx.load(str(dst))
    ops = {node.op_type for node in model.graph.node}
    assert {"LayerNormalization", "Softmax", "MatMul"} <= ops
    for op in ("LayerNormalization", "Softmax"):
        for inputs, outputs in tensor_types(model, op):
            assert set(inputs) == {FLOAT} and set(outputs) == {FLOAT}, (op, inputs, outputs)
    matmuls = tensor_types(model, "MatMul")
    assert any(FLOAT16 in inputs for inputs, _ in matmuls)  # the heavy arithmetic did go to FP16

    # Control: without the block list the converter puts LayerNorm in FP16, which is what the list prevents.
    bare = convert_fp16(vit_block, tmp_path / "bare.fp16.onnx", ops_fp32=[])
    assert any(FLOAT16 in inputs for inputs, _ in tensor_types(onnx.load(str(bare)), "LayerNormalization"))


def test_transformer_block_fp16_parity_on_cpu(vit_block: Path, tmp_path: Path) -> None:
    dst = convert_fp16(vit_block, tmp_path / "block.fp16.onnx")
    parity = compare_onnx(vit_block, dst, _inputs(n_batches=4, batch=16))
    assert parity.passed, parity.line()
    assert parity.n_images == 64
    for note in parity.notes:  # which ops ONNX Runtime's CPU ran in FP32 for lack of FP16 kernels
        assert note.startswith("ORT CPU ran these ops in FP32")


def test_block_list_covers_normalisation_and_the_converter_defaults() -> None:
    blocked = set(block_list())
    assert set(FP32_OPS) <= blocked
    assert {"LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt", "Resize", "TopK"} <= blocked


def test_fp16_onnx_is_cached_beside_the_plans_until_the_source_changes(tiny_store: Path, tmp_path: Path) -> None:
    src = tiny_store / "tiny" / "model.onnx"
    cache = tmp_path / "trt" / "model.fp16.onnx"
    first = Fp16OnnxFromPath(src, cache, "a" * 64)()
    stamp = first.stat().st_mtime_ns
    assert Fp16OnnxFromPath(src, cache, "a" * 64)().stat().st_mtime_ns == stamp  # reused
    os.utime(cache, ns=(stamp - 10**9, stamp - 10**9))
    assert Fp16OnnxFromPath(src, cache, "b" * 64)().stat().st_mtime_ns != stamp - 10**9  # new source: reconverted
