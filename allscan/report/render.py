"""The page itself: one self-contained HTML string, with every file-derived text escaped.

The summary, slide table and review queue are plain HTML (readable without JavaScript and by screen readers);
the per-image lists of the slides are drawn by a little vanilla JS from a compact inline JSON, which keeps a
10,000-image page small and quick to open.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from importlib.resources import files
from typing import Any
from urllib.parse import quote

from allscan import __version__
from allscan.report import runinfo
from allscan.report.data import FLAG_LABELS, ImageRow, ReportData, SlideRow
from allscan.report.thumbs import HEAT_SUFFIX, IMAGE_SUFFIX, THUMB_DIR

# Okabe-Ito: distinguishable with the common colour-vision deficiencies; text always says the class as well.
# The review queue's first rows are plain HTML; the script draws any further ones on request (page size).
REVIEW_HTML_LIMIT = 500
PALETTE = ("#0072B2", "#E69F00", "#CC79A7", "#D55E00", "#009E73", "#56B4E9", "#F0E442", "#000000")
CLASS_COLOURS = {"Benign": "#0072B2", "Early": "#E69F00", "Pre": "#CC79A7", "Pro": "#D55E00"}
ATTRIBUTION = (
    "Models shipped with allscan were trained on the Acute Lymphoblastic Leukemia (ALL) image dataset: "
    "Aria M, Ghaderzadeh M, Bashash D, Abolghasemi H, Asadi F, Hosseini A (2021), Kaggle, "
)
DOI = "10.34740/KAGGLE/DSV/2175623"
CAUTION = (
    "Its labels are not a diagnosis and must not be used on their own for any clinical decision; flagged "
    "images are labelled but should not be trusted. B-ALL subtypes are defined by immunophenotype: a subtype "
    "called from images is a research signal."
)
DISCLAIMER = f"allscan is a research tool, not a diagnostic device. {CAUTION}"


@dataclass(frozen=True)
class Thumb:
    """An image's thumbnails: file-name stem, which exist (bit 1 image, 2 heatmap), and its INPUT's index."""

    key: str
    bits: int = 0
    root: int = -1


def esc(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def href(path: str) -> str:
    """A relative path from a table as an escaped URL (a '#' or '?' in a file name stays part of the name)."""
    return esc(quote(path, safe="/"))


def class_colours(classes: tuple[str, ...]) -> list[str]:
    spare = [c for c in PALETTE if c not in CLASS_COLOURS.values()] + list(PALETTE)
    out = []
    for cls in classes:
        out.append(CLASS_COLOURS.get(cls) or spare.pop(0))
    return out


def _asset(name: str) -> str:
    return files("allscan.report").joinpath(name).read_text(encoding="utf-8")


def _conf(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _prob_bar(probs: tuple[float | None, ...], data: ReportData, colours: list[str]) -> str:
    """A stacked bar of per-class probabilities; its text alternative lists the numbers."""
    parts, words = [], []
    for cls, p, colour in zip(data.classes, probs, colours, strict=False):
        if p is None:
            continue
        words.append(f"{data.human(cls)} {p:.2f}")
        if p >= 0.005:
            parts.append(f'<i style="width:{p * 100:.1f}%;background:{colour}"></i>')
    if not words:
        return ""
    label = esc("; ".join(words))
    return f'<span class="bar" role="img" aria-label="{label}" title="{label}">{"".join(parts)}</span>'


def _flag_text(flags: tuple[str, ...]) -> str:
    return ", ".join(FLAG_LABELS.get(f, f) for f in flags)


def _flag_bits(reasons: tuple[str, ...], data: ReportData) -> int:
    bits = 0
    for flag in reasons:
        if flag == "error":
            bits |= 1 << len(data.flag_names)
        elif flag in data.flag_names:
            bits |= 1 << data.flag_names.index(flag)
    return bits


def _label_index(image: ImageRow, data: ReportData) -> int:
    return data.classes.index(image.label) if image.ok and image.label in data.classes else -1


def summary_section(data: ReportData) -> str:
    run = data.run
    facts = runinfo.facts(run, runinfo.thresholds(run, data.card)) if run else []
    facts += [
        ("Images", f"{data.n_images:,} in {len(data.slides):,} slides"),
        ("Judged", f"{data.n_ok:,}"),
        ("Errors", f"{data.n_error:,}"),
        ("Flagged", f"{data.n_flagged:,} (labelled, but to be reviewed)"),
    ]
    dl = "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in facts)
    extra = []
    metrics = runinfo.metrics(data.card)
    if metrics:
        rows = "".join(f"<tr><th scope=row>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in metrics)
        extra.append(f"<details><summary>Model card metrics</summary><table class=kv>{rows}</table></details>")
    versions = runinfo.versions(run) if run else []
    if versions:
        rows = "".join(f"<tr><th scope=row>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in versions)
        extra.append(f"<details><summary>Versions</summary><table class=kv>{rows}</table></details>")
    errors = [im for s in data.slides for im in s.images if not im.ok]
    if errors:
        shown = errors[:200]
        rows = "".join(
            f"<tr><td>{esc(im.slide)}</td><td>{esc(im.image)}</td><td>{esc(im.error)}</td></tr>" for im in shown
        )
        more = f"<p>{len(errors) - len(shown):,} more in images.csv.</p>" if len(errors) > len(shown) else ""
        extra.append(
            f"<details><summary>Errors ({len(errors):,})</summary><table><thead><tr><th scope=col>Slide</th>"
            "<th scope=col>Image</th><th "
            f"scope=col>Reason</th></tr></thead><tbody>{rows}</tbody></table>{more}"
            "</details>"
        )
    if run:
        rows = "".join(f"<tr><th scope=row>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in runinfo.everything(run))
        extra.append(f"<details><summary>Everything in run.json</summary><table class=kv>{rows}</table></details>")
    else:
        extra.append("<p>No run.json was found; the facts above come from the tables alone.</p>")
    return (
        '<section id="run" aria-labelledby="run-h"><h2 id="run-h">The run</h2><div class="cols">'
        f'<dl class="facts">{dl}</dl><figure>{distribution_svg(data)}<figcaption>Images per predicted class '
        "(solid: unflagged; pale: flagged)</figcaption></figure></div>"
        f"{''.join(extra)}</section>"
    )


def distribution_svg(data: ReportData) -> str:
    """Horizontal bars: how many images each class got, unflagged solid and flagged pale."""
    colours = class_colours(data.classes)
    counts = data.label_counts()
    rows = [(data.human(c), *counts[c], colour) for c, colour in zip(data.classes, colours, strict=True)]
    if data.n_error:
        rows.append(("Error (not judged)", data.n_error, 0, "#595959"))
    biggest = max([a + b for _, a, b, _ in rows] + [1])
    label_w, bar_w, row_h = 150, 170, 22
    width, height = label_w + bar_w + 160, row_h * len(rows) + 4
    parts, words = [], []
    for i, (name, solid, pale, colour) in enumerate(rows):
        y = 2 + i * row_h
        w1, w2 = bar_w * solid / biggest, bar_w * pale / biggest
        text = f"{solid:,} + {pale:,} flagged" if solid and pale else f"{pale:,} flagged" if pale else f"{solid:,}"
        words.append(f"{name}: {text}")
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{esc(name)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{w1:.1f}" height="15" fill="{colour}"/>'
            f'<rect x="{label_w + w1:.1f}" y="{y + 3}" width="{w2:.1f}" height="15" fill="{colour}" '
            f'fill-opacity=".35" stroke="{colour}"/>'
            f'<text x="{label_w + w1 + w2 + 5:.1f}" y="{y + 15}">{esc(text)}</text>'
        )
    label = esc("Images per predicted class. " + "; ".join(words))
    return (
        f'<svg class="dist" role="img" aria-label="{label}" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg"><title>{label}</title>{"".join(parts)}</svg>'
    )


def slide_table(data: ReportData) -> str:
    colours = class_colours(data.classes)
    heads = "".join(f'<th scope=col><abbr title="{esc(data.human(c))}">{esc(c)}</abbr></th>' for c in data.classes)
    n_cols = 6 + len(data.classes)
    bodies = [_slide_body(i, s, data, colours, n_cols) for i, s in enumerate(data.slides)]
    return (
        '<section id="slides" aria-labelledby="slides-h"><h2 id="slides-h">Slides, strongest evidence of '
        "leukemia first</h2><p class=hint>Open a slide to see its evidence and its images. Counts are of "
        "judged images; the bar is the mean probability of each class.</p>"
        '<div class="scroll"><table class="slides"><thead><tr>'
        "<th scope=col>Slide</th><th scope=col>Label</th>"
        f"<th scope=col>Images</th><th scope=col>Errors</th>{heads}<th scope=col>Mean probability</th>"
        f"<th scope=col>Flagged</th></tr></thead>{''.join(bodies)}</table></div>"
        '<p class="empty" id="slides-empty" hidden>'
        "No slide has an image that matches the filters.</p></section>"
    )


def _slide_body(i: int, s: SlideRow, data: ReportData, colours: list[str], n_cols: int) -> str:
    counts = "".join(f"<td class=num>{s.counts.get(c, 0):,}</td>" for c in data.classes)
    means = tuple(s.mean_probs.get(c) for c in data.classes)
    flags = ", ".join(f"{FLAG_LABELS.get(f, f)} {n}" for f, n in sorted(s.flag_counts.items()))
    label = esc(data.human(s.label)) if s.label else '<span class="muted">none</span>'
    if s.all_suspected == "yes":  # leukemia or not first, then the subtype (a research signal)
        label = f"<strong>ALL suspected</strong><br><span class=muted>subtype:</span> {label}"
    elif s.all_suspected == "no":
        label = f"ALL not suspected<br>{label}"
    evidence = f"<p>{esc(s.evidence)}</p>" if s.evidence else ""
    return (
        f'<tbody class="slide" data-s="{i}"><tr><td><details id="s{i}"><summary>{esc(s.name)}</summary>'
        f'{evidence}<p class="nojs">{s.n_images:,} images; the per-image list needs JavaScript '
        f"(or see images.csv).</p></details></td><td>{label}</td><td class=num>{s.n_images:,}</td>"
        f"<td class=num>{s.n_error:,}</td>{counts}<td>{_prob_bar(means, data, colours)}</td>"
        f'<td class=num title="{esc(flags)}">{s.n_flagged:,}</td></tr>'
        f'<tr class="imgs" hidden><td colspan="{n_cols}"></td></tr></tbody>'
    )


def _thumb_img(thumb: Thumb | None, bit: int, suffix: str, alt: str) -> str:
    if thumb is None or not thumb.bits & bit:
        return '<span class="nothumb" aria-hidden="true"></span>'
    return (
        f'<img src="{THUMB_DIR}/{thumb.key}{suffix}" alt="{esc(alt)}" loading="lazy" decoding="async" '
        'width="48" height="48">'
    )


def review_table(data: ReportData, thumbs: dict[tuple[str, str], Thumb]) -> str:
    slide_index = {s.name: i for i, s in enumerate(data.slides)}
    rows = []
    for im in data.review[:REVIEW_HTML_LIMIT]:
        thumb = thumbs.get((im.slide, im.image))
        name = esc(im.image)
        link = f'<a href="{href(im.heatmap)}">{name}</a>' if im.heatmap else name
        label = esc(data.human(im.label)) if im.ok else '<span class="muted">not judged</span>'
        reasons = esc(_flag_text(im.review_reasons))
        if not im.ok and im.error:
            reasons += f": {esc(im.error)}"
        rows.append(
            f'<tr data-s="{slide_index[im.slide]}" data-l="{_label_index(im, data)}" '
            f'data-f="{_flag_bits(im.review_reasons, data)}">'
            f"<td>{_thumb_img(thumb, 1, IMAGE_SUFFIX, '')}</td><td>{esc(im.slide)}</td><td>{link}</td>"
            f"<td>{label}</td><td class=num>{_conf(im.confidence)}</td><td>{reasons}</td></tr>"
        )
    body = "".join(rows) or '<tr><td colspan="6">Nothing to review: no image was flagged or failed.</td></tr>'
    rest = len(data.review) - REVIEW_HTML_LIMIT
    more = (
        f'<p class="nojs">{rest:,} more images to review are listed in images.csv (column flags).</p>'
        f'<button type="button" class="more" id="review-more" hidden>Show the other {rest:,}</button>'
        if rest > 0
        else ""
    )
    return (
        '<section id="review" aria-labelledby="review-h"><h2 id="review-h">Review queue '
        f"({len(data.review):,})</h2><p class=hint>Images the tool flagged (no white cell, unlike its "
        "training data, low confidence) or could not read. Their labels are written, but should not be "
        "trusted. The image name links to its heatmap.</p>"
        '<div class="scroll"><table class="review"><thead><tr>'
        "<th scope=col><span class=sr>Thumbnail</span></th><th scope=col>Slide</th><th scope=col>Image</th>"
        "<th scope=col>Label</th><th scope=col>Confidence</th><th scope=col>Why</th></tr></thead>"
        f'<tbody>{body}</tbody></table></div>{more}<p class="empty" id="review-empty" hidden>No image in the '
        "review queue matches the filters.</p></section>"
    )


def filters(data: ReportData) -> str:
    """The filter bar; hidden until the script runs, since it needs the script."""
    classes = "".join(f'<option value="{i}">{esc(data.human(c))}</option>' for i, c in enumerate(data.classes))
    flags = "".join(
        f'<option value="f{i}">{esc(FLAG_LABELS.get(f, f))}</option>' for i, f in enumerate(data.flag_names)
    )
    return (
        '<form id="filters" class="filters" hidden aria-label="Filters" onsubmit="return false">'
        '<label>Class <select id="f-class"><option value="">all</option>'
        f'{classes}<option value="-1">not judged (error)</option></select></label>'
        '<label>Flag <select id="f-flag"><option value="">any</option><option value="any">flagged or error'
        f'</option><option value="none">not flagged</option>{flags}<option '
        'value="err">error</option></select></label>'
        '<label>Slide <input id="f-slide" type="search" placeholder="name contains" '
        'autocomplete="off"></label>'
        '<button type="reset" id="f-reset">Clear</button>'
        '<output id="f-status" aria-live="polite"></output></form>'
    )


def page_json(data: ReportData, thumbs: dict[tuple[str, str], Thumb], roots: list[str]) -> str:
    """The compact per-image data the script draws the image lists from: one short array per image."""
    images: list[list[Any]] = []
    position: dict[int, int] = {}
    for si, s in enumerate(data.slides):
        for im in s.images:
            position[id(im)] = len(images)
            t = thumbs.get((im.slide, im.image)) or Thumb("")
            probs = [None if p is None else round(p * 100) for p in im.probs]
            images.append(
                [
                    si,
                    im.image,
                    _label_index(im, data),
                    None if im.confidence is None else round(im.confidence, 3),
                    probs,
                    im.n_cells,
                    im.heatmap,
                    _flag_bits(im.review_reasons, data),
                    t.key,
                    t.bits,
                    t.root,
                    im.error,
                ]
            )
    payload = {
        "classes": list(data.classes),
        "labels": [data.human(c) for c in data.classes],
        "colours": class_colours(data.classes),
        "flags": [FLAG_LABELS.get(f, f) for f in data.flag_names] + ["error"],
        "slides": [s.name for s in data.slides],
        "roots": roots,
        "thumbs": THUMB_DIR,
        "suffix": [IMAGE_SUFFIX, HEAT_SUFFIX],
        "images": images,
        "review": [position[id(im)] for im in data.review[REVIEW_HTML_LIMIT:]],
    }
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    # Inside <script>, only '<' can end the element; escape it (and the characters JS treats as line ends).
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def render(data: ReportData, thumbs: dict[tuple[str, str], Thumb], roots: list[str]) -> str:
    """The whole page."""
    title = f"allscan report: {data.out_dir.resolve().name}"
    built = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    js = _asset("report.js").replace("</", "<\\/")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="color-scheme" content="light">'
        f"<title>{esc(title)}</title><style>{_asset('report.css')}</style></head><body>"
        '<a class="skip" href="#slides">Skip to the slides</a>'
        f'<header><h1>{esc(title)}</h1><p class="disclaimer" role="note"><strong>Research tool, not a '
        f"diagnostic device.</strong> {esc(CAUTION)}</p><nav aria-label=Sections><a href=#run>Run</a> "
        "<a href=#slides>Slides</a> <a href=#review>Review queue</a> <a href=#about>About</a></nav>"
        "<noscript><p>JavaScript is off: the tables below are complete, but the per-image lists and the "
        "filters need it.</p></noscript></header>"
        f"<main>{summary_section(data)}{filters(data)}{slide_table(data)}{review_table(data, thumbs)}</main>"
        f'<footer id="about"><h2>About this report</h2><p>{esc(DISCLAIMER)}</p>'
        f'<p>{esc(ATTRIBUTION)}DOI <a href="https://doi.org/{DOI}">{DOI}</a>. Images prepared in the '
        "bone marrow laboratory of Taleqani Hospital, Tehran. Credit the authors wherever these models are "
        "used.</p>"
        f"<p>Built {esc(built)} by allscan {esc(__version__)} from images.csv, slides.csv and run.json in "
        "this folder; rebuild it with <code>allscan report OUT_DIR</code>. Thumbnails are in "
        "report/thumbs/.</p>"
        f'</footer><script type="application/json" id="data">{page_json(data, thumbs, roots)}</script>'
        f"<script>{js}</script></body></html>"
    )
