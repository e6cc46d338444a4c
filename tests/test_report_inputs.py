"""The report is a view of the published rows: it never decodes what the pipeline refused, and it makes thumbnails
only for the rows it shows with a picture."""

from __future__ import annotations

import csv
from pathlib import Path

from pipeline_synth import make_slides
from report_synth import default_run, image_row, write_tables
from test_decode import _png_header_only

from allscan.cli.reporting import report_or_warn
from allscan.pipeline.run import RunConfig, run_batch
from allscan.report import write_report


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "images.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_report_is_written_when_an_input_holds_a_decompression_bomb(tiny_store: Path, tmp_path: Path) -> None:
    make_slides(tmp_path / "in", 4, n_slides=1)
    slide = next((tmp_path / "in").iterdir())
    (slide / "bomb.png").write_bytes(_png_header_only(40_000, 40_000))
    summary = run_batch(RunConfig(inputs=[tmp_path / "in"], out=tmp_path / "out", model="tiny", workers=0))
    report_or_warn(summary.out_dir, summary)
    bomb = [r for r in _rows(tmp_path / "out") if r["image"].endswith("bomb.png")]
    assert bomb and bomb[0]["status"] == "error" and bomb[0]["error"].startswith("image too large")
    assert summary.report_path == tmp_path / "out" / "report.html" and summary.report_path.is_file()
    assert not [w for w in summary.warnings if w.startswith("report not written")]
    assert "bomb.png" in summary.report_path.read_text(encoding="utf-8")


def test_without_heatmaps_only_the_review_queue_gets_thumbnails(tmp_path: Path, sample_dir: Path) -> None:
    images = sorted(sample_dir.glob("*/*.jpg"))[:6]
    rows = [
        image_row(p.parent.name, f"{p.parent.name}/{p.name}", "Benign", (0.85, 0.05, 0.05, 0.05), flags=flags)
        for p, flags in zip(images, ["no_cells", "", "", "", "", ""], strict=True)
    ]
    out = write_tables(tmp_path / "out", rows, default_run([str(sample_dir)]))
    write_report(out)
    assert len(list((out / "report" / "thumbs").glob("*.jpg"))) == 1  # the flagged image's; not one per image
