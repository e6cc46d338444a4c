"""End-to-end: a real `allscan run` with the tiny model, its report opened in headless Chromium via file://.

Needs Debian's `chromium` (installed by .ci/run) and Playwright for Python (the `test` extra); skipped
otherwise.
The screenshot is left in the test's tmp_path (pytest keeps the last three runs' folders) as a CI artifact.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from allscan.cli import app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOSTILE_SLIDE = "<img src=x onerror=alert(1)>"

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
if not Path(CHROMIUM).is_file():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture()
def run_out(tmp_path: Path, tiny_store: Path, sample_dir: Path) -> Path:
    """A run over the sample slides, a red slide (the tiny model calls it Benign) and a hostile slide name."""
    import cv2

    inputs = tmp_path / "slides"
    shutil.copytree(sample_dir, inputs, ignore=shutil.ignore_patterns("*.md"))
    red = inputs / "red-slide"
    red.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        img = np.full((224, 224, 3), (60, 60, 230), np.uint8)  # BGR: red background
        for _ in range(3):
            x, y = rng.integers(30, 190, size=2)
            cv2.circle(img, (int(x), int(y)), 18, (150, 40, 90), -1)  # purple "cells"
        cv2.imwrite(str(red / f"red-{i}.jpg"), img)
    hostile = inputs / HOSTILE_SLIDE
    hostile.mkdir()
    shutil.copy(next(sample_dir.glob("patient-A/*.jpg")), hostile / "x.jpg")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["run", str(inputs), "-m", "tiny", "-o", str(out), "--workers", "0", "--heatmaps", "all"]
    )
    assert result.exit_code == 0, result.output
    assert (out / "report.html").is_file()
    return out


def test_report_in_chromium(run_out: Path, tmp_path: Path) -> None:
    import csv

    with (run_out / "images.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    slides = sorted({r["slide"] for r in rows})
    assert HOSTILE_SLIDE in slides and len(slides) == 5
    problems: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console",
                lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
            page.on("request", lambda r: None if r.url.startswith("file:") else problems.append(f"fetch {r.url}"))
            page.goto((run_out / "report.html").as_uri(), wait_until="load")

            # Every slide is listed, its name shown as text (the hostile one too).
            names = page.locator("tbody.slide summary").all_inner_texts()
            assert sorted(names) == slides
            visible = page.locator("tbody.slide:visible")
            assert visible.count() == 5

            # Keyboard: open the first slide with Enter; its images are drawn, thumbnails load from report/.
            page.locator("tbody.slide summary").first.focus()
            page.keyboard.press("Enter")
            first = page.locator("tbody.slide").first
            n_first = int(first.locator("td.num").first.inner_text())
            assert first.locator("table.images tbody tr").count() == n_first
            thumb = first.locator("table.images img").first
            thumb.scroll_into_view_if_needed()
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())

            # Filters change the visible rows without reloading: class Pro hides the red (Benign) slide.
            page.select_option("#f-class", label="Pro-B ALL")
            assert 0 < visible.count() < 5
            assert page.locator("tbody.slide:visible summary", has_text="red-slide").count() == 0
            page.fill("#f-slide", "patient-b")
            assert visible.count() == 1
            assert "in 1 of 5 slides" in page.locator("#f-status").inner_text()
            page.click("#f-reset")
            page.wait_for_function("document.querySelectorAll('tbody.slide:not([hidden])').length === 5")

            page.locator("tbody.slide").nth(1).locator("summary").click()  # the first is still open
            page.evaluate("window.scrollTo(0, 0)")  # the filter bar is sticky: keep it at the top of the shot
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            print(f"screenshot: {tmp_path / 'report.png'}")
        finally:
            browser.close()
    assert not problems, problems
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_report_without_javascript(run_out: Path) -> None:
    """The tables are plain HTML: slides and review queue read fine with scripts off; filters stay hidden."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(java_script_enabled=False).new_page()
            page.goto((run_out / "report.html").as_uri(), wait_until="domcontentloaded")
            assert page.locator("tbody.slide:visible").count() == 5
            assert HOSTILE_SLIDE in page.locator("table.slides").inner_text()
            assert page.locator("#filters").is_hidden()
            assert page.locator("table.review tbody tr[data-s]").count() > 0
        finally:
            browser.close()
