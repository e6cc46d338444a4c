"""The JSON sidecar beside each TensorRT plan, engine names, and whether a plan may be loaded here.

Why: TensorRT has no pre-flight compatibility API. A plan from another TensorRT version or GPU makes
``deserialize_cuda_engine`` return None with a log line at best; a truncated file can crash it. So every plan
is written with a sidecar recording what it was built from and for, and :func:`check_sidecar` decides from the
sidecar (and the plan's size and hash) *before* TensorRT sees a byte. This module imports no GPU library."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from allscan.io.atomic import write_text_atomic
from allscan.models.card import sha256_file
from allscan.models.store import StoredModel

SIDECAR_FORMAT = 1
PLAN_SUFFIX = ".plan"
SIDECAR_SUFFIX = ".json"


@dataclass(frozen=True)
class MachineInfo:
    """What decides whether a plan can run here: the GPU the runner would use and the installed TensorRT."""

    gpu_name: str | None = None  # None: no usable CUDA device
    compute_capability: str | None = None  # "8.9"
    tensorrt_version: str | None = None  # None: TensorRT not importable
    device_problem: str = ""  # one line, why there is no usable GPU
    tensorrt_problem: str = ""  # one line, why TensorRT is not usable


def slug(text: str) -> str:
    """Lower-case file-name-safe form of a GPU name: 'NVIDIA GeForce RTX 4090' ->
    'nvidia-geforce-rtx-4090'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "gpu"


def engine_stem(
    model_id: str, precision: str, max_batch: int, trt_version: str, compute_capability: str, gpu_name: str
) -> str:
    """The plan's name without suffix: every field that makes a plan unusable elsewhere is in it.

    ``vit@1a2b3c4d5e6f`` + fp16 + 64 + 10.13.0.35 + 8.9 + 'NVIDIA L4' ->
    ``vit-1a2b3c4d5e6f-fp16-b64-trt10.13.0.35-sm89-nvidia-l4``.
    """
    model = model_id.replace("@", "-")
    sm = compute_capability.replace(".", "")
    return f"{slug(model)}-{precision}-b{max_batch}-trt{trt_version}-sm{sm}-{slug(gpu_name)}"


@dataclass
class Sidecar:
    """Everything recorded about one plan (written as JSON next to it)."""

    model_name: str
    model_id: str
    onnx_sha256: str
    precision: str
    plan_file: str  # name of the plan, in the same folder as the sidecar
    plan_sha256: str
    plan_bytes: int
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    input_name: str = "image"
    profile: dict[str, list[int]] = field(default_factory=dict)  # min/opt/max input shapes
    build: dict[str, Any] = field(default_factory=dict)  # flags, workspace, timing cache, fp16 conversion
    parity: dict[str, Any] = field(default_factory=dict)  # n_images, top1_agreement, max_abs_dp, passed, ...
    forced: bool = False  # installed with --force despite a failed parity gate
    cuda_driver: str | None = None
    cuda_runtime: str | None = None
    created: str = ""
    allscan_version: str = ""
    format: int = SIDECAR_FORMAT

    @property
    def max_batch(self) -> int:
        shape = self.profile.get("max") or [0]
        return int(shape[0])

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sidecar:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


class SidecarError(ValueError):
    """The sidecar is missing or unreadable; the message is one line."""


def sidecar_path_for(plan: Path) -> Path:
    return plan.with_suffix(SIDECAR_SUFFIX)


def read_sidecar(path: Path) -> Sidecar:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SidecarError(f"{path.name}: sidecar missing") from exc
    except (OSError, ValueError) as exc:
        raise SidecarError(f"{path.name}: sidecar unreadable ({exc})") from exc
    if not isinstance(data, dict):
        raise SidecarError(f"{path.name}: sidecar is not a JSON object")
    if data.get("format") != SIDECAR_FORMAT:
        raise SidecarError(f"{path.name}: sidecar format {data.get('format')!r}, this allscan reads {SIDECAR_FORMAT}")
    missing = [k for k in ("model_id", "onnx_sha256", "plan_file", "tensorrt_version", "gpu_name") if k not in data]
    if missing:
        raise SidecarError(f"{path.name}: sidecar lacks {', '.join(missing)}")
    try:
        return Sidecar.from_dict(data)
    except TypeError as exc:
        raise SidecarError(f"{path.name}: sidecar incomplete ({exc})") from exc


def write_sidecar(sidecar: Sidecar, path: Path) -> None:
    """Atomically, so a crash never leaves half a sidecar that looks valid."""
    write_text_atomic(path, json.dumps(sidecar.to_dict(), indent=2) + "\n")


_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def plan_sha256(path: Path) -> str:
    """sha256 of a plan, cached per (path, size, mtime) for doctor/models listing the same files
    repeatedly."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = sha256_file(path)
    return _HASH_CACHE[key]


def check_sidecar(
    sidecar: Sidecar, machine: MachineInfo, onnx_sha256: str | None = None, plan_dir: Path | None = None
) -> tuple[bool, str]:
    """May this plan be deserialized here? ``(usable, reason)``; the reason is one line either way.

    Checked in the order a user fixes things: the model changed, then the machine (GPU, TensorRT), then the
    plan file itself (missing, truncated, altered). ``plan_dir`` None skips the file checks.
    """
    if onnx_sha256 and sidecar.onnx_sha256 != onnx_sha256:
        return False, (
            f"engine was built from another model.onnx (sha256 {sidecar.onnx_sha256[:12]}, "
            f"the store has {onnx_sha256[:12]})"
        )
    if not (sidecar.parity.get("passed") or sidecar.forced):
        return False, "engine failed its parity check against ONNX Runtime and was not forced"
    if machine.gpu_name is None:
        return False, machine.device_problem or "no CUDA GPU on this machine"
    if machine.tensorrt_version is None:
        return False, machine.tensorrt_problem or "TensorRT is not installed"
    if sidecar.tensorrt_version != machine.tensorrt_version:
        return False, (
            f"engine built with TensorRT {sidecar.tensorrt_version}, this machine has {machine.tensorrt_version}"
        )
    if sidecar.compute_capability != machine.compute_capability or sidecar.gpu_name != machine.gpu_name:
        return False, (
            f"engine built for {sidecar.gpu_name} (sm {sidecar.compute_capability}), this machine's GPU is "
            f"{machine.gpu_name} (sm {machine.compute_capability})"
        )
    if plan_dir is not None:
        plan = plan_dir / sidecar.plan_file
        if not plan.is_file():
            return False, f"plan file {sidecar.plan_file} missing"
        size = plan.stat().st_size
        if size != sidecar.plan_bytes:
            return (
                False,
                f"plan file {sidecar.plan_file} is corrupt ({size} bytes, sidecar says {sidecar.plan_bytes})",
            )
        if plan_sha256(plan) != sidecar.plan_sha256:
            return False, f"plan file {sidecar.plan_file} is corrupt (sha256 differs from its sidecar)"
    note = " (parity failed; installed with --force)" if not sidecar.parity.get("passed") else ""
    return True, f"engine {sidecar.plan_file} matches this GPU and TensorRT {machine.tensorrt_version}{note}"


@dataclass(frozen=True)
class EngineStatus:
    """One plan in a model's ``trt/`` folder and what :func:`check_sidecar` says about it."""

    plan: Path
    sidecar: Sidecar | None
    usable: bool
    reason: str


def engine_statuses(model: StoredModel, machine: MachineInfo, verify_plan: bool = True) -> list[EngineStatus]:
    """Every plan (and orphan sidecar) in the model's ``trt/`` folder, judged for this machine."""
    folder = model.trt_dir
    if not folder.is_dir():
        return []
    stems = sorted({p.stem for p in folder.iterdir() if p.suffix in (PLAN_SUFFIX, SIDECAR_SUFFIX)})
    out = []
    for stem in stems:
        plan, side = folder / (stem + PLAN_SUFFIX), folder / (stem + SIDECAR_SUFFIX)
        if side.suffix == SIDECAR_SUFFIX and not side.is_file():
            out.append(EngineStatus(plan, None, False, f"{plan.name}: sidecar missing, plan not trusted"))
            continue
        try:
            sidecar = read_sidecar(side)
        except SidecarError as exc:
            out.append(EngineStatus(plan, None, False, str(exc)))
            continue
        usable, reason = check_sidecar(
            sidecar, machine, model.card.onnx_sha256 or None, folder if verify_plan else None
        )
        out.append(EngineStatus(folder / sidecar.plan_file, sidecar, usable, reason))
    return out


def pick_engine(statuses: list[EngineStatus], batch_size: int) -> EngineStatus | None:
    """The usable engine to run: the smallest max batch that holds ``batch_size``, else the largest."""
    usable = [s for s in statuses if s.usable and s.sidecar is not None]
    if not usable:
        return None
    fits = [s for s in usable if s.sidecar is not None and s.sidecar.max_batch >= batch_size]
    if fits:
        return min(fits, key=lambda s: s.sidecar.max_batch if s.sidecar else 0)
    return max(usable, key=lambda s: s.sidecar.max_batch if s.sidecar else 0)
