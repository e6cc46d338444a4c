"""The wheel: it carries the shipped models (model.onnx, card.json, split.json; never checkpoints or engines built
on some machine), and an unpacked wheel finds them and runs ``allscan run`` from another folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("model.onnx", "card.json", "split.json")


def _declared_packages() -> list[str]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return list(config["tool"]["setuptools"]["packages"])


def test_pyproject_lists_every_package() -> None:
    """The package list is explicit (engines/ is mapped in from outside allscan/): a new subpackage must be added."""
    on_disk = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "allscan").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert set(_declared_packages()) == on_disk | {"allscan.engines"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the checkout whose engines/ also holds a checkpoint, a plan and a cache."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "trt", "checkpoints", ".trt-timing-cache")
    shutil.copytree(REPO / "allscan", src / "allscan", ignore=ignore)
    shutil.copytree(REPO / "engines", src / "engines", ignore=ignore)
    (src / "engines" / "vit" / "checkpoints").mkdir()
    (src / "engines" / "vit" / "checkpoints" / "last.pt").write_bytes(b"not for the wheel")
    (src / "engines" / "vit" / "trt").mkdir()
    (src / "engines" / "vit" / "trt" / "x.plan").write_bytes(b"built on another machine")
    (src / "engines" / ".trt-timing-cache").mkdir()
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", str(src), "-w", str(out), "--no-deps", "--no-build-isolation"]
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=out)
    (built,) = out.glob("allscan-*.whl")
    return built


def test_wheel_ships_the_models_and_nothing_else_from_engines(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    engines = sorted(n for n in names if n.startswith("allscan/engines/"))
    models = sorted(p.name for p in (REPO / "engines").iterdir() if (p / "card.json").is_file())
    assert "vit" in models
    assert engines == sorted(f"allscan/engines/{m}/{f}" for m in models for f in SHIPPED)
    assert not [n for n in names if n.endswith((".pt", ".plan"))]
    assert "allscan/report/report.css" in names and "allscan/cli/__init__.py" in names


def test_unpacked_wheel_runs_the_default_model_from_another_folder(wheel: Path, tmp_path: Path) -> None:
    """As after ``pip install allscan-*.whl``: no checkout, no $ALLSCAN_ENGINES, the default model."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    slide = tmp_path / "in" / "slide"
    slide.mkdir(parents=True)
    for image in sorted((REPO / "sample_images").rglob("*.jpg"))[:2]:
        shutil.copy2(image, slide / image.name)
    env = {k: v for k, v in os.environ.items() if k != "ALLSCAN_ENGINES"}
    env["PYTHONPATH"] = str(site)  # ahead of the editable install's finder
    code = "from allscan.cli import main; main()"
    args = ["run", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "-q", "--workers", "0", "--no-report"]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(vit@" in done.stdout
    where = subprocess.run(
        [sys.executable, "-c", "from allscan.models.store import store_root; print(store_root())"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=True,
    ).stdout.strip()  # fmt: skip
    assert where == str(site / "allscan" / "engines")
    assert len((tmp_path / "o" / "images.csv").read_text().splitlines()) == 3
