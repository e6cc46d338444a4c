"""The report at the end of a run is the CLI's job (issue 12): ``allscan run`` writes it unless ``--no-report``,
a report that fails is a warning (exit 0, the tables stand), a full disk is still exit 4, and no pipeline module
imports the report package."""

from __future__ import annotations

import ast
import errno
import json
import os
from pathlib import Path

import pytest
from pipeline_synth import make_slides
from typer.testing import CliRunner

import allscan.report
from allscan.cli import app

PIPELINE = Path(__file__).resolve().parents[1] / "allscan" / "pipeline"


def _run(inp: Path, out: Path, *extra: str) -> tuple[int, str]:
    args = ["run", str(inp), "-m", "tiny", "-o", str(out), "-q", "--workers", "0", *extra]
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def test_run_writes_the_report_and_no_report_skips_it(tiny_store: Path, tmp_path: Path) -> None:
    make_slides(tmp_path / "in", 3)
    code, output = _run(tmp_path / "in", tmp_path / "with")
    assert code == 0, output
    assert (tmp_path / "with" / "report.html").is_file() and (tmp_path / "with" / "images.csv").is_file()
    code, output = _run(tmp_path / "in", tmp_path / "without", "--no-report")
    assert code == 0, output
    assert not (tmp_path / "without" / "report.html").exists() and (tmp_path / "without" / "images.csv").is_file()
    assert json.loads((tmp_path / "without" / "run.json").read_text())["args"]["report"] is False


def test_a_failing_report_is_a_warning_not_a_failed_run(
    tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_out: Path) -> Path:
        raise ValueError("no template")

    monkeypatch.setattr(allscan.report, "write_report", broken)
    make_slides(tmp_path / "in", 3)
    code, output = _run(tmp_path / "in", tmp_path / "out")
    assert code == 0, output
    assert "warning: report not written: ValueError: no template" in output
    assert (tmp_path / "out" / "slides.csv").is_file() and not (tmp_path / "out" / "report.html").exists()


def test_a_full_disk_while_writing_the_report_is_a_storage_fault(
    tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(out: Path) -> Path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / "report.html"))

    monkeypatch.setattr(allscan.report, "write_report", full)
    make_slides(tmp_path / "in", 3)
    code, output = _run(tmp_path / "in", tmp_path / "out")
    assert code == 4, output
    assert (tmp_path / "out" / "images.csv").is_file()


def _imported(node: ast.AST) -> list[str]:
    """The modules an import statement names (``from allscan import report`` names allscan.report)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module:
        return [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return []


def test_no_pipeline_module_imports_the_report() -> None:
    """The layers contract (.importlinter), also for imports inside functions, which lint-imports sees too."""
    offenders = [
        f"{path.name}: {name}"
        for path in sorted(PIPELINE.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        for name in _imported(node)
        if name == "allscan.report" or name.startswith("allscan.report.")
    ]
    assert not offenders
