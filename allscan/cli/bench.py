"""``allscan bench``: the pipeline's measured throughput against the bare runner and the notebooks' way.

Draws the tables and writes the JSON; the measuring is :func:`allscan.bench.suite.run_bench`. Exit codes: 0
the benchmark ran (whether or not the targets were met: the tables say which), 2 usage or configuration error.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from allscan.cli.errors import fail, reported
from allscan.cli.options import Backend, BackendOpt, BatchSize, ModelName, Workers
from allscan.models.store import DEFAULT_MODEL

MEANINGS = {
    "pipeline_ips": "allscan run end to end at its defaults (--heatmaps flagged), images/s",
    "pipeline_ips_all_heatmaps": "the same with a heatmap for every image",
    "pipeline_ips_no_heatmaps": "the same with --heatmaps none",
    "bare_ips": "the runner alone on pre-made batches: the ceiling",
    "naive_ips": "notebooks: PIL + torchvision + torch eager, batch 1",
    "naive_full_ips": "notebooks' whole job: the same + Grad-CAM by autograd + PNG overlay",
    "ratio_pipeline_bare": "share of the ceiling the pipeline keeps",
    "ratio_pipeline_naive": "times faster than the notebooks",
    "ratio_pipeline_naive_full": "times faster than the notebooks' whole job",
    "cpu_ms_outside_model": "CPU ms per image beyond the model's own (process tree - bare runner)",
    "heatmap_share": "heatmap stage / pipeline time per image",
    "peak_rss_mb": "peak RSS of the run's processes (main + workers)",
    "rss_ratio_10x_1x": "peak RSS with 10x the images / with 1x",
    "rerun_s": "rerun with nothing new (seconds)",
}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _tables(result: dict[str, Any]) -> list[Table]:
    title = (
        f"allscan bench: {result['model']} on {result['backend']}, batch {result['batch_size']}, "
        f"{result['workers']} workers, {result['cpu_count']} CPUs, GPU {result['gpu'] or 'none'}, "
        f"{result['n_images']} images{' (quick)' if result['quick'] else ''}"
    )
    main = Table(title=title, title_justify="left")
    main.add_column("measure", style="bold")
    main.add_column("value", justify="right")
    main.add_column("what it is")
    for key, meaning in MEANINGS.items():
        value = result[key]
        if key in ("naive_ips", "naive_full_ips") and value is None:
            meaning = f"skipped: {result['naive_skipped']}"
        main.add_row(key, _fmt(value), meaning)
    for n, ips in result["workers_scaling_ips"].items():
        main.add_row(f"pipeline_ips, {n} worker(s)", _fmt(ips), "scaling with decode/segment processes")

    stages = Table(title="where the time goes (ms per image, a heatmap for every image)", title_justify="left")
    stages.add_column("stage", style="bold")
    stages.add_column("ms/image", justify="right")
    stages.add_column("measured as")
    for stage, ms in result["stages_ms"].items():
        how = (
            "CPU time summed over workers" if stage in ("decode", "segment", "preprocess") else "main-process wall time"
        )
        stages.add_row(stage, f"{ms:.2f}", how)
    stages.add_row("whole pipeline", f"{result['pipeline_ms_per_image']:.2f}", "1000 / pipeline_ips_all_heatmaps")

    targets = Table(title="targets (issue 12)", title_justify="left")
    targets.add_column("target", style="bold")
    targets.add_column("value", justify="right")
    targets.add_column("goal")
    targets.add_column("met")
    for name, t in result["targets"].items():
        met = "-" if t["met"] is None else ("[green]yes[/]" if t["met"] else "[red]no[/]")
        targets.add_row(name, _fmt(t["value"]), t["target"] + (f"  ({t['note']})" if t["note"] else ""), met)
    return [main, stages, targets]


def bench(
    *,
    model: ModelName = DEFAULT_MODEL,
    images: Annotated[
        Path | None,
        typer.Option(
            "--images",
            help="Folder of images (default: the shared all-pbs dataset when present, else sample_images); "
            "sets under 256 images are repeated up to 256.",
        ),
    ] = None,
    backend: BackendOpt = Backend.auto,
    batch_size: BatchSize = 16,
    workers: Workers = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="32 images, one repetition, small memory runs: a check, not a measurement.")
    ] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the results as JSON here.")] = None,
) -> None:
    """Throughput of the pipeline against the bare runner and the notebooks' way, and where time goes."""
    from allscan.bench.suite import BenchConfig, run_bench  # heavy imports only when benchmarking

    console = Console()
    config = BenchConfig(
        model=model,
        images=images,
        backend=backend.value,
        batch_size=batch_size,
        workers=workers,
        quick=quick,
    )
    if images is not None and not images.is_dir():
        raise fail("bench", f"--images is not a folder: {images}")
    with reported("bench", usage=(ValueError,)):
        if console.is_terminal:
            with console.status("benchmarking") as status:
                result = run_bench(config, log=lambda m: status.update(f"benchmarking: {m}"))
        else:  # a log file: one timestamped line per step
            started = time.monotonic()
            result = run_bench(
                config, log=lambda m: print(f"allscan bench: {time.monotonic() - started:5.0f} s {m}", flush=True)
            )
    for table in _tables(result):
        console.print(table)
    for warning in result["warnings"]:
        console.print(f"allscan bench: warning: {warning}", highlight=False)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
