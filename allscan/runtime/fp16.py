"""FP32 ONNX -> FP16 ONNX for TensorRT, and the CPU check that it still predicts the same.

Why in the graph: TensorRT 11 dropped ``BuilderFlag.FP16`` (networks are strongly typed), so precision must be
decided in the ONNX. Inputs and outputs stay float32 (``keep_io_types``) so every runner takes and returns the
same arrays. Normalisation statistics stay FP32: LayerNorm's variance of a ViT's residual stream overflows
FP16 (x^2 > 65504 for |x| > 256) and softmax sums lose the small probabilities, so their ops are on the block
list.

Three defects of onnxconverter-common's converter, all seen on the tiny test model, are repaired here: a
graph input feeding several nodes gets its Cast node twice (ONNX Runtime refuses duplicate node names); a
graph output that is also consumed inside the graph keeps a stale FP16 ``value_info`` (type error on load);
a graph output produced by a blocked (FP32) op is declared FP16 despite ``keep_io_types``. Outputs are cast
back to float32 and intermediate type annotations are dropped and re-inferred.
"""

from __future__ import annotations

import re
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from allscan.runtime.base import RunnerError
from allscan.runtime.onnxrt import ort_session
from allscan.runtime.softmax import softmax

# Ops kept in FP32 on top of onnxconverter-common's defaults: normalisation statistics and softmax reductions.
FP32_OPS = (
    "LayerNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "Softmax",
    "LogSoftmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL2",
    "Pow",
    "Sqrt",
    "Reciprocal",
    "Exp",
)
PARITY_TOP1 = 0.99  # minimum top-1 agreement with the FP32 reference
PARITY_MAX_DP = 0.02  # maximum |delta probability| over all images and classes


def block_list() -> list[str]:
    from onnxconverter_common import float16

    return sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS))


def _float_outputs_back(model: Any, float_outputs: set[str]) -> None:
    """Give back float32 to graph outputs the converter turned FP16 (it does so when a blocked op feeds one)."""
    from onnx import TensorProto, helper

    for output in model.graph.output:
        tensor_type = output.type.tensor_type
        if output.name not in float_outputs or tensor_type.elem_type == TensorProto.FLOAT:
            continue
        inner = output.name + "_fp16"
        for node in model.graph.node:
            node.output[:] = [inner if o == output.name else o for o in node.output]
            node.input[:] = [inner if i == output.name else i for i in node.input]
        model.graph.node.append(helper.make_node("Cast", [inner], [output.name], to=TensorProto.FLOAT))
        tensor_type.elem_type = TensorProto.FLOAT


def _repair(model: Any, float_outputs: set[str]) -> Any:
    import onnx

    _float_outputs_back(model, float_outputs)

    seen: set[bytes] = set()
    nodes = []
    for node in model.graph.node:
        key = node.SerializeToString()
        if key not in seen:
            seen.add(key)
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    return model


def convert_model_fp16(model: Any, ops_fp32: Iterable[str] | None = None) -> Any:
    """An in-memory ONNX ModelProto converted to FP16 with float32 IO and ``ops_fp32`` kept in FP32."""
    from onnx import TensorProto
    from onnxconverter_common import float16

    blocked = sorted(set(ops_fp32)) if ops_fp32 is not None else block_list()
    float_outputs = {o.name for o in model.graph.output if o.type.tensor_type.elem_type == TensorProto.FLOAT}
    with warnings.catch_warnings():  # one warning per weight below FP16's range (clamped to 1e-7): noise
        warnings.simplefilter("ignore", UserWarning)
        converted = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked)
    return _repair(converted, float_outputs)


def convert_fp16(src: Path, dst: Path, ops_fp32: Iterable[str] | None = None) -> Path:
    """Write the FP16 version of ``src`` to ``dst`` (atomically) and return ``dst``."""
    import onnx

    model = convert_model_fp16(onnx.load(str(src)), ops_fp32)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(dst)
    return dst


def tensor_types(model: Any, op_type: str) -> list[tuple[list[int], list[int]]]:
    """For each ``op_type`` node: (element types of its inputs, of its outputs), from shape inference.

    Lets a test prove that LayerNormalization and Softmax really run on float32 tensors
    (TensorProto.FLOAT = 1, FLOAT16 = 10) in the converted graph.
    """
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types: dict[str, int] = {}
    for info in [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]:
        types[info.name] = info.type.tensor_type.elem_type
    for init in inferred.graph.initializer:
        types[init.name] = init.data_type
    return [
        ([types.get(i, 0) for i in node.input if i], [types.get(o, 0) for o in node.output])
        for node in inferred.graph.node
        if node.op_type == op_type
    ]


@dataclass
class Parity:
    """Agreement of a candidate (FP16 ONNX, or a TensorRT engine) with the FP32 reference on the same
    inputs."""

    n_images: int = 0
    top1_agreement: float = 0.0
    max_abs_dp: float = 0.0  # max over images and classes of |p_candidate - p_reference|
    mean_abs_dp: float = 0.0
    top1_min: float = PARITY_TOP1
    max_dp_allowed: float = PARITY_MAX_DP
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.n_images > 0 and self.top1_agreement >= self.top1_min and self.max_abs_dp <= self.max_dp_allowed

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_images": self.n_images,
            "top1_agreement": round(self.top1_agreement, 6),
            "max_abs_dp": float(f"{self.max_abs_dp:.6g}"),
            "mean_abs_dp": float(f"{self.mean_abs_dp:.6g}"),
            "top1_min": self.top1_min,
            "max_dp_allowed": self.max_dp_allowed,
            "passed": self.passed,
            "notes": list(self.notes),
        }

    def line(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"parity {verdict}: top-1 agreement {self.top1_agreement:.2%} on {self.n_images} images "
            f"(>= {self.top1_min:.0%}), max |dp| {self.max_abs_dp:.4f} (<= {self.max_dp_allowed})"
        )


class ParityAccumulator:
    """Collects reference and candidate logits batch by batch (so images never all sit in memory)."""

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = temperature
        self.n = 0
        self.agree = 0
        self.max_dp = 0.0
        self.sum_dp = 0.0
        self.n_values = 0

    def add(self, reference_logits: np.ndarray, candidate_logits: np.ndarray) -> None:
        if reference_logits.shape != candidate_logits.shape:
            raise ValueError(f"logits shapes differ: {reference_logits.shape} vs {candidate_logits.shape}")
        p_ref = softmax(reference_logits, self.temperature)
        p_cand = softmax(candidate_logits, self.temperature)
        dp = np.abs(p_ref - p_cand)
        finite = bool(np.isfinite(candidate_logits).all())
        self.n += len(p_ref)
        self.agree += int((p_ref.argmax(1) == p_cand.argmax(1)).sum()) if finite else 0
        self.max_dp = max(self.max_dp, float(dp.max()) if finite else float("inf"))
        self.sum_dp += float(dp.sum()) if finite else 0.0
        self.n_values += dp.size

    def result(self, notes: Iterable[str] = ()) -> Parity:
        return Parity(
            n_images=self.n,
            top1_agreement=self.agree / self.n if self.n else 0.0,
            max_abs_dp=self.max_dp,
            mean_abs_dp=self.sum_dp / self.n_values if self.n_values else 0.0,
            notes=list(notes),
        )


_NO_KERNEL = re.compile(r"Could not find an implementation for (\w+)\((\d+)\)")


def ort_fp32_fallback_ops(onnx_path: Path) -> list[str]:
    """Op types that ONNX Runtime's CPU provider runs in FP32 in an FP16 graph, because it has no FP16 kernel.

    ORT inserts casts around such nodes (named ``InsertedPrecisionFreeCast_*`` in the optimized graph): on CPU
    the FP16 graph's arithmetic for those ops is FP32, so a CPU parity check measures FP16 weight rounding,
    not FP16 arithmetic. TensorRT's parity gate measures the real thing.
    """
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized.onnx"
        ort_session(onnx_path, optimization="basic", optimized_model_path=out)
        graph = onnx.load(str(out), load_external_data=False).graph
    kept_fp32 = set(block_list())  # FP32 by our choice, not for lack of a kernel
    ops = {
        node.op_type
        for node in graph.node
        if node.op_type != "Cast"
        and node.op_type not in kept_fp32
        and any(name.startswith("InsertedPrecisionFreeCast_") for name in [*node.input, *node.output])
    }
    return sorted(ops)


def _session(path: Path, threads: int | None, fp16: bool = False) -> Any:
    # ONNX Runtime 1.32's layout optimisations (ORT_ENABLE_ALL) segfault on the FP16 ViT (seen here); EXTENDED
    # still fuses, and the FP16 graph is only ever run on the CPU for this check.
    try:
        return ort_session(path, threads, optimization="extended" if fp16 else "all")
    except RunnerError as exc:
        match = _NO_KERNEL.search(str(exc.__cause__))
        if match:
            raise RuntimeError(
                f"ONNX Runtime CPU has no FP16 kernel for {match.group(1)} (opset {match.group(2)}): "
                "check this model's FP16 numerics on a GPU instead"
            ) from exc
        raise


def compare_onnx(
    reference: Path,
    candidate: Path,
    batches: Iterable[np.ndarray],
    temperature: float = 1.0,
    threads: int | None = None,
) -> Parity:
    """Run both ONNX files on ONNX Runtime CPU over ``batches`` and compare their softmax probabilities."""
    ref, cand = _session(reference, threads), _session(candidate, threads, fp16=True)
    ref_in, cand_in = ref.get_inputs()[0].name, cand.get_inputs()[0].name
    acc = ParityAccumulator(temperature)
    for batch in batches:
        (ref_logits,) = ref.run(["logits"], {ref_in: batch})
        (cand_logits,) = cand.run(["logits"], {cand_in: batch})
        acc.add(ref_logits, cand_logits)
    fallback = ort_fp32_fallback_ops(candidate)
    notes = [f"ORT CPU ran these ops in FP32 (no FP16 kernel): {', '.join(fallback)}"] if fallback else []
    return acc.result(notes)
