"""The output contract declared once: records and columns agree, rows round-trip, and nothing is guessed."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_synth import make_slides

from allscan.io.records import (
    CellRecord,
    Flag,
    ImageRecord,
    RecordError,
    SlideRecord,
    columns_of,
    from_cells,
    read_records,
    read_run,
    to_cells,
    to_values,
)
from allscan.io.records.run import to_json
from allscan.io.tables import CELL_MEASURES, AtomicTable, csv_line, format_row, image_columns
from allscan.pipeline.run import RunConfig, run_batch
from allscan.pipeline.segment import Cell

CLASSES = ("Benign", "Early", "Pre", "Pro")
HOSTILE = "=cmd|' -C calc'!A0"


def _image(**changes: object) -> ImageRecord:
    record = ImageRecord(
        slide="patient-A",
        image="patient-A/x 1.jpg",
        status="ok",
        label="Pro",
        confidence=0.7,
        probs=(0.1, 0.1, 0.1, 0.7),
        n_cells=2,
        heatmap="heatmaps/patient-A/x 1.jpg.png",
        flags=(Flag.NO_CELLS, Flag.LOW_CONFIDENCE),
        cell_focus=0.5,
        ood=1.25,
        width=224,
        height=200,
        cell_area_fraction=0.125,
        model_id="tiny@0123456789ab",
        notes="resized",
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def _cell(**changes: object) -> CellRecord:
    measures = {c.name: (3 if c.kind == "int" else 0.25) for c in CELL_MEASURES}
    return dataclasses.replace(CellRecord(slide="s", image="s/a.jpg", **measures, evidence=0.5), **changes)  # type: ignore[arg-type]


def _slide(**changes: object) -> SlideRecord:
    record = SlideRecord(
        slide="patient-A",
        n_images=3,
        n_ok=2,
        n_error=1,
        label="Pro",
        all_suspected="yes",
        counts=(0, 0, 0, 2),
        mean_probs=(0.1, 0.1, 0.1, 0.7),
        n_flagged=1,
        flag_counts=(1, 0, 1),
        evidence="basis ...",
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("record", [_image(), _cell(), _slide()], ids=["image", "cell", "slide"])
def test_every_field_maps_to_a_column_and_every_column_to_a_field(record: object) -> None:
    columns = [c.name for c in columns_of(type(record), CLASSES)]  # type: ignore[arg-type]
    values = to_values(record, CLASSES)  # type: ignore[arg-type]
    assert list(values) == columns  # the same names, in table order: no field without a column, no column without
    assert from_cells(type(record), to_cells(record, CLASSES), CLASSES) == record  # type: ignore[arg-type]


def test_cell_columns_are_the_segmentation_cells_fields() -> None:
    assert tuple(f.name for f in dataclasses.fields(Cell)) == tuple(c.name for c in CELL_MEASURES)


def test_format_row_refuses_unknown_and_missing_names() -> None:
    columns = image_columns(CLASSES)
    values = to_values(_image(), CLASSES)
    with pytest.raises(ValueError, match=r"unknown \['confidance'\]"):
        format_row(columns, {**values, "confidance": 0.5})
    del values["ood"]
    with pytest.raises(ValueError, match=r"missing \['ood'\]"):
        format_row(columns, values)
    with pytest.raises(RecordError, match="holds 3 values for 4 columns"):
        to_cells(_image(probs=(0.2, 0.3, 0.5)), CLASSES)
    with pytest.raises(RecordError, match="unknown flag"):
        _image(flags=("low_confidense",))


def test_rows_round_trip_through_a_published_table(tmp_path: Path) -> None:
    images = [
        _image(),
        _image(slide=HOSTILE, image=f"{HOSTILE}/@evil\udcff\\.jpg", notes="-1", flags=()),
        ImageRecord(slide="b", image="b/broken.jpg", status="error", error="cannot decode image", model_id="m"),
    ]
    table = AtomicTable(tmp_path / "images.csv", image_columns(CLASSES))
    table.write_rows(to_cells(r, CLASSES) for r in images)
    table.publish()
    assert list(read_records(tmp_path / "images.csv", ImageRecord, CLASSES)) == images
    assert (tmp_path / "images.csv").read_text(encoding="utf-8").splitlines()[2].startswith("'=cmd")


def test_a_table_for_other_classes_or_with_a_bad_cell_is_refused(tmp_path: Path) -> None:
    table = AtomicTable(tmp_path / "images.csv", image_columns(CLASSES))
    table.write_rows([to_cells(_image(), CLASSES)])
    table.publish()
    with pytest.raises(RecordError, match=r"images.csv: not the contract's columns \(missing \['prob_Myeloid'\]"):
        list(read_records(tmp_path / "images.csv", ImageRecord, (*CLASSES, "Myeloid")))
    cells = to_cells(_image(), CLASSES)
    cells[5] = "high"  # confidence
    (tmp_path / "images.csv").write_text(
        csv_line([c.name for c in image_columns(CLASSES)]) + csv_line(cells), encoding="utf-8"
    )
    with pytest.raises(RecordError, match=r"images.csv, row 1: .*bad number"):
        list(read_records(tmp_path / "images.csv", ImageRecord, CLASSES))


def test_a_real_run_reads_back_as_records_byte_for_byte(tiny_store: Path, tmp_path: Path) -> None:
    make_slides(tmp_path / "in", 6, n_slides=2)
    (tmp_path / "in" / "slide-0" / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    run_batch(RunConfig(inputs=[tmp_path / "in"], out=out, model="tiny", workers=0, heatmaps="all", report=False))
    run = read_run(out / "run.json")
    assert run.model.classes and run.model.flags is not None and run.model.flags.low_confidence == 0.4
    assert run.input_roots == (str((tmp_path / "in").resolve()),)
    assert to_json(run) == json.loads((out / "run.json").read_text(encoding="utf-8"))
    for name, kind in (("images.csv", ImageRecord), ("cells.csv", CellRecord), ("slides.csv", SlideRecord)):
        records = list(read_records(out / name, kind, run.model.classes))
        assert records, name
        header = csv_line([c.name for c in columns_of(kind, run.model.classes)])
        again = header + "".join(csv_line(to_cells(r, run.model.classes)) for r in records)
        assert again == (out / name).read_text(encoding="utf-8"), name
    statuses = [r.status for r in read_records(out / "images.csv", ImageRecord, run.model.classes)]
    assert statuses.count("error") == 1


def test_the_tables_module_imports_nothing_above_io() -> None:
    code = (
        "import sys, allscan.io.tables, allscan.io.records, allscan.io.atomic; "
        "print(sorted(m for m in sys.modules if m.startswith('allscan.') and not m.startswith('allscan.io')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
