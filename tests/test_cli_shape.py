"""The CLI's shape: shared options declared once, one module per command group, one error path, the extras
fence (a missing optional dependency refused in one line before any work), and help without torch."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from allscan.cli import app, errors
from allscan.cli.options import Backend
from allscan.extras import MissingExtra, install_hint, missing, require

SHARED = ("--model", "--backend", "--batch-size", "--workers", "--heatmaps")


def _commands() -> dict[str, Any]:
    group = typer.main.get_command(app)
    return {name: group.get_command(None, name) for name in group.list_commands(None)}  # type: ignore[attr-defined]


def _base(annotation: Any) -> Any:
    """``str`` for ``str | None`` (build-engine's --model is optional: --all instead)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def _option(command: Any, flag: str) -> Any | None:
    return next((p for p in command.params if flag in p.opts), None)


def test_shared_options_have_one_definition() -> None:
    """Same flags, type, bounds and help wherever a shared option appears (evaluate once took any --backend)."""
    for flag in SHARED:
        found = {name: _option(cmd, flag) for name, cmd in _commands().items() if _option(cmd, flag) is not None}
        assert len(found) >= 2, flag
        shapes = {(tuple(p.opts), p.help, p.min, p.max, _base(p.type_descriptor.annotation)) for p in found.values()}
        assert len(shapes) == 1, (flag, shapes)
    assert _option(_commands()["evaluate"], "--backend").type_descriptor.annotation is Backend
    assert _option(_commands()["run"], "--batch-size").min == 1
    runner = CliRunner()
    refused = runner.invoke(app, ["evaluate", ".", "--backend", "cuda"])
    assert refused.exit_code == 2 and "cuda" in refused.output
    refused = runner.invoke(app, ["bench", "--batch-size", "0"])
    assert refused.exit_code == 2


def test_each_command_lives_in_the_module_named_after_its_group() -> None:
    expected = {
        "run": "run",
        "merge": "merge",
        "slurm": "slurm",
        "report": "report",
        "build-engine": "engines",
        "fp16-check": "engines",
        "models": "models",
        "doctor": "doctor",
        "train": "train",
        "evaluate": "evaluate",
        "bench": "bench",
    }
    modules = {name: cmd.callback.__module__ for name, cmd in _commands().items()}
    assert modules == {name: f"allscan.cli.{module}" for name, module in expected.items()}


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["run", "--help"], ["evaluate", "--help"]])
def test_help_imports_no_torch(args: list[str]) -> None:
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom allscan.cli import app\n"
        f"result = CliRunner().invoke(app, {args!r})\nassert result.exit_code == 0, result.output\n"
        "print(result.output)\n"
        "print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'sklearn')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("LOADED []")
    if args[0] == "train":
        for name in ("vit_hybrid", "resnet18", "efficientnet_b0", "alexnet", "cnn"):
            assert name in out  # --arch help comes from the architecture table


def test_error_path_turns_known_errors_into_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from allscan.models.store import ModelStoreError
    from allscan.pipeline.faults import Interrupted

    with pytest.raises(typer.Exit) as stopped, errors.reported("models"):
        raise ModelStoreError("unknown model 'x' in /s (available: vit)")
    assert stopped.value.exit_code == 2
    assert capsys.readouterr().err == "allscan models: error: unknown model 'x' in /s (available: vit)\n"
    with pytest.raises(typer.Exit) as stopped, errors.reported("train", usage=(ValueError,)):
        raise ValueError("bad --split")
    assert stopped.value.exit_code == 2
    with pytest.raises(KeyError), errors.reported("train"):  # unknown, no results folder: Python's traceback
        raise KeyError("bug")
    with pytest.raises(typer.Exit) as stopped, errors.reported("run", tmp_path):  # a bug under --out: 3 + log
        raise KeyError("bug")
    assert stopped.value.exit_code == 3 and "traceback in" in capsys.readouterr().err
    with pytest.raises(typer.Exit) as stopped, errors.reported("run", tmp_path):
        raise Interrupted(15)
    assert stopped.value.exit_code == 143 and "rerun to resume" in capsys.readouterr().err
    with pytest.raises(typer.Exit) as stopped, errors.reported("run", tmp_path):
        raise typer.Exit(1)  # a command's own exit passes through untouched
    assert stopped.value.exit_code == 1 and capsys.readouterr().err == ""


def test_require_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    assert require("json", "train").__name__ == "json"
    monkeypatch.setitem(sys.modules, "sklearn", None)  # what an install without scikit-learn looks like to import
    with pytest.raises(MissingExtra) as refused:
        require("sklearn", "evaluate", "allscan evaluate")
    line = str(refused.value)
    assert "\n" not in line and line.startswith("allscan evaluate needs scikit-learn")
    assert line.endswith("pip install 'allscan[evaluate]'")
    assert missing("sklearn", "evaluate") is not None and missing("json", "evaluate") is None
    assert "allscan[ray]" in (missing("no_such_module_here", "ray") or "")
    with pytest.raises(ValueError, match="unknown extra"):
        install_hint("gpus")


def _one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    return lines[0]


def test_evaluate_without_scikit_learn_stops_before_any_work(
    tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import allscan.evaluation.evaluate as evaluation

    def must_not_run(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("evaluation started without scikit-learn")

    monkeypatch.setattr(evaluation, "evaluate", must_not_run)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    (tmp_path / "data" / "Benign").mkdir(parents=True)
    out = tmp_path / "e"
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "data"), "-m", "tiny", "-o", str(out)])
    assert result.exit_code == 2
    line = _one_error_line(result.output)
    assert line.startswith("allscan evaluate: error: allscan evaluate needs scikit-learn")
    assert line.endswith("pip install 'allscan[evaluate]'")
    assert not out.exists()


def test_train_without_torch_names_the_train_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    (tmp_path / "data" / "Benign").mkdir(parents=True)
    args = ["train", str(tmp_path / "data"), "--arch", "cnn", "--name", "x", "--store", str(tmp_path / "s")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert _one_error_line(result.output).endswith("pip install 'allscan[train]'")
    assert not (tmp_path / "s").exists()


def test_unknown_arch_is_refused_by_the_cli(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    result = CliRunner().invoke(app, ["train", str(tmp_path / "data"), "--arch", "lenet", "--name", "x"])
    assert result.exit_code == 2 and "lenet" in result.output


def test_ray_executor_without_ray_stops_before_any_work(
    tiny_store: Path, sample_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "o"
    result = CliRunner().invoke(app, ["run", str(sample_dir), "-m", "tiny", "-o", str(out), "--executor", "ray"])
    assert result.exit_code == 2
    assert _one_error_line(result.output).endswith("pip install 'allscan[ray]'")
    assert not out.exists()


def test_train_passes_its_options_to_train_config_by_name() -> None:
    """train_command hands PASSED options to TrainConfig unchanged: both sides must have each name."""
    import dataclasses
    import inspect

    pytest.importorskip("torch")
    from allscan.cli import train
    from allscan.train.loop import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    params = set(inspect.signature(train.train_command).parameters)
    assert set(train.PASSED) <= fields and set(train.PASSED) <= params
    assert set(train.VIT_OPTIONS) <= params
