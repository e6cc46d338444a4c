"""Per-cell evidence (cells.csv `evidence`) and the cells that carry the call, outlined in the heatmap PNG."""

from __future__ import annotations

import numpy as np
import pytest


def test_cell_evidence_shares_and_strongest_cells_outlined() -> None:
    from allscan.io.heatmap import STRONG_BGR, cell_evidence, cell_focus, render, strongest_cells

    labels = np.zeros((40, 40), np.int32)
    labels[2:10, 2:10] = 1  # strong
    labels[20:28, 2:10] = 2  # weak
    labels[20:28, 25:33] = 3  # almost as strong as 1
    heat = np.zeros((40, 40), np.float32)
    heat[labels == 1] = 1.0
    heat[labels == 2] = 0.1
    heat[labels == 3] = 0.8
    heat[30:40, 30:40] = 0.2  # evidence outside any cell
    evidence = cell_evidence(heat, labels, 3)
    total = float(heat.sum())
    np.testing.assert_allclose(evidence, [64 / total, 6.4 / total, 51.2 / total], rtol=1e-6)
    assert evidence.sum() == pytest.approx(cell_focus(heat, (labels > 0).astype(np.uint8)))
    strong = strongest_cells(labels, evidence)
    assert strong is not None
    assert strong[5, 5] == 1 and strong[24, 28] == 1 and strong[24, 5] == 0  # cells 1 and 3, not the weak one
    picture = render(np.full((40, 40, 3), 200, np.uint8), heat, (labels > 0).astype(np.uint8), strong)
    red = np.all(np.abs(picture.astype(int) - STRONG_BGR) < 60, axis=2)
    assert red[:12, :12].any() and red[18:30, 23:35].any() and not red[18:30, :12].any()
    assert strongest_cells(labels, np.zeros(3)) is None
    assert cell_evidence(heat, labels, 0).shape == (0,)


def test_cells_csv_evidence_adds_up_to_cell_focus(tiny_store, sample_dir, tmp_path) -> None:
    import csv

    from allscan.pipeline.run import RunConfig, run_batch

    out = tmp_path / "out"
    run_batch(RunConfig(inputs=[sample_dir], out=out, model="tiny", workers=0, report=False, heatmaps="none"))
    with open(out / "images.csv", newline="", encoding="utf-8") as handle:
        focus = {(r["slide"], r["image"]): r["cell_focus"] for r in csv.DictReader(handle)}
    sums: dict[tuple[str, str], float] = {}
    with open(out / "cells.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            sums[(row["slide"], row["image"])] = sums.get((row["slide"], row["image"]), 0.0) + float(row["evidence"])
    assert len(sums) >= 10
    for key, total in sums.items():
        assert total == pytest.approx(float(focus[key]), abs=2e-3 + 5e-5 * 30), key
