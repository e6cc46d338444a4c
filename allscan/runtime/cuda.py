"""CUDA without TensorRT: is there a device, which one, and host/device buffers and streams to feed it.

Why a probe of its own: a ``trt.Runtime`` created on a machine without a CUDA driver logs an error yet returns
an object, and the first deserialize then segfaults; so every TensorRT path asks this module first. The probe
tries pycuda (the user's choice), then cuda-python (``cuda.bindings.runtime``, NVIDIA's current samples), and,
for ``allscan doctor`` only, ``nvidia-smi`` (it can describe a GPU, it cannot prove the driver works for us).

Buffers and streams come behind one small :class:`CudaBackend` interface with a pycuda and a cuda-python
implementation (``cuda_pycuda.py``, ``cuda_cudart.py``, imported only by :func:`open_backend`), so the
TensorRT runner's double buffering is written once (and tested with a fake backend).
Nothing here is imported at module load: pycuda and cuda-python are imported inside functions.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


class CudaError(RuntimeError):
    """A CUDA call failed; the message is one line."""


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    compute_capability: tuple[int, int]
    total_memory: int = 0  # bytes

    @property
    def cc(self) -> str:
        """Compute capability as ``"8.9"``."""
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


@dataclass(frozen=True)
class CudaProbe:
    """What the CUDA probe found. ``usable`` means a binding could talk to a device through the driver."""

    devices: tuple[GpuInfo, ...] = ()
    driver_version: str | None = None  # highest CUDA version the driver supports, e.g. "12.4"
    runtime_version: str | None = None  # CUDA runtime/toolkit version of the binding that answered
    source: str = "none"  # 'pycuda', 'cuda-python', 'nvidia-smi' or 'none'
    bindings: tuple[str, ...] = ()  # bindings importable here: 'pycuda', 'cuda-python'
    problems: tuple[str, ...] = field(default_factory=tuple)  # one line per binding that failed, for doctor

    @property
    def usable(self) -> bool:
        return bool(self.devices) and self.source in ("pycuda", "cuda-python")

    @property
    def reason(self) -> str:
        """One line: why there is no usable device (empty when there is one)."""
        if self.usable:
            return ""
        if self.devices:  # nvidia-smi sees a GPU, but no binding could use it
            return "a GPU is visible to nvidia-smi but neither pycuda nor cuda-python can use it: " + (
                "; ".join(self.problems) or "install the `gpu` extra"
            )
        if not self.bindings:
            return "no CUDA GPU found: neither pycuda nor cuda-python is installed"
        return "no CUDA GPU found" + (f" ({self.problems[-1]})" if self.problems else "")


def _version_str(value: int) -> str:
    """CUDA's integer version (12040) as ``"12.4"``."""
    return f"{value // 1000}.{(value % 1000) // 10}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def import_cudart() -> Any:
    """cuda-python's runtime module under its current name, or the pre-12.8 one; ImportError when absent."""
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.8

        return runtime
    except ImportError:
        from cuda import cudart  # type: ignore[attr-defined,unused-ignore]  # cuda-python < 12.8

        return cudart


def _probe_pycuda() -> CudaProbe:
    import pycuda.driver as drv  # type: ignore[import-not-found,unused-ignore]

    drv.init()
    devices = []
    for index in range(drv.Device.count()):
        dev = drv.Device(index)
        major, minor = dev.compute_capability()
        devices.append(GpuInfo(index, str(dev.name()), (int(major), int(minor)), int(dev.total_memory())))
    runtime = ".".join(str(part) for part in drv.get_version()[:2])
    return CudaProbe(tuple(devices), _version_str(drv.get_driver_version()), runtime, "pycuda")


def _probe_cudart() -> CudaProbe:
    cudart = import_cudart()
    err, count = cudart.cudaGetDeviceCount()
    if err == cudart.cudaError_t.cudaErrorInsufficientDriver:
        _, runtime = cudart.cudaRuntimeGetVersion()
        raise CudaError(
            f"no NVIDIA driver, or one older than CUDA {_version_str(runtime)} (cudaErrorInsufficientDriver)"
        )
    if err != cudart.cudaError_t.cudaSuccess:
        raise CudaError(_cudart_error(cudart, err))
    devices = []
    for index in range(count):
        prop = check_cudart(cudart, cudart.cudaGetDeviceProperties(index))
        name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
        devices.append(GpuInfo(index, name.strip("\x00 "), (prop.major, prop.minor), int(prop.totalGlobalMem)))
    driver = check_cudart(cudart, cudart.cudaDriverGetVersion())
    runtime = check_cudart(cudart, cudart.cudaRuntimeGetVersion())
    return CudaProbe(tuple(devices), _version_str(driver), _version_str(runtime), "cuda-python")


def _probe_nvidia_smi() -> CudaProbe | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    query = "--query-gpu=index,name,compute_cap,memory.total,driver_version"
    try:
        out = subprocess.run(
            [exe, query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_nvidia_smi(out)


def parse_nvidia_smi(text: str) -> CudaProbe | None:
    """Devices from ``nvidia-smi --query-gpu=index,name,compute_cap,memory.total,driver_version`` CSV."""
    devices = []
    driver = None
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5:
            continue
        try:
            major, minor = (int(x) for x in parts[2].split("."))
            devices.append(GpuInfo(int(parts[0]), parts[1], (major, minor), int(float(parts[3])) << 20))
        except ValueError:
            continue
        driver = parts[4]
    if not devices:
        return None
    return CudaProbe(tuple(devices), None, None, "nvidia-smi", problems=(f"driver {driver}",) if driver else ())


def probe_cuda(allow_nvidia_smi: bool = False) -> CudaProbe:
    """Find CUDA devices through pycuda, else cuda-python, else (doctor only) nvidia-smi. Never raises."""
    bindings: list[str] = []
    problems: list[str] = []
    for name, probe in (("pycuda", _probe_pycuda), ("cuda-python", _probe_cudart)):
        try:
            result = probe()
        except ImportError:
            continue
        except Exception as exc:  # noqa: BLE001 - driver errors come in many types; each becomes one line
            bindings.append(name)
            problems.append(f"{name}: {_first_line(exc)}")
            continue
        bindings.append(name)
        if result.devices:
            return CudaProbe(
                result.devices,
                result.driver_version,
                result.runtime_version,
                result.source,
                tuple(bindings),
                tuple(problems),
            )
        problems.append(f"{name}: 0 devices")
    if allow_nvidia_smi:
        smi = _probe_nvidia_smi()
        if smi is not None:
            return CudaProbe(smi.devices, None, None, "nvidia-smi", tuple(bindings), tuple(problems) + smi.problems)
    return CudaProbe(bindings=tuple(bindings), problems=tuple(problems))


# ------------------------------------------------------------------------------------------------------------
# Buffers and streams


class Stream(Protocol):
    @property
    def handle(self) -> int: ...

    def synchronize(self) -> None: ...


class Event(Protocol):
    def record(self, stream: Stream) -> None: ...

    def synchronize(self) -> None: ...


class DeviceBuffer(Protocol):
    @property
    def ptr(self) -> int: ...

    nbytes: int

    def free(self) -> None: ...


class CudaBackend(Protocol):
    """The handful of CUDA operations the TensorRT runner needs, whatever binding provides them."""

    name: str

    def scope(self) -> contextlib.AbstractContextManager[None]:
        """Make the backend's CUDA context current on the calling thread for the duration."""
        ...

    def pinned_empty(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray: ...

    def device_alloc(self, nbytes: int) -> DeviceBuffer: ...

    def stream(self) -> Stream: ...

    def event(self) -> Event: ...

    def htod_async(self, dst: DeviceBuffer, src: np.ndarray, stream: Stream) -> None:
        """Copy all of the C-contiguous ``src`` to the start of ``dst``."""
        ...

    def dtoh_async(self, dst: np.ndarray, src: DeviceBuffer, stream: Stream) -> None:
        """Fill all of the C-contiguous ``dst`` from the start of ``src``."""
        ...

    def wait_event(self, stream: Stream, event: Event) -> None:
        """Make later work on ``stream`` wait for ``event`` (no host wait)."""
        ...

    def close(self) -> None: ...


# --- cuda-python error checks (the probe and cuda_cudart.py use them) ----------------------------------------


def _cudart_error(cudart: Any, err: Any) -> str:
    try:
        _, text = cudart.cudaGetErrorString(err)
        text = text.decode() if isinstance(text, bytes) else str(text)
    except Exception:  # noqa: BLE001
        text = ""
    return f"{getattr(err, 'name', err)}: {text}".rstrip(": ")


def check_cudart(cudart: Any, result: Any) -> Any:
    """cuda-python calls return ``(err, *values)``: raise CudaError on failure, else return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise CudaError(_cudart_error(cudart, err))
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def open_backend(device: int = 0, prefer: str | None = None) -> CudaBackend:
    """pycuda when installed (the user's choice), else cuda-python; CudaError naming both when neither
    works."""
    order = ["pycuda", "cuda-python"]
    if prefer in order:
        order.remove(prefer)
        order.insert(0, prefer)
    problems = []
    for name in order:
        try:
            return _backend(name, device)
        except ImportError:
            problems.append(f"{name} not installed")
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{name}: {_first_line(exc)}")
    raise CudaError("no CUDA binding usable: " + "; ".join(problems))


def _backend(name: str, device: int) -> CudaBackend:
    """Each binding's backend lives in its own module, imported only when asked for."""
    if name == "pycuda":
        from allscan.runtime.cuda_pycuda import PycudaBackend

        return PycudaBackend(device)
    from allscan.runtime.cuda_cudart import CudartBackend

    return CudartBackend(device)
