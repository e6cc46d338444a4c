"""The one fence around optional dependencies: ``require(module, extra)`` before a command starts its work.

Why: the light install (typer, rich, numpy, OpenCV, onnxruntime) must run ``allscan run`` anywhere, so torch,
scikit-learn, TensorRT and Ray live in extras. A command that needs one must say so in one line naming the extra,
*before* it works for an hour: a lazily imported scikit-learn used to end a whole evaluation in a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

# extra -> what it brings (pyproject.toml's [project.optional-dependencies]); keys are the names users install.
EXTRAS = {
    "train": "torch, torchvision, onnx, scikit-learn, matplotlib",
    "evaluate": "scikit-learn, matplotlib",
    "gpu": "tensorrt, pycuda, cuda-python",
    "fp16": "onnx, onnxconverter-common",
    "ray": "ray[data]",
}
# import name -> the pip distribution name, where they differ (for the message only)
DISTRIBUTIONS = {"sklearn": "scikit-learn", "onnxconverter_common": "onnxconverter-common"}


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message is one line naming the extra to install."""


def install_hint(extra: str) -> str:
    """The command that installs ``extra``."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    return f"pip install 'allscan[{extra}]'"


def _message(module: str, extra: str, purpose: str, cause: str) -> str:
    top = module.split(".")[0]
    name = DISTRIBUTIONS.get(top, top)
    return f"{purpose} needs {name}, which is not installed ({cause}): {install_hint(extra)}"


def require(module: str, extra: str, purpose: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtra` naming ``extra``; ``purpose`` starts the message."""
    hint = install_hint(extra)  # an unknown extra is a bug here, not a missing package
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MissingExtra(_message(module, extra, purpose or f"the '{extra}' extra", cause)) from None
    except Exception as exc:  # a broken install (e.g. a binary built for another numpy) fails at import too
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise MissingExtra(
            f"{purpose or module}: {module} is installed but fails to import "
            f"({type(exc).__name__}: {first}); reinstall it: {hint}"
        ) from None


def missing(module: str, extra: str, purpose: str | None = None) -> str | None:
    """The one-line message :func:`require` would give, without importing ``module`` (no import cost), or None."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module set to None in sys.modules
        found = False
    if found:
        return None
    return _message(module, extra, purpose or f"the '{extra}' extra", f"{module} not found")
