"""Facts about the run for the page, read from run.json's record and the model card: nothing is guessed.

A run.json written before ``model.class_labels``, ``model.flags`` and ``input_roots`` existed still reads: the
labels and thresholds then come from the model card in the store (when it is the model that ran), the INPUTs
from ``args.inputs`` as seen from here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from allscan.io.records import RunFlags, RunRecord
from allscan.io.records.run import to_json
from allscan.models.card import ModelCard


def fmt(value: Any) -> str:
    """A value as short text: floats to 4 significant digits, lists joined, dicts as key=value."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={fmt(v)}" for k, v in value.items())
    return "" if value is None else str(value)


def flatten(data: Any, prefix: str = "", limit: int = 400) -> list[tuple[str, str]]:
    """Nested dicts as (dotted key, text) rows, for a table of everything in run.json or a card's metrics."""
    rows: list[tuple[str, str]] = []

    def walk(node: Any, key: str) -> None:
        if len(rows) >= limit:
            return
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, list) and node and any(isinstance(v, (dict, list)) for v in node):
            for i, v in enumerate(node):
                walk(v, f"{key}[{i}]")
        else:
            rows.append((key, fmt(node)))

    walk(data, prefix)
    return rows


def everything(run: RunRecord) -> list[tuple[str, str]]:
    """Every key of run.json, dotted, as text."""
    return flatten(to_json(run))


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {sec:02d} s"


def card_of(run: RunRecord | None) -> ModelCard | None:
    """The store's card of the model that ran (same id), for its metrics; None when it is not here."""
    if run is None:
        return None
    try:
        from allscan.models.store import load_model

        card = load_model(run.model.name, verify_hash=False).card
    except Exception:  # noqa: BLE001 - no store here, or a broken one: the page shows no metrics
        return None
    return card if card.model_id == run.model.id else None


def thresholds(run: RunRecord | None, card: ModelCard | None) -> RunFlags | None:
    """The flag thresholds the rows were made with: run.json's, else (an older run.json) the card's."""
    if run is not None and run.model.flags is not None:
        return run.model.flags
    return RunFlags(low_confidence=card.flags.low_confidence, ood=card.flags.ood) if card else None


def class_labels(run: RunRecord | None, card: ModelCard | None) -> dict[str, str]:
    """Human names of the classes: run.json's, else (an older run.json) the card's; {} shows the raw names."""
    if run is not None and run.model.class_labels:
        return dict(run.model.class_labels)
    return dict(card.class_labels) if card else {}


def _threshold_text(flags: RunFlags | None) -> str:
    if flags is None:
        return ""
    text = f"low confidence below {flags.low_confidence:.4g}"
    return text if flags.ood is None else f"{text}; unlike training data above {flags.ood:.4g}"


def latest_run(run: RunRecord) -> list[tuple[str, str]]:
    """A line for the latest run when it is not the one the facts describe (it found nothing new)."""
    if run.made_by() is run:
        return []
    return [("Latest run", f"{run.started}: nothing new to process; the facts above are of the run that made the rows")]


def facts(run: RunRecord, flags: RunFlags | None) -> list[tuple[str, str]]:
    """The headline facts of the run that made the published rows, in display order; empty ones are left out."""
    made = run.made_by()
    model = run.model
    rows = [
        ("Model", model.name),
        ("Model id", model.id),
        ("Architecture", model.architecture),
        ("Input mode", model.input_mode),
        ("Heatmap method", model.heatmap_method),
        *((f"sha256 of {k}", v) for k, v in model.files.items()),
        ("Flag thresholds", _threshold_text(flags)),
        ("Backend", made.backend),
        ("Why this backend", made.backend_reason),
        ("Precision", made.precision),
        ("Started", made.started),
        ("Finished", made.finished),
        ("Wall time", duration(made.wall_s)),
        ("Images per second", fmt(made.images_per_s)),
        ("allscan", made.versions.get("allscan", "")),
        ("Exit code", fmt(run.exit_code)),
        ("Warnings", fmt(run.warnings)),
    ]
    return [(k, v) for k, v in rows + latest_run(run) if v]


def versions(run: RunRecord) -> list[tuple[str, str]]:
    """Library versions of the run that made the rows (allscan's own is among the facts)."""
    return [(str(k), fmt(v)) for k, v in run.made_by().versions.items() if k != "allscan"]


def metrics(card: ModelCard | None) -> list[tuple[str, str]]:
    """The model card's metrics, when the store holds the card of the model that ran."""
    return flatten(dict(card.metrics), limit=80) if card and card.metrics else []


def input_roots(run: RunRecord | None) -> list[Path]:
    """The run's INPUT folders, to find the original images for thumbnails (absent ones are dropped)."""
    if run is None:
        return []
    given = run.input_roots or tuple(str(p) for p in run.args.get("inputs", ()))  # older run.json: as given
    roots = [Path(p).expanduser() for p in given]
    return [p.resolve() for p in roots if p.exists()]
