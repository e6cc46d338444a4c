"""Putting the report together: read the tables, make the missing thumbnails, render and write the page."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from allscan.io.atomic import write_text_atomic
from allscan.io.names import unescape_name
from allscan.report import data as page_data
from allscan.report import render, runinfo, thumbs
from allscan.report.data import ReportData
from allscan.report.render import Thumb
from allscan.report.thumbs import HEAT_SUFFIX, IMAGE_SUFFIX, THUMB_DIR, ThumbJob

Owner = tuple[str, str]  # (slide, image)


def source_of(root: Path, image: str) -> Path | None:
    """The original of `image` (a path relative to INPUT `root`, as images.csv renders it); an INPUT that is a file
    is its own image."""
    name = unescape_name(image)
    if root.is_file():
        return root if root.name == Path(name).name else None
    return root / name


def thumb_jobs(data: ReportData, roots: list[Path]) -> tuple[dict[Owner, Thumb], list[tuple[Owner, int, ThumbJob]]]:
    """Thumbnail jobs for the rows the page shows with pictures: the original of each image in the review queue
    that the pipeline judged (an ``error`` row may be a decompression bomb or a file that crashes a decoder: the
    report never decodes it), and each heatmap the run drew. Other images get none: with ``--heatmaps none`` a
    night of 20,000 images would otherwise write 20,000 thumbnails nobody sees."""
    folder = data.out_dir / THUMB_DIR
    shown = {id(im) for im in data.review if im.ok}
    index: dict[Owner, Thumb] = {}
    jobs: list[tuple[Owner, int, ThumbJob]] = []
    for im in data.images:
        owner = (im.slide, im.image)
        key = thumbs.thumb_key(im.slide, im.image)
        hint = (im.width, im.height) if im.width and im.height else None
        root, src = _original(im.image, roots)
        dest = folder / f"{key}{IMAGE_SUFFIX}"
        wanted = id(im) in shown
        if src is not None and wanted:
            jobs.append((owner, 1, ThumbJob(src, dest, hint)))
        # Originals moved away (or a relative INPUT seen from another folder): keep the thumbnail made earlier.
        index[owner] = Thumb(key, 1 if wanted and src is None and dest.is_file() else 0, root)
        if im.heatmap:
            jobs.append((owner, 2, ThumbJob(data.out_dir / im.heatmap, folder / f"{key}{HEAT_SUFFIX}", hint)))
    return index, jobs


def _original(image: str, roots: list[Path]) -> tuple[int, Path | None]:
    """(index of the INPUT holding the original of ``image``, its path), or (-1, None) when none has it."""
    for i, r in enumerate(roots):
        cand = source_of(r, image)
        if cand is not None and cand.is_file():
            return i, cand
    return -1, None


def build(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    data = page_data.load(out_dir)
    roots = runinfo.input_roots(data.run)
    index, jobs = thumb_jobs(data, roots)
    made = thumbs.ensure_thumbs(job for _, _, job in jobs)
    for owner, bit, job in jobs:
        if job.dest in made:
            index[owner] = replace(index[owner], bits=index[owner].bits | bit)
    page = render.render(data, index, [r.as_uri() + ("/" if r.is_dir() else "") for r in roots])
    path = out_dir / "report.html"
    write_text_atomic(path, page)
    return path
