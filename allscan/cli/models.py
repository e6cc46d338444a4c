"""``allscan models``: the models in the store, their card metrics, and the TensorRT engines built for this machine.

Reads cards without hashing the ONNX files (a listing must be quick); a model whose card cannot be read is listed
with the one-line reason. TensorRT is never imported: engines are judged by their sidecars.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from allscan.models.store import ModelStoreError, StoredModel, list_models, load_model, store_root


def engines_cell(model: StoredModel, machine: Any) -> str:
    """The engines built for ``model``, one line each: usable here, or why not (judged by sidecars only)."""
    from allscan.runtime.sidecar import engine_statuses

    statuses = engine_statuses(model, machine)
    if not statuses:
        return "none built"
    lines = []
    for s in statuses:
        mark = "usable" if s.usable else "not usable"
        lines.append(f"{s.plan.name}: {mark} - {s.reason}" if not s.usable else f"{s.plan.name}: {mark}")
    return "\n".join(lines)


def _metric(metrics: dict[str, Any], *keys: str, field: str = "accuracy") -> str:
    """A card metric by the first of ``keys`` present; ``field`` may be a dotted path (``swap.swap_gap``)."""
    for key in keys:
        value: Any = metrics.get(key)
        for part in field.split("."):
            if not isinstance(value, dict):
                break
            value = value.get(part, value.get("acc") if part == "accuracy" else None)
        if isinstance(value, int | float):
            return f"{value:+.3f}" if field.endswith("gap") else f"{value:.3f}"
    return "-"


def models_cmd() -> None:
    """Models in the store, their card metrics, and the TensorRT engines built for this machine."""
    from allscan.runtime.tensorrt import machine_info

    console = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 200)  # logs: no wrap
    names = list_models()
    if not names:
        console.print(f"no models in {store_root()}")
        raise typer.Exit(0)
    machine = machine_info()
    table = Table(title=f"Models in {store_root()}")
    for column in (
        "model",
        "architecture",
        "input",
        "classes",
        "macro-F1 (blocked)",
        "macro-F1 (tail)",
        "swap gap",
        "ALL sensitivity",
        "engines",
    ):
        table.add_column(column)
    for name in names:
        try:
            stored = load_model(name, verify_hash=False)
        except ModelStoreError as exc:
            table.add_row(name, "-", "-", "-", "-", "-", "-", "-", str(exc))
            continue
        card = stored.card
        table.add_row(
            name,
            card.architecture,
            f"{card.input.size}px {card.input.mode} {card.input.colour}",
            ", ".join(card.classes),
            _metric(card.metrics, "blocked_test", "blocked", field="macro_f1"),
            _metric(card.metrics, "tail_test", field="macro_f1"),
            _metric(card.metrics, "blocked_test", "tail_test", field="swap.swap_gap"),
            _metric(card.metrics, "blocked_test", "tail_test", field="binary.sensitivity"),
            engines_cell(stored, machine),
        )
    console.print(table)
    raise typer.Exit(0)
