"""Facts about the run, picked defensively out of run.json (any key may be missing, or renamed later)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

_MISSING = object()


def pick(data: Any, *paths: str) -> Any:
    """First value found at one of the dotted `paths` ("model.name"), or None."""
    for path in paths:
        node = data
        for part in path.split("."):
            node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
            if node is _MISSING:
                break
        if node is not _MISSING and node not in (None, "", {}, []):
            return node
    return None


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


def duration(seconds: Any) -> str:
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return fmt(seconds)
    if s < 60:
        return f"{s:.1f} s"
    minutes, sec = divmod(round(s), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {sec:02d} s"


def producing_run(run: dict[str, Any]) -> dict[str, Any]:
    """The run whose backend, speed and versions describe the published rows: run.json's ``produced_by`` when
    the latest run processed nothing (a no-op rerun says backend 'none', 0 images/s), else the run itself."""
    made = run.get("produced_by")
    if isinstance(made, list):
        made = made[-1] if made else None
    if not isinstance(made, dict) or pick(run, "counts.processed") not in (0, None):
        return run
    return {**run, **{k: v for k, v in made.items() if k != "model"}}


def latest_run(run: dict[str, Any]) -> list[tuple[str, str]]:
    """A line for the latest run when it is not the one the facts describe (it found nothing new)."""
    if producing_run(run) is run:
        return []
    when = fmt(pick(run, "started"))
    return [("Latest run", f"{when}: nothing new to process; the facts above are of the run that made the rows")]


def facts(run: dict[str, Any]) -> list[tuple[str, str]]:
    """The headline facts of the run that made the published rows, in display order; absent ones are left out."""
    latest = latest_run(run)
    run = producing_run(run)
    model = run.get("model") if isinstance(run.get("model"), dict) else {}
    backend = run.get("backend")
    backend_text = fmt(pick(backend, "name", "kind", "provider") or backend) if backend else ""
    providers = pick(backend, "providers") if isinstance(backend, dict) else None
    if providers:
        backend_text = f"{backend_text} ({fmt(providers)})"
    rows = [
        (
            "Model",
            fmt(pick(model, "name") or (run.get("model") if isinstance(run.get("model"), str) else None)),
        ),
        ("Model id", fmt(pick(model, "id", "model_id") or pick(run, "model_id"))),
        ("Architecture", fmt(pick(model, "architecture", "arch"))),
        ("Input mode", fmt(pick(model, "input.mode", "input_mode", "card.input.mode"))),
        ("Heatmap method", fmt(pick(model, "heatmap_method", "card.heatmap_method"))),
        ("ONNX sha256", fmt(pick(model, "onnx_sha256", "sha256", "hashes.onnx"))),
        ("Backend", backend_text),
        ("Why this backend", fmt(pick(run, "backend_reason"))),
        ("Precision", fmt(pick(run, "precision", "backend.precision"))),
        ("Device", fmt(pick(run, "device", "backend.device", "gpu", "backend.gpu"))),
        ("Started", fmt(pick(run, "started", "started_at", "start_time", "timings.started"))),
        ("Finished", fmt(pick(run, "finished", "finished_at", "end_time", "timings.finished"))),
        (
            "Wall time",
            duration(pick(run, "duration_s", "elapsed_s", "wall_s", "timings.total_s", "timings.wall_s"))
            if pick(run, "duration_s", "elapsed_s", "wall_s", "timings.total_s", "timings.wall_s") is not None
            else "",
        ),
        (
            "Images per second",
            fmt(pick(run, "images_per_s", "images_per_second", "throughput", "timings.images_per_s")),
        ),
        ("allscan", fmt(pick(run, "versions.allscan", "version", "allscan_version"))),
        ("Exit code", fmt(run.get("exit_code"))),
        ("Warnings", fmt(pick(run, "warnings"))),
    ]
    files = pick(model, "files")
    if isinstance(files, dict):
        rows[6:6] = [(f"sha256 of {k}", fmt(v)) for k, v in files.items()]
    return [(k, v) for k, v in rows + latest if v]


def versions(run: dict[str, Any]) -> list[tuple[str, str]]:
    """Library versions of the run that made the rows (allscan's own is among the facts)."""
    data = producing_run(run).get("versions")
    return [(str(k), fmt(v)) for k, v in data.items() if k != "allscan"] if isinstance(data, dict) else []


def metrics(run: dict[str, Any]) -> list[tuple[str, str]]:
    """The model card's metrics: from run.json, else from the store's card if it is the model that ran."""
    data = pick(run, "model.metrics", "model.card.metrics", "metrics", "card.metrics")
    if not isinstance(data, dict):
        data = _store_metrics(pick(run, "model.name"), pick(run, "model.id", "model_id"))
    return flatten(data, limit=80) if isinstance(data, dict) else []


def _store_metrics(name: Any, model_id: Any) -> dict[str, Any] | None:
    if not isinstance(name, str) or not name:
        return None
    try:
        from allscan.models.store import load_model

        card = load_model(name, verify_hash=False).card
    except Exception:  # noqa: BLE001 - no store here, or another model by that name: show no metrics
        return None
    return dict(card.metrics) if card.model_id == model_id and card.metrics else None


def input_roots(run: dict[str, Any], out_dir: Path) -> list[Path]:
    """The run's INPUT paths, to find the original images for thumbnails (absent ones are dropped)."""
    found = pick(run, "args.inputs", "args.input", "args.INPUT", "inputs", "input")
    items = found if isinstance(found, list) else [found] if isinstance(found, str) else []
    base = pick(run, "cwd", "args.cwd")
    roots: list[Path] = []
    for item in items:
        path = Path(str(item)).expanduser()
        cands = [path] if path.is_absolute() else [Path(str(base)) / path] if base else []
        for cand in [*cands, Path.cwd() / path]:
            if cand.exists():
                roots.append(cand.resolve())
                break
    return roots
