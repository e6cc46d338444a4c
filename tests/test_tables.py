"""The CSV contract: column order, value formatting, CSV-injection guard, and the slide label rule."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from pipeline_synth import field, write_jpeg

from allscan.io.records import to_values
from allscan.io.tables import (
    CELL_TABLE_COLUMNS,
    csv_line,
    format_value,
    image_columns,
    safe_text,
    slide_columns,
)
from allscan.pipeline.run import RunConfig, run_batch
from allscan.pipeline.slides import SlideTally, slide_label

CLASSES = ("Benign", "Early", "Pre", "Pro")


def test_images_csv_columns_follow_the_contract() -> None:
    names = [c.name for c in image_columns(CLASSES)]
    assert names == [
        "slide", "image", "status", "error", "label", "confidence",
        "prob_Benign", "prob_Early", "prob_Pre", "prob_Pro", "n_cells", "heatmap",
        "flags", "cell_focus", "ood", "width", "height", "cell_area_fraction", "model_id", "notes",
    ]  # fmt: skip
    cells = [c.name for c in CELL_TABLE_COLUMNS]
    assert cells[:8] == ["slide", "image", "cell_id", "x", "y", "width", "height", "area_px"]
    assert {"perimeter", "circularity", "equivalent_diameter", "mean_h", "mean_s", "mean_v"} <= set(cells)
    slides = [c.name for c in slide_columns(CLASSES)]
    assert slides[:5] == ["slide", "n_images", "n_ok", "n_error", "label"]
    assert slides[5:10] == ["all_suspected", "n_Benign", "n_Early", "n_Pre", "n_Pro"]
    assert slides[-5:] == ["n_flagged", "n_no_cells", "n_out_of_distribution", "n_low_confidence", "evidence"]


@pytest.mark.parametrize("value", ['=HYPERLINK("http://x")', "+1+2", "-2+3", "@SUM(A1)", "\tx", "\rx"])
def test_formula_like_text_is_neutralised(value: str) -> None:
    assert safe_text(value) == "'" + value
    assert format_value(value, "text") == "'" + value


def test_ordinary_values_are_untouched_and_numbers_formatted_once() -> None:
    assert safe_text("patient-A") == "patient-A"
    assert format_value(0.123456, "prob") == "0.1235"
    assert format_value(float("nan"), "prob") == ""
    assert format_value(None, "int") == ""
    assert format_value(12, "int") == "12"
    assert format_value(3.14159, "float") == "3.14"
    assert csv_line(["a,b", 'say "hi"', ""]) == '"a,b","say ""hi""",\n'


def test_injection_guard_end_to_end(tiny_store: Path, tmp_path: Path) -> None:
    img = field(64, purple=[(30, 30, 8)], seed=9)
    write_jpeg(tmp_path / "in" / "=cmd|' -C calc'!A0" / "@evil.jpg", img)
    write_jpeg(tmp_path / "in" / "+slide" / "-minus.jpg", img)
    run_batch(RunConfig(inputs=[tmp_path / "in"], out=tmp_path / "out", model="tiny", workers=0, report=False))
    for table in ("images.csv", "cells.csv", "slides.csv"):
        with open(tmp_path / "out" / table, newline="", encoding="utf-8") as handle:
            for row in list(csv.reader(handle))[1:]:
                for cell in row:
                    assert not cell.startswith(("=", "+", "@", "\t", "\r")), (table, cell)
                    assert not (cell.startswith("-") and not cell[1:2].isdigit()), (table, cell)
    with open(tmp_path / "out" / "images.csv", newline="", encoding="utf-8") as handle:
        slides = {row["slide"] for row in csv.DictReader(handle)}
    assert slides == {"'+slide", "'=cmd|' -C calc'!A0"}


def test_slide_label_rule() -> None:
    means = [0.25] * 4
    assert slide_label(CLASSES, [10, 0, 0, 0], means)[0] == "Benign"
    assert slide_label(CLASSES, [9, 1, 0, 0], means)[0] == "Benign"  # one leukemia image never labels a slide
    label, reason = slide_label(CLASSES, [8, 1, 1, 0], means)  # two leukemia images of two subtypes: 20 %
    assert label == "Early" and reason.startswith("ALL suspected") and "tie with Pre" in reason
    assert slide_label(CLASSES, [9, 2, 0, 0], means)[0] == "Benign"  # 2/11 = 18 % < 20 %
    assert slide_label(CLASSES, [8, 2, 0, 0], means)[0] == "Early"  # 2/10 = 20 %
    assert slide_label(CLASSES, [1, 2, 3, 1], means)[0] == "Pre"
    label, reason = slide_label(CLASSES, [0, 3, 3, 0], [0.1, 0.4, 0.5, 0.0])  # tie -> higher mean probability
    assert label == "Pre" and "tie" in reason


def test_slide_tally_uses_unflagged_images_and_counts_flags() -> None:
    tally = SlideTally("s", CLASSES)
    p = [0.7, 0.1, 0.1, 0.1]
    for _ in range(3):
        tally.add("ok", 0, p, ())
    for _ in range(3):  # three flagged Pro calls do not make the slide Pro
        tally.add("ok", 3, [0.1, 0.1, 0.1, 0.7], ("low_confidence",))
    tally.add("error", None, None, ())
    row = to_values(tally.record(), CLASSES)
    assert row["label"] == "Benign" and row["all_suspected"] == "no"
    assert str(row["evidence"]).count("ALL not suspected") == 1
    assert (row["n_images"], row["n_ok"], row["n_error"], row["n_flagged"]) == (7, 6, 1, 3)
    assert row["n_Pro"] == 3 and row["n_low_confidence"] == 3
    assert row["mean_prob_Benign"] == pytest.approx(0.4)
    assert "3 unflagged ok images, 3 flagged left out" in str(row["evidence"])

    all_flagged = SlideTally("t", CLASSES)
    for _ in range(2):
        all_flagged.add("ok", 2, [0.1, 0.1, 0.7, 0.1], ("no_cells",))
    assert all_flagged.record().label == "Pre" and all_flagged.record().all_suspected == "yes"
    errors_only = SlideTally("u", CLASSES)
    errors_only.add("error", None, None, ())
    assert errors_only.record().label == "" and errors_only.record().all_suspected == ""
