"""Tests that need a CUDA GPU and TensorRT: skipped elsewhere, with the reason. Run by .ci/gpu-check.sh.

Not run on this project's own machines (no GPU, no TensorRT): see .drafts/gpu.md for what was verified where.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def _gpu_reason() -> str:
    from allscan.runtime.cuda import probe_cuda
    from allscan.runtime.tensorrt import tensorrt_status

    probe = probe_cuda()
    if not probe.usable:
        return probe.reason
    version, problem = tensorrt_status()
    return "" if version else problem


_REASON = _gpu_reason()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(bool(_REASON), reason=f"needs a CUDA GPU and TensorRT: {_REASON}"),
]


@pytest.mark.parametrize("binding", ["pycuda", "cuda-python"])
def test_cuda_backend_round_trip(binding: str) -> None:
    from allscan.runtime.cuda import CudaError, open_backend

    try:
        backend = open_backend(0, prefer=binding)
    except CudaError as exc:
        pytest.skip(str(exc))
    if backend.name != binding:
        backend.close()
        pytest.skip(f"{binding} not installed")
    with backend.scope():
        host = backend.pinned_empty((4, 3, 8, 8), np.dtype(np.float32))
        host[:] = np.arange(host.size, dtype=np.float32).reshape(host.shape)
        back = backend.pinned_empty((4, 3, 8, 8), np.dtype(np.float32))
        dev = backend.device_alloc(host.nbytes)
        stream, done = backend.stream(), backend.event()
        backend.htod_async(dev, host, stream)
        backend.dtoh_async(back, dev, stream)
        done.record(stream)
        done.synchronize()
        np.testing.assert_array_equal(back, host)
        dev.free()
    backend.close()


def test_build_engine_and_run_tiny_model(tiny_store: Path) -> None:
    from allscan.models.store import load_model
    from allscan.runtime.engine_build import BuildOptions, build_engine
    from allscan.runtime.onnxrt import OnnxRuntimeRunner
    from allscan.runtime.select import select_runner
    from allscan.runtime.tensorrt import TensorRTRunner

    model = load_model("tiny")
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(8, 3, 64, 64)).astype(np.float32) for _ in range(4)]
    result = build_engine(model, BuildOptions(max_batch=16, opt_batch=8, workspace_gb=1), lambda b: batches)
    assert result.installed and result.parity.passed, result.message
    choice = select_runner(model, "auto", 8)
    assert isinstance(choice.runner, TensorRTRunner), choice.reason
    with choice.runner as trt_runner, OnnxRuntimeRunner(model.onnx_path) as ort_runner:
        for batch in [batches[0], batches[1][:3], np.concatenate(batches)]:  # full, partial, over max batch
            got, want = trt_runner.infer(batch), ort_runner.infer(batch)
            assert set(got) >= {"logits", "cam", "ood"}
            np.testing.assert_allclose(got["logits"], want["logits"], atol=2e-2)
