"""The runner contract (polygraphy's shape), the pipelined feed of ``allscan run`` and the lossless transport of
prepared images: each proved on real ONNX Runtime runs of the tiny model, bit for bit."""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from allscan.models.store import load_model
from allscan.pipeline import flags
from allscan.pipeline.batching import Batcher, infer_stream
from allscan.pipeline.discover import Found
from allscan.pipeline.workers import Prepared
from allscan.runtime.base import Runner, RunnerError
from allscan.runtime.onnxrt import OnnxRuntimeRunner
from allscan.runtime.softmax import softmax
from allscan.runtime.tensorrt import TensorRTRunner


def _batches(sizes: list[int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, 3, 64, 64)).astype(np.float32) for n in sizes]


def test_backends_write_only_the_impl_hooks() -> None:
    assert TensorRTRunner.infer_many is Runner.infer_many and TensorRTRunner.infer is Runner.infer
    assert OnnxRuntimeRunner.infer_many is Runner.infer_many
    source = inspect.getsource(TensorRTRunner.infer_impl)
    assert "self.infer_many(" not in source and "self.infer(" not in source


def test_one_softmax() -> None:
    assert flags.softmax is softmax
    p = softmax(np.array([[1.0, 2.0, 3.0]], dtype=np.float32), temperature=2.0)
    assert p.dtype == np.float64 and np.isclose(p.sum(), 1.0) and p.argmax() == 2


def test_ort_infer_many_equals_infer_bit_for_bit_and_pulls_lazily(tiny_store: Path) -> None:
    model = load_model("tiny")
    batches = _batches([4, 1, 3, 4])
    pulled: list[int] = []

    def source() -> Iterator[np.ndarray]:
        for k, batch in enumerate(batches):
            pulled.append(k)
            yield batch

    with OnnxRuntimeRunner(model.onnx_path, threads=1, position_independent=True) as runner:
        with runner.profile() as profile:
            stream = runner.infer_many(source())
            first = next(stream)
            assert pulled == [0, 1]  # batch 1 is in flight while batch 0 is handed back, no further
            got = [first, *stream]
        assert profile.batches == 4 and profile.rows == 12 and profile.seconds > 0
        want = [runner.infer(b) for b in batches]
    for g, w in zip(got, want, strict=True):
        for name in w:
            np.testing.assert_array_equal(g[name], w[name])


def test_infer_many_checks_before_running(tiny_store: Path) -> None:
    runner = OnnxRuntimeRunner(load_model("tiny").onnx_path, threads=1)
    with pytest.raises(RunnerError, match="before activate"):
        runner.infer_many([])
    with runner, pytest.raises(RunnerError, match="float32"):
        list(runner.infer_many([np.zeros((1, 3, 64, 64), dtype=np.float64)]))


def _items(rows: list[int]) -> list[Prepared]:
    return [
        Prepared(found=Found("s", f"{i}", f"{i}", f"/{i}"), tensors=b) for i, b in enumerate(_batches(rows, seed=1))
    ]


def test_infer_stream_gives_what_the_one_batch_batcher_gives(tiny_store: Path) -> None:
    rows = [1, 3, 2, 5, 1, 1, 7]
    with OnnxRuntimeRunner(load_model("tiny").onnx_path, threads=1, position_independent=True) as runner:
        sizes: list[int] = []

        def infer_many(batches: object) -> Iterator[dict[str, np.ndarray]]:
            def counted() -> Iterator[np.ndarray]:
                for batch in batches:  # type: ignore[attr-defined]
                    sizes.append(len(batch))
                    yield batch

            return runner.infer_many(counted())

        streamed = list(infer_stream(_items(rows), infer_many, 4))
        batcher = Batcher(runner.infer, 4)
        stepped = [pair for item in _items(rows) for pair in batcher.add(item)] + batcher.flush()
    assert sizes == [4, 4, 4, 4, 4]  # whole batches; only the last may be short
    assert [i.found.image for i, _ in streamed] == [str(i) for i in range(len(rows))]
    for (a, out_a), (b, out_b), k in zip(streamed, stepped, rows, strict=True):
        assert a.found == b.found and out_a["logits"].shape == (k, 4)
        for name in out_b:
            np.testing.assert_array_equal(out_a[name], out_b[name])


def test_prepared_crosses_processes_packed_and_unchanged() -> None:
    grey = np.repeat(np.random.default_rng(2).normal(size=(2, 1, 64, 64)).astype(np.float32), 3, axis=1)
    labels = np.zeros((64, 64), dtype=np.int32)
    labels[2:4, 2:4], labels[5:7, 1:3] = 1, 300
    item = Prepared(found=Found("s", "i", "i", "/i"), tensors=grey, labels=labels)
    packed = pickle.dumps(item)
    back = pickle.loads(packed)
    assert len(packed) < (grey.nbytes + labels.nbytes) / 2  # one plane of three, labels in 16 bits
    np.testing.assert_array_equal(back.tensors, grey)
    np.testing.assert_array_equal(back.labels, labels)
    assert back.tensors.dtype == np.float32 and back.labels.dtype == np.int32 and back.tensors.flags.c_contiguous
    colour = grey.copy()
    colour[:, 2] += 1.0
    assert np.array_equal(pickle.loads(pickle.dumps(Prepared(found=item.found, tensors=colour))).tensors, colour)
