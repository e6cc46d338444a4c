"""Discovery follows the brief's slide rules, in a deterministic order, and never hangs on strange folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from allscan.pipeline.discover import JOURNAL_NAME, DiscoveryError, discover


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _listing(inputs: list[Path], **kw: object) -> list[tuple[str, str, str]]:
    return [(f.slide, f.image, f.error) for f in discover(inputs, **kw)]  # type: ignore[arg-type]


def test_slides_loose_images_nesting_hidden_and_extensions(tmp_path: Path) -> None:
    root = tmp_path / "slides"
    _touch(root / "b-slide" / "z.JPG")
    _touch(root / "b-slide" / "a.jpeg")
    _touch(root / "b-slide" / "deeper" / "c.png")
    _touch(root / "b-slide" / "deeper" / "d.TIFF")
    _touch(root / "a-slide" / "x.jpg")
    _touch(root / "a-slide" / ".hidden.jpg")
    _touch(root / "a-slide" / "readme.txt")
    _touch(root / "a-slide" / "scan.bmp")
    _touch(root / ".trash" / "old.jpg")
    _touch(root / "loose.jpg")
    (root / "empty-slide").mkdir()

    found = list(discover([root]))
    assert [(f.slide, f.image, f.in_slide) for f in found] == [
        ("slides", "loose.jpg", "loose.jpg"),  # images directly in INPUT: a slide named after INPUT, first
        ("a-slide", "a-slide/x.jpg", "x.jpg"),
        ("b-slide", "b-slide/a.jpeg", "a.jpeg"),
        ("b-slide", "b-slide/deeper/c.png", "deeper/c.png"),  # folders below a slide belong to it
        ("b-slide", "b-slide/deeper/d.TIFF", "deeper/d.TIFF"),
        ("b-slide", "b-slide/z.JPG", "z.JPG"),
    ]
    assert all(not f.error and f.size == 1 and f.mtime_ns > 0 for f in found)
    assert all(os.path.isabs(f.path) for f in found)


def test_order_is_deterministic_and_inputs_keep_their_order(tmp_path: Path) -> None:
    for name in ("q", "c", "m"):
        _touch(tmp_path / "one" / "s" / f"{name}.jpg")
    _touch(tmp_path / "two" / "t" / "a.jpg")
    first = _listing([tmp_path / "two", tmp_path / "one"])
    assert first == _listing([tmp_path / "two", tmp_path / "one"])
    assert [image for _, image, _ in first] == ["t/a.jpg", "s/c.jpg", "s/m.jpg", "s/q.jpg"]


def test_single_file_input(tmp_path: Path) -> None:
    image = _touch(tmp_path / "patient-9" / "field.jpg")
    assert _listing([image]) == [("patient-9", "field.jpg", "")]


def test_missing_or_non_image_input_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(DiscoveryError, match="not found"):
        list(discover([tmp_path / "nope"]))
    with pytest.raises(DiscoveryError, match="neither a folder nor an image"):
        list(discover([_touch(tmp_path / "notes.txt")]))


def test_symlink_loop_is_one_problem_row_not_a_hang(tmp_path: Path) -> None:
    root = tmp_path / "slides"
    _touch(root / "s1" / "a.jpg")
    _touch(root / "s1" / "sub" / "b.jpg")
    os.symlink("..", root / "s1" / "sub" / "back-up")  # s1/sub/back-up -> s1: a loop
    os.symlink(root, root / "s1" / "to-input")  # leads to INPUT itself
    rows = _listing([root])
    images = [(s, i) for s, i, e in rows if not e]
    problems = [(s, i, e) for s, i, e in rows if e]
    assert images == [("s1", "s1/a.jpg"), ("s1", "s1/sub/b.jpg")]
    assert len(problems) == 2
    assert all(e.startswith("symlink loop") for _, _, e in problems)
    assert {i for _, i, _ in problems} == {"s1/sub/back-up/", "s1/to-input/"}


def test_dangling_symlink_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "slides"
    _touch(root / "s" / "ok.jpg")
    os.symlink(tmp_path / "gone.jpg", root / "s" / "gone.jpg")
    assert _listing([root]) == [
        ("s", "s/gone.jpg", "broken symlink: target does not exist"),
        ("s", "s/ok.jpg", ""),
    ]


def test_out_folder_inside_input_is_not_a_slide(tmp_path: Path) -> None:
    _touch(tmp_path / "s" / "a.jpg")
    _touch(tmp_path / "allscan-results" / "heatmaps" / "s" / "a.png")
    assert _listing([tmp_path], exclude=[tmp_path / "allscan-results"]) == [("s", "s/a.jpg", "")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any folder")
def test_unreadable_folder_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "slides"
    _touch(root / "s" / "ok.jpg")
    locked = root / "s" / "locked"
    _touch(locked / "hidden-from-us.jpg")
    locked.chmod(0)
    try:
        rows = _listing([root])
    finally:
        locked.chmod(0o755)
    assert rows[0][1] == "s/locked/" and rows[0][2].startswith("cannot list folder")
    assert rows[1] == ("s", "s/ok.jpg", "")


def test_same_slide_name_under_two_inputs_is_refused(tmp_path: Path) -> None:
    """Case 5: two patients' folders of one name under two INPUTs were merged into one slide."""
    _touch(tmp_path / "in1" / "patientA" / "a.jpg")
    _touch(tmp_path / "in2" / "patientA" / "a.jpg")
    _touch(tmp_path / "in2" / "patientB" / "b.jpg")
    with pytest.raises(DiscoveryError, match="slide name 'patientA' comes from two folders"):
        list(discover([tmp_path / "in1", tmp_path / "in2"]))
    _touch(tmp_path / "in1" / "loose.jpg")  # loose images of INPUT in1: a slide named in1 ...
    _touch(tmp_path / "in3" / "in1" / "x.jpg")  # ... against a slide folder named in1 under another INPUT
    with pytest.raises(DiscoveryError, match="slide name 'in1'"):
        list(discover([tmp_path / "in1", tmp_path / "in3"]))
    # One folder reached twice (the same INPUT twice, or one of its images named alone) is one slide.
    twice = [("in1", "loose.jpg", ""), ("patientA", "patientA/a.jpg", "")] * 2
    assert _listing([tmp_path / "in1", tmp_path / "in1"]) == twice
    assert len(_listing([tmp_path / "in1", tmp_path / "in1" / "patientA" / "a.jpg"])) == 3


def test_folders_holding_a_journal_are_never_input(tmp_path: Path) -> None:
    """Case 6: an earlier --out inside an INPUT (at any depth) was read back as slides."""
    root = tmp_path / "slides"
    _touch(root / "s" / "a.jpg")
    _touch(root / "old-results" / JOURNAL_NAME)
    _touch(root / "old-results" / "heatmaps" / "s" / "a.jpg.png")
    _touch(root / "s" / "nested-out" / JOURNAL_NAME)
    _touch(root / "s" / "nested-out" / "report" / "thumbs" / "t.jpg")
    assert _listing([root]) == [("s", "s/a.jpg", "")]
    with pytest.raises(DiscoveryError, match="is an allscan results folder"):
        list(discover([root / "old-results"]))
