"""Build a TensorRT FP16 engine for one model on this GPU, gate it on parity, install it with its sidecar.

Polygraphy's loader pattern: each step is a lazy callable wrapping the previous one, and nothing is built
until the last is called (``trt_plan.EngineFromPlan``, the loader the TensorRT runner runs from, is one too)::

    plan = SerializedEngineFromNetwork(NetworkFromOnnxPath(Fp16OnnxFromPath(onnx, cache)), profile, ...)()

Why this chain: FP16 lives in the ONNX graph (TensorRT 11 has no FP16 builder flag, and on TensorRT 10 the
same FP16 ONNX built strongly typed gives the numerics checked on the CPU); the network is strongly typed,
which TensorRT 10 accepts as a flag and TensorRT 11 takes as the only mode; one optimization profile covers
batch 1..max; the timing cache persists per GPU and TensorRT version so a rebuild skips kernel timing already
done."""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from allscan import __version__
from allscan.io.atomic import write_bytes_atomic
from allscan.models.card import sha256_file
from allscan.models.store import StoredModel, store_root
from allscan.runtime import cuda
from allscan.runtime.base import RunnerError
from allscan.runtime.fp16 import Parity, ParityAccumulator, block_list, convert_fp16
from allscan.runtime.sidecar import (
    PLAN_SUFFIX,
    SIDECAR_SUFFIX,
    Sidecar,
    engine_stem,
    slug,
    write_sidecar,
)
from allscan.runtime.tensorrt import INSTALL_HINT, TensorRTRunner, import_tensorrt, tensorrt_status
from allscan.runtime.trt_plan import EngineFromPlan as EngineFromPlan  # the run-time loader, re-exported

if TYPE_CHECKING:
    import tensorrt as trt_t

GiB = 1 << 30


class EngineBuildError(Exception):
    """The engine cannot be built here; one line with cause and remedy. ``exit_code`` 2: configuration."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class BuildOptions:
    max_batch: int = 64
    opt_batch: int | None = None  # None: min(16, max_batch), the run pipeline's default batch size
    workspace_gb: float = 4.0
    force: bool = False  # install even when the parity gate fails

    @property
    def opt(self) -> int:
        return max(1, min(self.opt_batch or 16, self.max_batch))


@dataclass(frozen=True)
class ProfileSpec:
    input_name: str
    sample_shape: tuple[int, ...]  # (3, H, W)
    min_batch: int
    opt_batch: int
    max_batch: int

    def shapes(self) -> dict[str, list[int]]:
        return {
            key: [batch, *self.sample_shape]
            for key, batch in (("min", self.min_batch), ("opt", self.opt_batch), ("max", self.max_batch))
        }


def _trt_logger() -> trt_t.Logger:
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


class Fp16OnnxFromPath:
    """Loader: the FP16 ONNX beside the plans, converted once and reused while the FP32 source is
    unchanged."""

    def __init__(self, onnx_path: Path, cache_path: Path, onnx_sha256: str) -> None:
        self.onnx_path, self.cache_path, self.onnx_sha256 = onnx_path, cache_path, onnx_sha256
        self.meta_path = cache_path.with_name(cache_path.name + ".meta")

    def _meta(self) -> dict[str, Any]:
        return {"source_sha256": self.onnx_sha256, "fp32_ops": block_list()}

    def __call__(self) -> Path:
        if self.cache_path.is_file() and self.meta_path.is_file():
            try:
                if json.loads(self.meta_path.read_text(encoding="utf-8")) == self._meta():
                    return self.cache_path
            except ValueError:
                pass
        convert_fp16(self.onnx_path, self.cache_path)
        self.meta_path.write_text(json.dumps(self._meta()) + "\n", encoding="utf-8")
        return self.cache_path


class NetworkFromOnnxPath:
    """Loader: (builder, network, parser) from an ONNX path; the parser must outlive the network (it owns
    weights)."""

    def __init__(self, onnx: Callable[[], Path]) -> None:
        self.onnx = onnx

    def __call__(self) -> tuple[trt_t.Builder, trt_t.INetworkDefinition, trt_t.OnnxParser]:
        import_tensorrt()
        import tensorrt as trt

        path = self.onnx()
        logger = _trt_logger()
        builder = trt.Builder(logger)
        # Strongly typed: precision comes from the FP16 ONNX. Opt-in on TensorRT 10, the only mode on 11.
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            first = errors[0].strip().splitlines()[0] if errors else "unknown error"
            raise EngineBuildError(f"TensorRT's ONNX parser rejected {path.name}: {first}")
        return builder, network, parser


class SerializedEngineFromNetwork:
    """Loader: the serialized plan (bytes), with one dynamic-batch profile and a persistent timing cache."""

    def __init__(
        self,
        network: Callable[[], tuple[trt_t.Builder, trt_t.INetworkDefinition, trt_t.OnnxParser]],
        profile: ProfileSpec,
        workspace_bytes: int,
        timing_cache: Path | None,
    ) -> None:
        self.network, self.profile, self.workspace_bytes, self.timing_cache = (
            network,
            profile,
            workspace_bytes,
            timing_cache,
        )
        self.timing_cache_note = ""

    def __call__(self) -> bytes:
        import_tensorrt()
        import tensorrt as trt

        builder, network, _parser = self.network()
        name = network.get_input(0).name
        if network.num_inputs != 1 or name != self.profile.input_name:
            raise EngineBuildError(f"the ONNX must have one input named {self.profile.input_name!r}, found {name!r}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_bytes)
        profile = builder.create_optimization_profile()
        shapes = self.profile.shapes()
        profile.set_shape(name, trt.Dims(shapes["min"]), trt.Dims(shapes["opt"]), trt.Dims(shapes["max"]))
        config.add_optimization_profile(profile)
        cache_bytes = b""
        if self.timing_cache is not None and self.timing_cache.is_file():
            cache_bytes = self.timing_cache.read_bytes()
        cache = config.create_timing_cache(cache_bytes)
        if not config.set_timing_cache(cache, False):
            # A cache from another device or version is refused; start afresh rather than fail the build.
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, True)
            self.timing_cache_note = "timing cache did not match this GPU/TensorRT; rebuilt it"
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineBuildError("TensorRT failed to build the engine (its log above says why)", exit_code=1)
        if self.timing_cache is not None:
            self.timing_cache.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(self.timing_cache, bytes(config.get_timing_cache().serialize()))
        return bytes(plan)


def timing_cache_path(gpu_name: str, compute_capability: str, trt_version: str) -> Path:
    """One timing cache per GPU model and TensorRT version, shared by all models in the store."""
    name = f"{slug(gpu_name)}-sm{compute_capability.replace('.', '')}-trt{trt_version}.cache"
    return store_root() / ".trt-timing-cache" / name


def check_parity(
    candidate: Callable[[Iterable[np.ndarray]], Iterable[dict[str, np.ndarray]]],
    reference: Callable[[Iterable[np.ndarray]], Iterable[dict[str, np.ndarray]]],
    batches: list[np.ndarray],
    temperature: float = 1.0,
) -> Parity:
    """Top-1 agreement and max |delta p| of ``candidate`` against ``reference`` (ONNX Runtime FP32)."""
    acc = ParityAccumulator(temperature)
    for ref, cand in zip(reference(batches), candidate(batches), strict=True):
        acc.add(ref["logits"], cand["logits"])
    return acc.result()


def preflight(name: str) -> tuple[cuda.CudaProbe, Any]:
    """(CUDA probe, tensorrt module), or EngineBuildError naming what is missing. Checked before the model
    loads."""
    probe = cuda.probe_cuda()
    if not probe.usable:
        raise EngineBuildError(
            f"cannot build a TensorRT engine for {name!r}: {probe.reason}; "
            f"run `allscan build-engine --model {name}` on a machine with an NVIDIA GPU, "
            "or use --backend onnxruntime"
        )
    version, problem = tensorrt_status()
    if version is None:
        raise EngineBuildError(f"cannot build a TensorRT engine for {name!r}: {problem}; {INSTALL_HINT}")
    return probe, import_tensorrt()


def _parity_of_new_plan(model: StoredModel, plan: Path, device: int, batches: list[np.ndarray]) -> Parity:
    """A freshly built plan against ONNX Runtime FP32 on the validation batches (both through ``infer_many``);
    a plan that cannot run is removed and the build fails."""
    from allscan.runtime.onnxrt import OnnxRuntimeRunner

    loader = EngineFromPlan(plan, None, model_name=model.card.name, device=device)
    try:
        with TensorRTRunner(loader) as trt_runner, OnnxRuntimeRunner(model.onnx_path) as ort_runner:
            return check_parity(trt_runner.infer_many, ort_runner.infer_many, batches, model.card.temperature)
    except RunnerError as exc:
        plan.unlink(missing_ok=True)
        raise EngineBuildError(f"the new engine could not run: {exc}", exit_code=1) from exc


@dataclass(frozen=True)
class BuildResult:
    plan: Path | None  # None when not installed (parity failed without --force)
    sidecar: Sidecar
    parity: Parity
    installed: bool
    message: str


@dataclass(frozen=True)
class _Target:
    """What one build is for, settled (and checked) before anything is built."""

    probe: cuda.CudaProbe
    gpu: cuda.GpuInfo
    trt_version: str
    onnx_sha: str
    profile: ProfileSpec
    stem: str
    cache: Path
    workspace: int


def _target(model: StoredModel, options: BuildOptions, device: int) -> _Target:
    """The GPU, TensorRT version, shapes and file names of this build; EngineBuildError when it cannot run."""
    probe, trt = preflight(model.card.name)
    if not 1 <= options.max_batch <= 4096:
        raise EngineBuildError(f"--max-batch must be between 1 and 4096, not {options.max_batch}")
    gpu = probe.devices[device]
    trt_version = str(trt.__version__)
    size = model.card.input.size
    return _Target(
        probe=probe,
        gpu=gpu,
        trt_version=trt_version,
        onnx_sha=model.card.onnx_sha256 or sha256_file(model.onnx_path),
        profile=ProfileSpec("image", (3, size, size), 1, options.opt, options.max_batch),
        stem=engine_stem(model.card.model_id, "fp16", options.max_batch, trt_version, gpu.cc, gpu.name),
        cache=timing_cache_path(gpu.name, gpu.cc, trt_version),
        workspace=int(options.workspace_gb * GiB),
    )


def _sidecar(model: StoredModel, target: _Target, plan: Path, fp16_path: Path, parity: Parity, force: bool) -> Sidecar:
    """The plan's sidecar: everything ``check_sidecar`` compares before a later run may deserialize it."""
    probe, gpu = target.probe, target.gpu
    return Sidecar(
        model_name=model.card.name,
        model_id=model.card.model_id,
        onnx_sha256=target.onnx_sha,
        precision="fp16",
        plan_file=target.stem + PLAN_SUFFIX,
        plan_sha256=sha256_file(plan),
        plan_bytes=plan.stat().st_size,
        tensorrt_version=target.trt_version,
        gpu_name=gpu.name,
        compute_capability=gpu.cc,
        input_name=target.profile.input_name,
        profile=target.profile.shapes(),
        build={
            "strongly_typed": True,
            "builder_fp16_flag": False,
            "fp16_onnx": fp16_path.name,
            "fp16_onnx_sha256": sha256_file(fp16_path),
            "fp32_ops": block_list(),
            "workspace_bytes": target.workspace,
            "timing_cache": target.cache.name,
            "cuda_backend": "pycuda" if "pycuda" in probe.bindings else "cuda-python",
        },
        parity={**parity.to_dict(), "reference": "onnxruntime-cpu-fp32"},
        forced=not parity.passed and force,
        cuda_driver=probe.driver_version,
        cuda_runtime=probe.runtime_version,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        allscan_version=__version__,
    )


def build_engine(
    model: StoredModel,
    options: BuildOptions,
    validation_batches: Callable[[int], list[np.ndarray]],
    device: int = 0,
    log: Callable[[str], None] = lambda _line: None,
) -> BuildResult:
    """ONNX -> FP16 ONNX -> strongly typed network -> plan, parity gate on ``validation_batches(b)``, install.

    Raises EngineBuildError (exit 2) when this machine cannot build: no GPU, no TensorRT, no validation
    images.
    """
    name = model.card.name
    target = _target(model, options, device)
    model.trt_dir.mkdir(parents=True, exist_ok=True)
    batches = validation_batches(options.opt)
    if not batches:
        raise EngineBuildError(
            f"no validation images for the parity gate of {name!r}: list them in card.json "
            "(training.validation_images) or put images in sample_images/"
        )
    fp16_loader = Fp16OnnxFromPath(model.onnx_path, model.trt_dir / "model.fp16.onnx", target.onnx_sha)
    network = NetworkFromOnnxPath(fp16_loader)
    engine_loader = SerializedEngineFromNetwork(network, target.profile, target.workspace, target.cache)
    gpu, stem = target.gpu, target.stem
    log(f"building {stem}{PLAN_SUFFIX} (FP16, batch 1/{options.opt}/{options.max_batch}) on {gpu.name}")
    plan_bytes = engine_loader()
    if engine_loader.timing_cache_note:
        log(engine_loader.timing_cache_note)

    tmp_plan = model.trt_dir / f".building-{stem}{PLAN_SUFFIX}"
    tmp_plan.write_bytes(plan_bytes)
    parity = _parity_of_new_plan(model, tmp_plan, device, batches)
    sidecar = _sidecar(model, target, tmp_plan, fp16_loader(), parity, options.force)
    if not parity.passed and not options.force:
        tmp_plan.unlink(missing_ok=True)
        return BuildResult(None, sidecar, parity, False, f"{parity.line()}; engine NOT installed (--force installs it)")
    plan_path = model.trt_dir / sidecar.plan_file
    os.replace(tmp_plan, plan_path)
    write_sidecar(sidecar, plan_path.with_suffix(SIDECAR_SUFFIX))
    forced = " (installed with --force)" if sidecar.forced else ""
    return BuildResult(plan_path, sidecar, parity, True, f"{parity.line()}; installed {plan_path.name}{forced}")
