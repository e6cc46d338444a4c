"""run.json and the report after a rerun with nothing new (issue 10 case 16a): they still say how the published
rows were made (backend, precision, speed, versions of the run that made them), not 'backend none, 0 images/s'."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from pipeline_synth import make_slides, random_field, write_jpeg

from allscan.pipeline.run import RunConfig, run_batch
from allscan.report import write_report


def _facts(report: Path) -> dict[str, str]:
    """The report's headline facts (its <dl class="facts">), by label."""
    text = report.read_text(encoding="utf-8")
    block = text.split('<dl class="facts">', 1)[1].split("</dl>", 1)[0]
    return {html.unescape(k): html.unescape(v) for k, v in re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", block)}


def test_noop_rerun_names_the_run_that_made_the_rows(tiny_store: Path, tmp_path: Path) -> None:
    make_slides(tmp_path / "in", 6)
    out = tmp_path / "out"
    config = RunConfig(inputs=[tmp_path / "in"], out=out, model="tiny", workers=0)
    run_batch(config)
    first = json.loads((out / "run.json").read_text())
    assert first["backend"] != "none" and first["images_per_s"] > 0
    assert first["produced_by"]["started"] == first["started"]  # a run that made rows names itself

    summary = run_batch(config)
    doc = json.loads((out / "run.json").read_text())
    assert doc["backend"] == "none" and doc["counts"]["processed"] == 0  # the no-op run's own facts stay
    made = doc["produced_by"]
    assert (made["backend"], made["precision"], made["images_per_s"]) == (
        first["backend"],
        first["precision"],
        first["images_per_s"],
    )
    assert made["started"] == first["started"] and made["versions"] == first["versions"]
    assert made["model"]["id"] == first["model"]["id"] and made["processed"] == 6

    assert summary.n_processed == 0
    facts = _facts(write_report(out))
    assert facts["Backend"].startswith(first["backend"])
    assert float(facts["Images per second"]) > 0
    assert facts["Precision"] == first["precision"]
    assert "nothing new to process" in facts["Latest run"]

    write_jpeg(tmp_path / "in" / "slide-0" / "new.jpg", random_field(99))
    run_batch(config)
    third = json.loads((out / "run.json").read_text())
    assert third["counts"]["processed"] == 1
    assert third["produced_by"]["started"] == third["started"] and third["produced_by"]["processed"] == 1
    assert "Latest run" not in _facts(write_report(out))
