"""``allscan train`` and ``allscan evaluate``: the data scientist's commands (torch and scikit-learn, lazily)."""

from __future__ import annotations

from pathlib import Path

import typer

from allscan.cli import app


@app.command("train")
def train_command(
    data_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="Folder of class folders."),
    arch: str = typer.Option(
        ...,
        "--arch",
        help="vit, vit_hybrid, vit_ti_16, vit_b_16, resnet18, resnet50, vgg16, efficientnet_b0, alexnet, googlenet,"
        " cnn",
    ),
    name: str = typer.Option(..., "--name", help="Model name in the store (engines/NAME)."),
    split: str = typer.Option(
        "blocked",
        "--split",
        help="blocked (held-out ranges of image numbers), tail (the highest-numbered 12 %% of each class) or random.",
    ),
    seed: int = typer.Option(0, "--seed"),
    size: int = typer.Option(224, "--size", help="Input side in pixels."),
    mode: str = typer.Option("full", "--mode", help="Input mode: full, masked or cells."),
    colour: str = typer.Option(
        "lightness", "--colour", help="Model input colour: lightness (stain-free, per-image z-scored LAB L) or rgb."
    ),
    swap_prob: float = typer.Option(
        0.8, "--swap-prob", help="Colour-free input: share of training views recoloured with a random donor's stain."
    ),
    teacher: str | None = typer.Option(None, "--teacher", help="Distil from this stored model's soft logits."),
    distill_alpha: float = typer.Option(0.5, "--distill-alpha", help="Weight of the distillation loss (0-1)."),
    stem_from: str | None = typer.Option(
        None, "--stem-from", help="vit_hybrid: start the CNN stem from this stored resnet18's checkpoint."
    ),
    focus_weight: float = typer.Option(
        0.0,
        "--focus-weight",
        help="Evidence penalty: weight of the true class's heatmap share outside the segmented cells (0 = off).",
    ),
    init_from: str | None = typer.Option(
        None, "--init-from", help="Start from this stored model's checkpoint (or a .pt file): a fine-tune."
    ),
    epochs: int = typer.Option(30, "--epochs"),
    minutes: float | None = typer.Option(None, "--minutes", help="Wall-clock budget (overrides --epochs)."),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr"),
    stain_jitter: float = typer.Option(1.0, "--stain-jitter", help="Colour/stain augmentation strength (0 = off)."),
    pretrained: bool = typer.Option(False, "--pretrained", help="Start from torchvision's ImageNet weights."),
    resume: bool = typer.Option(False, "--resume", help="Continue from engines/NAME/checkpoints/last.pt."),
    threads: int | None = typer.Option(None, "--threads"),
    bf16: bool = typer.Option(True, "--bf16/--no-bf16", help="bfloat16 autocast for training (CPU or GPU)."),
    vit_dim: int = typer.Option(192, "--vit-dim"),
    vit_depth: int = typer.Option(12, "--vit-depth"),
    vit_heads: int = typer.Option(3, "--vit-heads"),
    vit_patch: int = typer.Option(16, "--vit-patch"),
    conv_stem: bool = typer.Option(False, "--conv-stem", help="ViT: convolutional stem instead of patchify."),
    limit_per_class: int | None = typer.Option(None, "--limit-per-class", help="Use only N images per class."),
    out_root: Path | None = typer.Option(None, "--store", help="Model store (default: engines/)."),
) -> None:
    """Train a model on class folders, calibrate it, and export model.onnx + card.json into the store."""
    try:
        from allscan.models.store import store_root
        from allscan.train.loop import TrainConfig
        from allscan.train.pipeline import colour_input, train_model
    except ImportError as exc:
        typer.echo(f"error: training needs the 'train' extra (pip install 'allscan[train]'): {exc}", err=True)
        raise typer.Exit(2) from exc
    from allscan.models.store import ModelStoreError

    if pretrained:
        typer.echo("note: --pretrained downloads torchvision weights; this fails on a machine without internet")
    arch_options = {}
    if arch in ("vit", "vit_hybrid"):
        arch_options = {
            "vit_dim": vit_dim,
            "vit_depth": vit_depth,
            "vit_heads": vit_heads,
            "vit_patch": vit_patch,
        }
        if arch == "vit_hybrid":
            arch_options.pop("vit_patch")
    if arch.startswith("vit") and arch != "vit_hybrid":
        arch_options["conv_stem"] = conv_stem
    config = TrainConfig(
        data_dir=data_dir,
        arch=arch,
        name=name,
        out_root=out_root or store_root(),
        split=split,
        seed=seed,
        epochs=epochs,
        minutes=minutes,
        batch_size=batch_size,
        lr=lr,
        stain_jitter=stain_jitter,
        pretrained=pretrained,
        resume=resume,
        threads=threads,
        input=colour_input(size, mode, colour),
        swap_prob=swap_prob,
        bf16=bf16,
        teacher=teacher,
        distill_alpha=distill_alpha,
        stem_from=stem_from,
        focus_weight=focus_weight,
        init_from=init_from,
        arch_options=arch_options,
        limit_per_class=limit_per_class,
    )
    try:
        folder = train_model(config, log=lambda line: typer.echo(line))
    except (ValueError, FileNotFoundError, ModelStoreError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except OSError as exc:
        if pretrained:
            typer.echo(f"error: cannot fetch pretrained weights (offline?): {exc}", err=True)
            raise typer.Exit(2) from exc
        raise
    typer.echo(f"model written to {folder}")


@app.command("evaluate")
def evaluate_command(
    data_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="Folder of class folders."),
    model: str = typer.Option("vit", "--model", "-m"),
    out: Path = typer.Option(Path("allscan-eval"), "--out", "-o"),
    split: str | None = typer.Option(None, "--split", help="Only this part of the model's split.json (e.g. test)."),
    foreign: Path | None = typer.Option(None, "--foreign", help="Unlabelled images of another lab (no leukemia)."),
    backend: str = typer.Option("auto", "--backend"),
    batch_size: int = typer.Option(16, "--batch-size"),
    workers: int | None = typer.Option(None, "--workers"),
    update_card: bool = typer.Option(False, "--update-card", help="Store the metrics in the model's card.json."),
    audit: bool = typer.Option(
        True, "--audit/--no-audit", help="Shortcut audit: colour-only baseline and the stain-swap test."
    ),
    swap_seed: int = typer.Option(0, "--swap-seed", help="Seed of the swap test's donor choice."),
    update_card_of: str | None = typer.Option(
        None, "--update-card-of", help="Store the metrics in this model's card instead (same recipe, another split)."
    ),
) -> None:
    """Measure a model through the inference path: metrics.json, confusion_matrix.png, roc.png."""
    try:
        from allscan.evaluation.evaluate import EvaluateConfig, evaluate
    except ImportError as exc:  # pragma: no cover - depends on the install
        typer.echo(f"error: evaluate needs scikit-learn and matplotlib (pip install 'allscan[evaluate]'): {exc}")
        raise typer.Exit(2) from exc
    from allscan.models.store import ModelStoreError
    from allscan.pipeline.run import RunError

    config = EvaluateConfig(
        data_dir, model, out, split, foreign, backend, batch_size, workers, audit=audit, swap_seed=swap_seed
    )
    try:
        metrics = evaluate(config, log=lambda line: None)
    except (ModelStoreError, RunError, ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    line = (
        f"{metrics['n_images']} images: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
        f"flag rate {metrics['flag_rate']:.3f}, cell focus {metrics['cell_focus']}"
    )
    typer.echo(line)
    for text in audit_lines(metrics):
        typer.echo(text)
    if "foreign" in metrics:
        f = metrics["foreign"]
        typer.echo(
            f"foreign ({f['n_ok']} images): benign {f['share_benign']:.3f}, flagged {f['share_flagged']:.3f}, "
            f"benign or flagged {f['share_benign_or_flagged']:.3f}, "
            f"leukemia unflagged {f['share_leukemia_unflagged']:.3f}, "
            f"benign unflagged {f['share_benign_unflagged']:.3f}"
        )
    if update_card or update_card_of:
        from allscan.evaluation.card_metrics import store_metrics

        key = store_metrics(model, split or "all", metrics, into=update_card_of)
        where = f"{update_card_of}/card.json" if update_card_of else f"engines/{model}/card.json"
        typer.echo(f"metrics stored as {key} in {where}")
    typer.echo(f"wrote {out / 'metrics.json'}")


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
