"""Putting the report together: read the tables, make the missing thumbnails, render and write the page."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

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
    """Thumbnail jobs for every image's original (found under one of the run's INPUTs) and for its heatmap."""
    folder = data.out_dir / THUMB_DIR
    index: dict[Owner, Thumb] = {}
    jobs: list[tuple[Owner, int, ThumbJob]] = []
    for im in data.images:
        owner = (im.slide, im.image)
        key = thumbs.thumb_key(im.slide, im.image)
        hint = (im.width, im.height) if im.width and im.height else None
        root, src = -1, None
        for i, r in enumerate(roots):
            cand = source_of(r, im.image)
            if cand is not None and cand.is_file():
                root, src = i, cand
                break
        dest = folder / f"{key}{IMAGE_SUFFIX}"
        if src is not None:
            jobs.append((owner, 1, ThumbJob(src, dest, hint)))
        # Originals moved away (or a relative INPUT seen from another folder): keep the thumbnail made earlier.
        index[owner] = Thumb(key, 1 if src is None and dest.is_file() else 0, root)
        if im.heatmap:
            jobs.append((owner, 2, ThumbJob(data.out_dir / im.heatmap, folder / f"{key}{HEAT_SUFFIX}", hint)))
    return index, jobs


def build(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    data = page_data.load(out_dir)
    roots = runinfo.input_roots(data.run, out_dir)
    index, jobs = thumb_jobs(data, roots)
    made = thumbs.ensure_thumbs(job for _, _, job in jobs)
    for owner, bit, job in jobs:
        if job.dest in made:
            index[owner] = replace(index[owner], bits=index[owner].bits | bit)
    page = render.render(data, index, [r.as_uri() + ("/" if r.is_dir() else "") for r in roots])
    path = out_dir / "report.html"
    tmp = path.with_name(f".report.html.{os.getpid()}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
