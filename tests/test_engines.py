"""TensorRT engines without a GPU: sidecar decisions, backend choice, the runner on a fake GPU, CLI refusals.

What these prove and what they cannot: the decision logic, the order of checks (no TensorRT object before a
device answered), the double-buffered runner's buffer and stream logic (on deferred fake streams), and every
refusal's one-line message and exit code. They do not prove that real TensorRT builds or runs a plan: that
needs ``@pytest.mark.gpu`` (tests/test_engines_gpu.py) on a machine with a GPU and TensorRT."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_gpu import (
    FAKE_GPU,
    FAKE_TRT_VERSION,
    FakeBackend,
    fake_probe,
    fake_tensorrt,
    no_gpu_probe,
)
from typer.testing import CliRunner

from allscan.cli import app
from allscan.models.card import sha256_file
from allscan.models.store import StoredModel, load_model
from allscan.runtime import cuda
from allscan.runtime.base import RunnerError
from allscan.runtime.cuda import GpuInfo
from allscan.runtime.engine_build import EngineFromPlan
from allscan.runtime.onnxrt import OnnxRuntimeRunner
from allscan.runtime.select import select_runner
from allscan.runtime.sidecar import (
    MachineInfo,
    Sidecar,
    check_sidecar,
    engine_statuses,
    engine_stem,
    pick_engine,
    read_sidecar,
    write_sidecar,
)
from allscan.runtime.tensorrt import TensorRTRunner

REPO = Path(__file__).resolve().parents[1]
HERE = MachineInfo(FAKE_GPU.name, FAKE_GPU.cc, FAKE_TRT_VERSION)


def install_engine(model: StoredModel, plan: bytes = b"fake-plan", max_batch: int = 8, **changes: object) -> Path:
    """Write a plan and its sidecar into the model's trt/ folder as build-engine would; return the plan
    path."""
    stem = engine_stem(model.card.model_id, "fp16", max_batch, FAKE_TRT_VERSION, FAKE_GPU.cc, FAKE_GPU.name)
    model.trt_dir.mkdir(parents=True, exist_ok=True)
    path = model.trt_dir / f"{stem}.plan"
    path.write_bytes(plan)
    fields: dict[str, object] = dict(
        model_name=model.card.name,
        model_id=model.card.model_id,
        onnx_sha256=model.card.onnx_sha256,
        precision="fp16",
        plan_file=path.name,
        plan_sha256=sha256_file(path),
        plan_bytes=len(plan),
        tensorrt_version=FAKE_TRT_VERSION,
        gpu_name=FAKE_GPU.name,
        compute_capability=FAKE_GPU.cc,
        profile={"min": [1, 3, 64, 64], "opt": [4, 3, 64, 64], "max": [max_batch, 3, 64, 64]},
        parity={"passed": True, "top1_agreement": 1.0, "max_abs_dp": 0.001, "n_images": 14},
    )
    fields.update(changes)
    write_sidecar(Sidecar(**fields), path.with_suffix(".json"))  # type: ignore[arg-type]
    return path


@pytest.fixture()
def tiny(tiny_store: Path) -> StoredModel:
    return load_model("tiny")


@pytest.fixture()
def fake_gpu(monkeypatch: pytest.MonkeyPatch, tiny: StoredModel) -> FakeBackend:
    """This machine 'has' an A100 and TensorRT 10.13; CUDA work runs on deferred fake streams."""
    backend = FakeBackend()
    monkeypatch.setattr(cuda, "probe_cuda", lambda allow_nvidia_smi=False: fake_probe())
    monkeypatch.setattr(cuda, "open_backend", lambda device=0, prefer=None: backend)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(backend, tiny.onnx_path))
    return backend


@pytest.fixture()
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda, "probe_cuda", lambda allow_nvidia_smi=False: no_gpu_probe())


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {lines}"
    return lines[0]


# --- naming and the compatibility decision ------------------------------------------------------------------


def test_engine_name_carries_everything_that_makes_a_plan_unusable_elsewhere() -> None:
    stem = engine_stem("vit@1a2b3c4d5e6f", "fp16", 64, "10.13.0.35", "8.9", "NVIDIA GeForce RTX 4090")
    assert stem == "vit-1a2b3c4d5e6f-fp16-b64-trt10.13.0.35-sm89-nvidia-geforce-rtx-4090"
    other_gpu = engine_stem("vit@1a2b3c4d5e6f", "fp16", 64, "10.13.0.35", "8.9", "NVIDIA L4")
    other_batch = engine_stem("vit@1a2b3c4d5e6f", "fp16", 32, "10.13.0.35", "8.9", "NVIDIA GeForce RTX 4090")
    assert len({stem, other_gpu, other_batch}) == 3


def test_matching_sidecar_is_usable(tiny: StoredModel) -> None:
    plan = install_engine(tiny)
    usable, reason = check_sidecar(read_sidecar(plan.with_suffix(".json")), HERE, tiny.card.onnx_sha256, plan.parent)
    assert usable, reason
    assert FAKE_TRT_VERSION in reason


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        (
            MachineInfo("NVIDIA GeForce RTX 4090", "8.9", FAKE_TRT_VERSION),
            "built for NVIDIA Fake A100 (sm 8.0)",
        ),
        (MachineInfo("NVIDIA Fake A100", "9.0", FAKE_TRT_VERSION), "sm 9.0"),  # same name, other capability
        (
            MachineInfo(FAKE_GPU.name, FAKE_GPU.cc, "10.14.1.48"),
            "TensorRT 10.13.0.35, this machine has 10.14.1.48",
        ),
        (MachineInfo(device_problem="no CUDA GPU found"), "no CUDA GPU found"),
        (
            MachineInfo(FAKE_GPU.name, FAKE_GPU.cc, None, tensorrt_problem="TensorRT is not installed"),
            "not installed",
        ),
    ],
)
def test_foreign_machine_is_refused(tiny: StoredModel, machine: MachineInfo, expected: str) -> None:
    plan = install_engine(tiny)
    usable, reason = check_sidecar(read_sidecar(plan.with_suffix(".json")), machine, tiny.card.onnx_sha256)
    assert not usable
    assert expected in reason and "\n" not in reason


def test_engine_from_another_onnx_is_refused(tiny: StoredModel) -> None:
    plan = install_engine(tiny, onnx_sha256="f" * 64)
    usable, reason = check_sidecar(read_sidecar(plan.with_suffix(".json")), HERE, tiny.card.onnx_sha256)
    assert not usable and "another model.onnx" in reason and "ffffffffffff" in reason


def test_corrupt_plans_are_refused_before_tensorrt_sees_them(tiny: StoredModel) -> None:
    plan = install_engine(tiny, plan=b"x" * 100)
    sidecar = read_sidecar(plan.with_suffix(".json"))
    plan.write_bytes(b"x" * 60)  # truncated copy
    assert check_sidecar(sidecar, HERE, None, plan.parent) == (
        False,
        f"plan file {plan.name} is corrupt (60 bytes, sidecar says 100)",
    )
    plan.write_bytes(b"y" * 100)  # same size, other bytes
    usable, reason = check_sidecar(sidecar, HERE, None, plan.parent)
    assert not usable and "sha256 differs" in reason
    plan.unlink()
    assert "missing" in check_sidecar(sidecar, HERE, None, plan.parent)[1]


def test_failed_parity_is_refused_unless_forced(tiny: StoredModel) -> None:
    failed = {"passed": False, "top1_agreement": 0.9}
    plan = install_engine(tiny, parity=failed)
    assert not check_sidecar(read_sidecar(plan.with_suffix(".json")), HERE)[0]
    plan = install_engine(tiny, parity=failed, forced=True)
    usable, reason = check_sidecar(read_sidecar(plan.with_suffix(".json")), HERE)
    assert usable and "--force" in reason


def test_plan_without_sidecar_and_unreadable_sidecars_are_not_trusted(tiny: StoredModel) -> None:
    plan = install_engine(tiny)
    plan.with_suffix(".json").unlink()
    (status,) = engine_statuses(tiny, HERE)
    assert not status.usable and "sidecar missing" in status.reason
    plan.with_suffix(".json").write_text("{not json")
    (status,) = engine_statuses(tiny, HERE)
    assert not status.usable and "unreadable" in status.reason
    plan.with_suffix(".json").write_text(json.dumps({"format": 99}))
    (status,) = engine_statuses(tiny, HERE)
    assert not status.usable and "format 99" in status.reason


def test_pick_engine_prefers_the_smallest_that_holds_the_batch(tiny: StoredModel) -> None:
    for max_batch in (8, 32, 64):
        install_engine(tiny, max_batch=max_batch)
    statuses = engine_statuses(tiny, HERE)
    assert [s.usable for s in statuses] == [True, True, True]
    assert pick_engine(statuses, 16).sidecar.max_batch == 32  # type: ignore[union-attr]
    assert pick_engine(statuses, 128).sidecar.max_batch == 64  # type: ignore[union-attr]


# --- backend selection --------------------------------------------------------------------------------------


def test_auto_without_gpu_uses_onnxruntime_and_says_why(tiny: StoredModel, no_gpu: None) -> None:
    choice = select_runner(tiny, "auto", 16)
    assert isinstance(choice.runner, OnnxRuntimeRunner)
    assert choice.reason.startswith("onnxruntime: no CUDA GPU found") and "\n" not in choice.reason


def test_auto_with_gpu_but_no_engine_says_which_command_builds_one(tiny: StoredModel, fake_gpu: FakeBackend) -> None:
    choice = select_runner(tiny, "auto", 16)
    assert isinstance(choice.runner, OnnxRuntimeRunner)
    assert choice.reason == "onnxruntime: no TensorRT engine built for model 'tiny'"


def test_auto_picks_a_usable_engine(tiny: StoredModel, fake_gpu: FakeBackend) -> None:
    plan = install_engine(tiny)
    choice = select_runner(tiny, "auto", 4)
    assert isinstance(choice.runner, TensorRTRunner) and choice.runner.plan_path == plan
    assert choice.reason.startswith("tensorrt: engine ") and choice.runner.precision == "fp16"


def test_auto_skips_an_engine_of_another_gpu(
    tiny: StoredModel, fake_gpu: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_engine(tiny)
    other = GpuInfo(0, "NVIDIA L4", (8, 9))
    monkeypatch.setattr(cuda, "probe_cuda", lambda allow_nvidia_smi=False: fake_probe(other))
    choice = select_runner(tiny, "auto", 4)
    assert isinstance(choice.runner, OnnxRuntimeRunner)
    assert "engine built for NVIDIA Fake A100 (sm 8.0), this machine's GPU is NVIDIA L4" in choice.reason


@pytest.mark.parametrize(
    ("setup", "cause", "fix"),
    [
        (
            "no_gpu",
            "no CUDA GPU found",
            "`allscan build-engine --model tiny` on a machine with an NVIDIA GPU",
        ),
        (
            "no_engine",
            "no TensorRT engine built for model 'tiny'",
            "fix: `allscan build-engine --model tiny`",
        ),
        ("no_trt", "TensorRT is not installed", "pip install 'allscan[gpu]'"),
        ("foreign_trt", "TensorRT 9.9.9.9, this machine has", "fix: `allscan build-engine --model tiny`"),
    ],
)
def test_backend_tensorrt_without_usable_engine_names_cause_and_command(
    tiny: StoredModel,
    fake_gpu: FakeBackend,
    monkeypatch: pytest.MonkeyPatch,
    setup: str,
    cause: str,
    fix: str,
) -> None:
    if setup == "no_gpu":
        monkeypatch.setattr(cuda, "probe_cuda", lambda allow_nvidia_smi=False: no_gpu_probe())
    if setup in ("no_trt", "foreign_trt"):
        install_engine(tiny, tensorrt_version="9.9.9.9" if setup == "foreign_trt" else FAKE_TRT_VERSION)
    if setup == "no_trt":
        monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails as when TensorRT is absent
    with pytest.raises(RunnerError) as info:
        select_runner(tiny, "tensorrt", 16)
    message = one_line(str(info.value))
    assert cause in message and fix in message


# --- the runner on a fake GPU -------------------------------------------------------------------------------


def _batches(sizes: list[int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, 3, 64, 64)).astype(np.float32) for n in sizes]


def test_tensorrt_runner_matches_onnxruntime_with_partial_and_oversized_batches(
    tiny: StoredModel, fake_gpu: FakeBackend
) -> None:
    install_engine(tiny)  # engine max batch 8
    batches = _batches([8, 3, 8, 19, 1, 0, 5])  # partial, oversized (split 8+8+3), single, empty
    with select_runner(tiny, "auto", 8).runner as trt_runner, OnnxRuntimeRunner(tiny.onnx_path) as ort_runner:
        assert isinstance(trt_runner, TensorRTRunner) and trt_runner.max_batch == 8
        got = list(trt_runner.infer_many(batches))
        single = trt_runner.infer(batches[0])
        for batch, out in zip(batches, got, strict=True):
            assert set(out) == {"logits", "cam", "ood"}
            if len(batch) == 0:
                assert out["logits"].shape == (0, 4)
                continue
            want = ort_runner.infer(batch)
            for name in ("logits", "cam", "ood"):
                np.testing.assert_allclose(out[name], want[name], rtol=1e-6, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(single["logits"], got[0]["logits"])
    assert fake_gpu.closed  # deactivate released the CUDA backend


def test_upload_of_next_batch_is_enqueued_before_host_waits_for_the_previous(
    tiny: StoredModel, fake_gpu: FakeBackend
) -> None:
    install_engine(tiny)
    with select_runner(tiny, "auto", 8).runner as runner:
        fake_gpu.log.clear()
        list(runner.infer_many(_batches([4, 4, 4, 4])))
    kinds = [entry[0] for entry in fake_gpu.log]
    # submit 0, submit 1, wait 0, submit 2, wait 1, submit 3, wait 2, wait 3: two batches always in flight.
    assert kinds == [
        "enqueue_htod", "enqueue_execute", "enqueue_htod", "enqueue_execute", "host_wait",
        "enqueue_htod", "enqueue_execute", "host_wait",
        "enqueue_htod", "enqueue_execute", "host_wait", "host_wait",
    ]  # fmt: skip
    uploads = [entry[1] for entry in fake_gpu.log if entry[0] == "enqueue_htod"]
    assert uploads[0] == uploads[2] != uploads[1] == uploads[3]  # two slots, alternating


def test_fake_streams_catch_a_missing_wait(tiny: StoredModel, fake_gpu: FakeBackend) -> None:
    """Test of the test: without the stream waits the deferred fake yields wrong numbers."""
    install_engine(tiny)
    batches = _batches([4, 4, 4])
    with select_runner(tiny, "auto", 8).runner as runner, OnnxRuntimeRunner(tiny.onnx_path) as ref:
        fake_gpu.skip_waits = True
        broken = list(runner.infer_many(batches))
        assert not all(np.allclose(b["logits"], ref.infer(x)["logits"]) for b, x in zip(broken, batches, strict=True))


def test_no_tensorrt_object_is_created_without_a_cuda_device(
    tiny: StoredModel, fake_gpu: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = install_engine(tiny)
    loader = EngineFromPlan(plan, read_sidecar(plan.with_suffix(".json")), "tiny", tiny.card.onnx_sha256)
    runner = TensorRTRunner(loader)
    monkeypatch.setattr(cuda, "probe_cuda", lambda allow_nvidia_smi=False: no_gpu_probe())
    with pytest.raises(RunnerError) as info:
        runner.activate()
    assert "TensorRT needs a CUDA GPU" in one_line(str(info.value))
    assert sys.modules["tensorrt"].runtimes_created == []  # type: ignore[attr-defined]


def test_foreign_sidecar_is_refused_at_activation_before_deserializing(
    tiny: StoredModel, fake_gpu: FakeBackend
) -> None:
    plan = install_engine(tiny, gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0")
    loader = EngineFromPlan(plan, read_sidecar(plan.with_suffix(".json")), "tiny", tiny.card.onnx_sha256)
    runner = TensorRTRunner(loader)
    with pytest.raises(RunnerError) as info:
        runner.activate()
    message = one_line(str(info.value))
    assert "built for NVIDIA H100 80GB HBM3" in message and "allscan build-engine --model tiny" in message
    assert sys.modules["tensorrt"].runtimes_created == []  # type: ignore[attr-defined]


def test_plan_tensorrt_cannot_deserialize_gives_one_line(tiny: StoredModel, fake_gpu: FakeBackend) -> None:
    plan = install_engine(tiny, plan=b"garbage that hashes fine")  # sidecar agrees; TensorRT returns None
    loader = EngineFromPlan(plan, read_sidecar(plan.with_suffix(".json")), "tiny", tiny.card.onnx_sha256)
    runner = TensorRTRunner(loader)
    with pytest.raises(RunnerError) as info:
        runner.activate()
    assert "could not deserialize the plan" in one_line(str(info.value))
    assert not runner.is_active and fake_gpu.closed


# --- the command line ---------------------------------------------------------------------------------------

cli = CliRunner()


def _run_cli(args: list[str]) -> tuple[int, str]:
    result = cli.invoke(app, args)
    return result.exit_code, result.output


def test_build_engine_without_gpu_exits_2_with_cause_and_remedy(tiny_store: Path, no_gpu: None) -> None:
    code, output = _run_cli(["build-engine", "--model", "vit"])
    line = one_line(output)
    assert code == 2
    assert (
        "no CUDA GPU found" in line and "run `allscan build-engine --model vit` on a machine with an NVIDIA GPU" in line
    )


def test_build_engine_without_tensorrt_exits_2(
    tiny_store: Path, fake_gpu: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    code, output = _run_cli(["build-engine", "--model", "tiny"])
    assert code == 2 and "pip install 'allscan[gpu]'" in one_line(output)


def test_build_engine_needs_exactly_one_of_model_or_all(tiny_store: Path) -> None:
    assert _run_cli(["build-engine"])[0] == 2
    assert _run_cli(["build-engine", "--model", "tiny", "--all"])[0] == 2


@pytest.mark.parametrize("case", ["foreign_sidecar", "corrupt_plan", "undeserializable_plan", "no_tensorrt"])
def test_run_backend_tensorrt_refusals_exit_2_with_one_line(
    tiny: StoredModel, fake_gpu: FakeBackend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: str
) -> None:
    if case == "foreign_sidecar":
        install_engine(tiny, tensorrt_version="8.6.1")
    elif case == "corrupt_plan":
        install_engine(tiny, plan=b"fake-plan").write_bytes(b"fake-pla")  # truncated after the build
    elif case == "undeserializable_plan":
        install_engine(tiny, plan=b"bytes TensorRT rejects")
    else:
        install_engine(tiny)
        monkeypatch.setitem(sys.modules, "tensorrt", None)
    images = REPO / "sample_images" / "patient-A"
    args = ["run", str(images), "--model", "tiny", "--backend", "tensorrt", "--out", str(tmp_path / "out")]
    code, output = _run_cli([*args, "--workers", "1", "--heatmaps", "none"])
    assert code == 2, output
    errors = [line for line in output.splitlines() if "error" in line]
    assert len(errors) == 1, output
    assert "allscan build-engine --model tiny" in errors[0] or "allscan[gpu]" in errors[0]


def test_doctor_runs_here_and_exits_0(tiny_store: Path) -> None:
    code, output = _run_cli(["doctor"])
    assert code == 0, output
    for needle in (
        "GPU",
        "CUDA driver",
        "TensorRT",
        "ONNX Runtime",
        "CPUExecutionProvider",
        "tiny: none built",
    ):
        assert needle in output


def test_doctor_and_models_report_engines_usable_here(tiny: StoredModel, fake_gpu: FakeBackend) -> None:
    plan = install_engine(tiny)
    install_engine(tiny, max_batch=16, gpu_name="NVIDIA L4", compute_capability="8.9")
    code, output = _run_cli(["doctor"])
    assert code == 0, output
    assert "GPU 0: NVIDIA Fake A100, compute capability 8.0" in output
    assert f"TensorRT: {FAKE_TRT_VERSION}" in output
    assert f"{plan.name}: usable" in output and "not usable - engine built for NVIDIA L4" in output
    code, output = _run_cli(["models"])
    assert code == 0 and "tiny" in output and "usable" in output


# --- static and import-time guarantees ----------------------------------------------------------------------


def test_importing_the_cli_loads_no_gpu_library() -> None:
    import subprocess

    code = (
        "import sys, allscan.cli, allscan.runtime.select, allscan.runtime.tensorrt\n"
        "import allscan.runtime.engine_build, allscan.runtime.cuda, allscan.runtime.fp16\n"
        "gpu = ('tensorrt', 'pycuda', 'cuda', 'tensorrt_bindings', 'onnxconverter_common')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in gpu))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
