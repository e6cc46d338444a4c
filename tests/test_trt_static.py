"""mypy over the TensorRT code against ``tensorrt-stubs``: the one check of TensorRT API names and signatures
that runs without TensorRT.

The stubs (10.13) cannot be used as installed: they put ``.pyi`` files in ``site-packages/tensorrt`` without a
``py.typed`` marker, so mypy treats TensorRT as untyped (everything ``Any``, nothing checked), and four
methods name a parameter ``in`` (a keyword) while ``add_scale_nd`` puts a required parameter after defaults:
syntax errors. The test copies them to a temporary folder, repairs those lines, points ``MYPYPATH`` there, and
checks a negative control (a misspelled flag and method must be reported) so that a silent ``Any`` cannot
pass. Install the stubs with ``pip install --no-deps tensorrt-stubs`` (their dependency, tensorrt-cu12-libs,
only installs from NVIDIA's package index)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKED = [
    "allscan/runtime/tensorrt.py",
    "allscan/runtime/engine_build.py",
    "allscan/runtime/trt_plan.py",
    "allscan/runtime/pipelined.py",
]
BAD_USE = """
import tensorrt as trt


def build(builder: trt.Builder) -> None:
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP17)
    builder.build_engine_with_typo(None, config)
"""

_SPEC = importlib.util.find_spec("tensorrt_stubs")


def _stub_copy(dest: Path) -> Path:
    assert _SPEC is not None and _SPEC.origin is not None
    site = Path(_SPEC.origin).parents[1]
    for package in ("tensorrt", "tensorrt_bindings"):
        shutil.copytree(site / package, dest / package, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    pyi = dest / "tensorrt_bindings" / "tensorrt.pyi"
    text = pyi.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^(\s*def .*?[(,] ?)in: ", r"\1in_: ", text)
    text = re.sub(r"(?m)^(\s*def .*?[(,] ?)in: ", r"\1in_: ", text)  # second parameter on the same line
    text = text.replace("power: Weights = None, channel_axis: int)", "power: Weights = None, channel_axis: int = ...)")
    pyi.write_text(text, encoding="utf-8")
    return dest


@pytest.mark.skipif(_SPEC is None, reason="tensorrt-stubs not installed (pip install --no-deps tensorrt-stubs)")
def test_tensorrt_code_type_checks_against_tensorrt_stubs(tmp_path: Path) -> None:
    stubs = _stub_copy(tmp_path / "stubs")
    bad = tmp_path / "bad_trt_use.py"
    bad.write_text(BAD_USE)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--follow-imports=silent",
            "--ignore-missing-imports",
            *CHECKED,
            str(bad),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"MYPYPATH": str(stubs), "PATH": "/usr/bin:/bin"},
    )
    lines = result.stdout.splitlines()
    syntax = [line for line in lines if "[syntax]" in line]
    assert syntax == [], "stub repair incomplete:\n" + "\n".join(syntax[:5])
    ours = [line for line in lines if line.startswith("allscan/")]
    assert ours == [], "\n".join(ours)
    controls = [line for line in lines if "bad_trt_use.py:" in line]
    assert any("FP17" in line for line in controls), result.stdout[-2000:]
    assert any("build_engine_with_typo" in line for line in controls), result.stdout[-2000:]
