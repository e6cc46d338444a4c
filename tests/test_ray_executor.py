"""``allscan run --executor ray``: Ray Data on a local 2-CPU cluster publishes the local executor's tables."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_synth import field, make_slides, write_jpeg
from typer.testing import CliRunner

from allscan.cli import app
from allscan.pipeline.journal import RunLock
from allscan.pipeline.run import RunConfig, RunError, RunLocked, RunSummary, run_batch

TABLES = ("images.csv", "cells.csv", "slides.csv")


def _ray_ready() -> str | None:
    from allscan.pipeline.ray_executor import ray_missing

    return ray_missing()


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    missing = _ray_ready()
    if missing:
        pytest.skip(f"Ray is not installed: {missing}")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _inputs(root: Path) -> list[Path]:
    """Four slides, 21 images, one of them broken (an error row)."""
    make_slides(root / "ward", 18, n_slides=3)
    write_jpeg(root / "ward" / "slide-x" / "a.jpg", field(64, purple=[(20, 20, 8)], seed=91))
    write_jpeg(root / "ward" / "slide-x" / "b.jpg", field(64, seed=93))
    (root / "ward" / "slide-x" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return [root / "ward"]


def _run(inputs: list[Path], out: Path, **options: object) -> RunSummary:
    settings: dict[str, object] = {"model": "tiny", "workers": 0, "heatmaps": "all", "report": False, **options}
    return run_batch(RunConfig(inputs=inputs, out=out, **settings))  # type: ignore[arg-type]


def _bytes(out: Path) -> dict[str, bytes]:
    return {t: (out / t).read_bytes() for t in TABLES}


def test_ray_tables_equal_local_rerun_and_lock(ray_cluster: None, tiny_store: Path, tmp_path: Path) -> None:
    inputs = _inputs(tmp_path / "in")
    local = _run(inputs, tmp_path / "local")
    assert local.n_images == 21 and local.n_error == 1
    ray_out = tmp_path / "ray"
    summary = _run(inputs, ray_out, executor="ray", batch_size=4)
    assert (summary.n_processed, summary.n_error, summary.n_slides) == (21, 1, 4)
    assert summary.backend == "onnxruntime" and summary.timings["infer"] > 0
    assert _bytes(ray_out) == _bytes(tmp_path / "local")
    local_pngs = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*.png"))
    ray_pngs = sorted(p.relative_to(ray_out) for p in ray_out.rglob("*.png"))
    assert ray_pngs == local_pngs and len(ray_pngs) == 20
    for rel in ray_pngs:
        assert (ray_out / rel).read_bytes() == (tmp_path / "local" / rel).read_bytes()
    run_json = json.loads((ray_out / "run.json").read_text())
    assert run_json["args"]["executor"] == "ray" and run_json["counts"]["processed"] == 21

    again = _run(inputs, ray_out, executor="ray")  # resume: the journal holds every image, Ray is not needed
    assert again.n_processed == 0 and again.n_reused == 21 and again.backend == "none"
    assert _bytes(ray_out) == _bytes(tmp_path / "local")

    write_jpeg(inputs[0] / "slide-0" / "new.jpg", field(64, purple=[(30, 30, 9)], seed=7))
    grown = _run(inputs, ray_out, executor="ray")  # only the new image goes to the cluster
    assert grown.n_processed == 1 and grown.n_reused == 21
    _run(inputs, tmp_path / "local")
    assert _bytes(ray_out) == _bytes(tmp_path / "local")

    with RunLock(ray_out), pytest.raises(RunLocked):  # another run holds --out
        _run(inputs, ray_out, executor="ray", resume=False)
    assert _bytes(ray_out) == _bytes(tmp_path / "local")


def test_cli_executor_ray(ray_cluster: None, tiny_store: Path, tmp_path: Path) -> None:
    inputs = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["run", *map(str, inputs), "-o", str(out), "-m", "tiny", "--executor", "ray", "--no-report", "-q"]
    )
    assert result.exit_code == 1, result.output  # the broken file: finished with one error row
    assert json.loads((out / "run.json").read_text())["args"]["executor"] == "ray"
    assert (out / "images.csv").read_text().count("\n") == 22


def test_without_ray_the_option_says_how_to_install(
    tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "ray" else real_find_spec(name, *args)

    monkeypatch.setattr("importlib.util.find_spec", find_spec)
    inputs = _inputs(tmp_path / "in")
    with pytest.raises(RunError, match=r"pip install 'allscan\[ray\]'"):
        _run(inputs, tmp_path / "out", executor="ray")
    assert not (tmp_path / "out").exists()  # refused before anything was written
    result = CliRunner().invoke(
        app, ["run", str(inputs[0]), "-o", str(tmp_path / "out"), "-m", "tiny", "--executor", "ray"]
    )
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "allscan[ray]" in lines[0]


def test_ray_address_needs_the_ray_executor(tiny_store: Path, tmp_path: Path) -> None:
    with pytest.raises(RunError, match="--ray-address needs --executor ray"):
        _run(_inputs(tmp_path / "in"), tmp_path / "out", ray_address="auto")


def test_a_cluster_that_cannot_be_joined_is_a_usage_error(
    ray_cluster: None, tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    def refuse(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(RunError, match=r"cannot join the Ray cluster auto: Could not find any running Ray instance"):
        _run(_inputs(tmp_path / "in"), tmp_path / "out", executor="ray", ray_address="auto")
    assert not (tmp_path / "out" / "images.csv").exists()
