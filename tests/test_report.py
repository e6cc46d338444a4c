"""Unit tests of the report: the page's numbers and order, escaping of hostile names, thumbnails, the CLI."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from report_synth import default_run, image_row, write_tables
from typer.testing import CliRunner

from allscan.cli import app
from allscan.io.records import RecordError
from allscan.io.tables import unguard
from allscan.report import write_report
from allscan.report.data import evidence_score, load

SCRIPT_SLIDE = "<script>alert(1)</script>"
HYPERLINK = '=HYPERLINK("http://evil.example","click")'


def _rows() -> list[dict]:
    return [
        *(image_row("A_benign", f"A_benign/a{i}.jpg", "Benign", (0.85, 0.05, 0.05, 0.05)) for i in range(3)),
        image_row("B_pro", "B_pro/b0.jpg", "Pro"),
        image_row("B_pro", "B_pro/b1.jpg", "Pro"),
        image_row("B_pro", "B_pro/b2.jpg", "Pro", (0.2, 0.2, 0.15, 0.45), flags="low_confidence"),
        image_row("B_pro", "B_pro/b3.jpg", status="error", error="cannot decode image"),
        image_row(SCRIPT_SLIDE, f"{SCRIPT_SLIDE}/s0.jpg", "Early"),
        image_row(SCRIPT_SLIDE, f"{SCRIPT_SLIDE}/s1.jpg", "Early", flags="out_of_distribution;no_cells"),
        image_row(SCRIPT_SLIDE, f"{SCRIPT_SLIDE}/s2.jpg", "Early"),
        image_row(SCRIPT_SLIDE, f"{SCRIPT_SLIDE}/s3.jpg", "Benign"),
        image_row("C", f"{HYPERLINK}.jpg", "Benign", (0.7, 0.1, 0.1, 0.1), flags="low_confidence"),
    ]


@pytest.fixture()
def out_dir(tmp_path: Path) -> Path:
    return write_tables(tmp_path / "out", _rows())


def test_unguard_restores_the_original_text() -> None:
    assert unguard("'=cmd") == "=cmd"
    assert unguard("'+1") == "+1"
    assert unguard("'quoted") == "'quoted"  # only the writer's guard is undone
    assert unguard("plain") == "plain"


def test_page_counts(out_dir: Path) -> None:
    data = load(out_dir)
    assert data.classes == ("Benign", "Early", "Pre", "Pro")
    assert (data.n_images, data.n_ok, data.n_error, data.n_flagged) == (12, 11, 1, 3)
    slides = {s.name: s for s in data.slides}
    b = slides["B_pro"]
    assert (b.n_images, b.n_ok, b.n_error, b.n_flagged) == (4, 3, 1, 1)
    assert b.counts == {"Benign": 0, "Early": 0, "Pre": 0, "Pro": 3}
    assert b.mean_probs["Pro"] == pytest.approx((0.85 + 0.85 + 0.45) / 3, abs=5e-5)  # slides.csv's 4 decimals
    assert slides[SCRIPT_SLIDE].flag_counts == {"out_of_distribution": 1, "no_cells": 1}
    assert data.label_counts() == {"Benign": (4, 1), "Early": (2, 1), "Pre": (0, 0), "Pro": (2, 1)}
    assert data.flag_names == ("no_cells", "out_of_distribution", "low_confidence")
    # The review queue: flagged and failed images only, in slide order, failures first within a slide.
    assert [(im.slide, im.image) for im in data.review] == [
        ("B_pro", "B_pro/b3.jpg"),
        ("B_pro", "B_pro/b2.jpg"),
        (SCRIPT_SLIDE, f"{SCRIPT_SLIDE}/s1.jpg"),
        ("C", f"{HYPERLINK}.jpg"),
    ]


def test_slides_sorted_by_evidence_of_leukemia(out_dir: Path) -> None:
    data = load(out_dir)
    # Leukemic labels first, by their share of unflagged leukemic calls (2 of 3 beats 2 of 4); then the benign
    # slides, by mean leukemic probability.
    assert [s.name for s in data.slides] == ["B_pro", SCRIPT_SLIDE, "C", "A_benign"]
    a, c = data.slides[3], data.slides[2]
    assert evidence_score(c, data.classes)[3] == pytest.approx(0.3)
    assert evidence_score(a, data.classes)[3] == pytest.approx(0.15)
    assert [s.all_suspected for s in data.slides] == ["yes", "yes", "no", "no"]  # C is labelled Benign


def test_slide_table_says_all_suspected_before_the_subtype(out_dir: Path) -> None:
    from allscan.report.render import slide_table

    html = slide_table(load(out_dir))
    assert html.count("<strong>ALL suspected</strong><br><span class=muted>subtype:</span>") == 2
    assert html.count("ALL not suspected<br>") == 2


def test_slides_come_from_slides_csv_not_a_rule_of_the_report(out_dir: Path) -> None:
    data = load(out_dir)
    slides = {s.name: s for s in data.slides}
    # The pipeline's rule: B_pro's basis is its 2 unflagged Pro calls; its evidence says so.
    assert slides["B_pro"].label == "Pro"
    assert "basis 2 unflagged ok images, 1 flagged left out" in slides["B_pro"].evidence
    (out_dir / "run.json").unlink()
    assert load(out_dir).classes == data.classes  # without run.json the classes are images.csv's
    assert write_report(out_dir).is_file()
    (out_dir / "slides.csv").unlink()
    with pytest.raises(FileNotFoundError, match="no slides.csv"):
        load(out_dir)


def test_a_table_that_is_not_the_contract_is_refused_in_one_line(out_dir: Path, tmp_path: Path) -> None:
    text = (out_dir / "images.csv").read_text(encoding="utf-8")
    (out_dir / "images.csv").write_text(text.replace(",notes\n", ",note\n", 1), encoding="utf-8")
    with pytest.raises(RecordError, match=r"images.csv: not the contract's columns \(missing \['notes'\]"):
        load(out_dir)
    result = CliRunner().invoke(app, ["report", str(out_dir)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output


def test_report_reads_run_json_by_its_keys_and_the_card(out_dir: Path) -> None:
    page = write_report(out_dir).read_text(encoding="utf-8")
    assert "1 min 23 s" in page and "low confidence below 0.6; unlike training data above 1.5" in page
    run = json.loads((out_dir / "run.json").read_text(encoding="utf-8"))
    run["duration_s"] = run.pop("wall_s")  # an alias is not guessed: the unknown key is refused, and named
    (out_dir / "run.json").write_text(json.dumps(run), encoding="utf-8")
    with pytest.raises(RecordError, match=r"run.json: unknown key 'duration_s'"):
        load(out_dir)
    del run["duration_s"]
    (out_dir / "run.json").write_text(json.dumps(run), encoding="utf-8")
    with pytest.raises(RecordError, match=r"run.json: key 'wall_s' is missing"):
        load(out_dir)
    run["wall_s"] = 83.2
    for key in ("class_labels", "flags"):  # a run.json from before these keys still reads
        run["model"].pop(key)
    run.pop("input_roots")
    (out_dir / "run.json").write_text(json.dumps(run), encoding="utf-8")
    data = load(out_dir)
    assert data.run is not None and data.run.model.flags is None and data.class_labels == {}


def test_hostile_names_are_escaped_and_unguarded(out_dir: Path) -> None:
    page = write_report(out_dir).read_text(encoding="utf-8")
    assert SCRIPT_SLIDE not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown as text in the tables
    assert len(re.findall(r"<script", page)) == 2  # only the page's own data and code
    data_json = page.split('<script type="application/json" id="data">')[1].split("</script>")[0]
    assert "<" not in data_json
    payload = json.loads(data_json)
    assert SCRIPT_SLIDE in payload["slides"]
    assert any(row[1] == f"{HYPERLINK}.jpg" for row in payload["images"])  # the guard's ' is gone
    assert "=HYPERLINK(&quot;http://evil.example&quot;,&quot;click&quot;).jpg" in page
    assert "'=HYPERLINK" not in page and "&#x27;=HYPERLINK" not in page


def test_page_is_self_contained_and_says_what_it_is(out_dir: Path) -> None:
    page = write_report(out_dir).read_text(encoding="utf-8")
    assert "<link" not in page and not re.search(r'src="(https?:)?//', page)
    assert "research tool, not a diagnostic device" in page
    assert "10.34740/KAGGLE/DSV/2175623" in page and "Aria" in page
    assert "<svg" in page and "<details" in page


def test_thumbnails_are_made_once(tmp_path: Path, sample_dir: Path) -> None:
    images = sorted(sample_dir.glob("*/*.jpg"))[:3]
    rows = [image_row(p.parent.name, f"{p.parent.name}/{p.name}", "Pro", flags="no_cells") for p in images]
    out = write_tables(tmp_path / "out", rows, default_run([str(sample_dir)]))
    page = write_report(out).read_text(encoding="utf-8")
    thumbs = sorted((out / "report" / "thumbs").glob("*.jpg"))
    assert len(thumbs) == 3
    assert page.count('loading="lazy"') == 3  # the review queue's rows; the script draws the slides' lists
    stamps = [t.stat().st_mtime_ns for t in thumbs]
    time.sleep(0.01)
    write_report(out)
    assert [t.stat().st_mtime_ns for t in thumbs] == stamps  # reruns do not re-encode
    payload = json.loads(page.split('id="data">')[1].split("</script>")[0])
    assert all(row[9] & 1 for row in payload["images"])


def test_ten_thousand_images_stay_small(tmp_path: Path) -> None:
    rows = []
    for i in range(10_000):
        slide = f"patient-{i // 40:04d}"
        flags = "low_confidence" if i % 5 == 0 else ""
        rows.append(
            image_row(
                slide,
                f"{slide}/WBC-Malignant-Pro-{i:05d}.jpg",
                "Pro",
                flags=flags,
                heatmap=f"heatmaps/{slide}/WBC-Malignant-Pro-{i:05d}.png",
            )  # fmt: skip
        )
    out = write_tables(tmp_path / "out", rows)
    t0 = time.perf_counter()
    size = write_report(out).stat().st_size
    assert size < 3_000_000, size
    assert time.perf_counter() - t0 < 20


def test_cli_report(out_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(tmp_path / "empty")])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "images.csv" in result.output
    (out_dir / "report.html").unlink(missing_ok=True)
    result = runner.invoke(app, ["report", str(out_dir)])
    assert result.exit_code == 0, result.output
    assert (out_dir / "report.html").is_file()
