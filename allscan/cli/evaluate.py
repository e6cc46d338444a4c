"""``allscan evaluate``: measure a stored model through the inference path, with the shortcut audit.

scikit-learn and matplotlib are the ``evaluate`` extra (also in ``train``); :func:`allscan.extras.require` checks
both before the first image is read: a missing one used to end a whole evaluation in a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from allscan.cli.errors import reported
from allscan.cli.options import Backend, BackendOpt, BatchSize, ClassFolders, ModelName, Workers
from allscan.models.store import DEFAULT_MODEL

EVALUATE_MODULES = ("sklearn", "matplotlib")  # metrics, plots, the colour-only baseline


def evaluate_command(
    data_dir: ClassFolders,
    *,
    model: ModelName = DEFAULT_MODEL,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for metrics.json, confusion_matrix.png and roc.png.")
    ] = Path("allscan-eval"),
    split: Annotated[
        str | None, typer.Option("--split", help="Only this part of the model's split.json (e.g. test).")
    ] = None,
    foreign: Annotated[
        Path | None, typer.Option("--foreign", help="Unlabelled images of another lab (no leukemia).")
    ] = None,
    backend: BackendOpt = Backend.auto,
    batch_size: BatchSize = 16,
    workers: Workers = None,
    update_card: Annotated[
        bool, typer.Option("--update-card", help="Store the metrics in the model's card.json.")
    ] = False,
    audit: Annotated[
        bool, typer.Option("--audit/--no-audit", help="Shortcut audit: colour-only baseline and the stain-swap test.")
    ] = True,
    swap_seed: Annotated[int, typer.Option("--swap-seed", help="Seed of the swap test's donor choice.")] = 0,
    update_card_of: Annotated[
        str | None,
        typer.Option(
            "--update-card-of",
            help="Store the metrics in this model's card instead (same recipe, another split).",
        ),
    ] = None,
) -> None:
    """Measure a model through the inference path: metrics.json, confusion_matrix.png, roc.png."""
    from allscan.extras import require

    with reported("evaluate"):
        for module in EVALUATE_MODULES:
            require(module, "evaluate", "allscan evaluate")
    from allscan.evaluation.evaluate import EvaluateConfig, evaluate

    config = EvaluateConfig(
        data_dir, model, out, split, foreign, backend.value, batch_size, workers, audit=audit, swap_seed=swap_seed
    )
    with reported("evaluate", usage=(ValueError, FileNotFoundError)):
        metrics = evaluate(config, log=lambda line: None)
    for line in summary_lines(metrics):
        typer.echo(line)
    if update_card or update_card_of:
        from allscan.evaluation.card_metrics import store_metrics

        key = store_metrics(model, split or "all", metrics, into=update_card_of)
        where = f"{update_card_of}/card.json" if update_card_of else f"engines/{model}/card.json"
        typer.echo(f"metrics stored as {key} in {where}")
    typer.echo(f"wrote {out / 'metrics.json'}")


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """The printed summary: headline metrics, the shortcut audit, and the foreign lab's shares."""
    lines = [
        f"{metrics['n_images']} images: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
        f"flag rate {metrics['flag_rate']:.3f}, cell focus {metrics['cell_focus']}"
    ]
    lines += audit_lines(metrics)
    if "foreign" in metrics:
        f = metrics["foreign"]
        lines.append(
            f"foreign ({f['n_ok']} images): benign {f['share_benign']:.3f}, flagged {f['share_flagged']:.3f}, "
            f"benign or flagged {f['share_benign_or_flagged']:.3f}, "
            f"leukemia unflagged {f['share_leukemia_unflagged']:.3f}, "
            f"benign unflagged {f['share_benign_unflagged']:.3f}"
        )
    return lines


def audit_lines(metrics: dict) -> list[str]:
    """The shortcut audit as the printed summary shows it."""
    lines = []
    b = metrics.get("binary") or {}
    if b:
        lines.append(
            f"ALL vs. Benign: sensitivity {b['sensitivity']:.4f}, specificity {b['specificity']:.4f}, "
            f"AUC {b['roc_auc']}"
        )
    c = metrics.get("colour_baseline") or {}
    if "macro_f1" in c:
        lines.append(f"colour-only baseline: accuracy {c['accuracy']:.4f}, macro-F1 {c['macro_f1']:.4f}")
    elif c:
        lines.append(f"colour-only baseline skipped: {c.get('skipped')}")
    w = metrics.get("swap") or {}
    if "macro_f1" in w:
        lines.append(
            f"stain swap: accuracy {w['accuracy']:.4f}, macro-F1 {w['macro_f1']:.4f}, "
            f"swap gap {w['swap_gap']:+.4f}, flag rate {w['flag_rate']:.3f}"
        )
    elif w:
        lines.append(f"stain swap skipped: {w.get('skipped')}")
    return lines
