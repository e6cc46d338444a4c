"""The whole benchmark: a plan (full or quick), the measurements in a fixed order, one JSON-ready dict.

Order: page cache and a small warm-up run first; then the runner alone; then the pipeline at ``allscan run``'s
defaults (--heatmaps flagged), with a heatmap for every image, the rerun with nothing new and without heatmaps,
interleaved repetition by repetition so that a burst of load elsewhere hits every side of the comparison; then
the worker scaling, the memory runs in subprocesses and last the notebooks' two baselines (they load torch).
Every ratio is of numbers taken in this one run.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from allscan.bench import imageset, system
from allscan.bench.bare import BareResult, measure_bare
from allscan.bench.naive import NaiveResult, measure_naive
from allscan.bench.naive_full import measure_naive_full
from allscan.bench.pipeline import PipelineRun, run_once
from allscan.bench.rss import MemoryRun, child_args, measure_run_memory
from allscan.bench.stats import median
from allscan.bench.targets import check_targets
from allscan.models.store import StoredModel, load_model
from allscan.pipeline.run import STAGES

SCALING_WORKERS = (1, 2)


@dataclass(frozen=True)
class Plan:
    """How much of each measurement; ``pipeline_images`` None means the whole image set."""

    pipeline_images: int | None
    reps: int  # repetitions of every timed measurement (the median is reported)
    scaling_reps: int
    warmup_images: int
    bare_batches: int  # runner calls per repetition
    naive_images: int  # images per repetition of the baseline
    memory_images: int  # the 1x memory run; the other run has MEMORY_FACTOR times as many
    memory_factor: int = 10


FULL = Plan(
    pipeline_images=None,
    reps=3,
    scaling_reps=1,
    warmup_images=16,
    bare_batches=16,
    naive_images=64,
    memory_images=256,
)
QUICK = Plan(
    pipeline_images=32,
    reps=1,
    scaling_reps=1,
    warmup_images=4,
    bare_batches=4,
    naive_images=8,
    memory_images=8,
)


@dataclass
class BenchConfig:
    model: str
    images: Path | None = None  # None: imageset.default_images_dir()
    backend: str = "auto"
    batch_size: int = 16
    workers: int | None = None  # None: CPU count, as `allscan run`
    quick: bool = False
    engines_root: Path | None = None

    @property
    def plan(self) -> Plan:
        return QUICK if self.quick else FULL


Log = Callable[[str], None]


def _pipeline_set(config: BenchConfig, images: list[Path], source: Path, tmp: Path) -> Path:
    """The folder the pipeline runs read: the source itself when used whole, else a view of symlinks."""
    wanted = config.plan.pipeline_images
    if wanted is None and len(images) >= imageset.MIN_IMAGES:
        return source
    count = wanted if wanted is not None else imageset.MIN_IMAGES
    return imageset.materialise(images, count, tmp / "images")


@dataclass
class _Runs:
    """The timed pipeline runs: ``allscan run``'s defaults (--heatmaps flagged), heatmaps for every image, the
    rerun with nothing new, and no heatmaps."""

    defaults: list[PipelineRun] = field(default_factory=list)
    every: list[PipelineRun] = field(default_factory=list)
    reruns: list[PipelineRun] = field(default_factory=list)
    none: list[PipelineRun] = field(default_factory=list)


Pipe = Callable[..., PipelineRun]


def _pipeline_runs(pipe: Pipe, reps: int, tmp: Path, log: Log) -> _Runs:
    """Interleaved repetition by repetition, so a burst of load elsewhere hits every side of the comparison."""
    runs = _Runs()
    for rep in range(reps):
        log(f"pipeline, repetition {rep + 1}/{reps}: defaults, heatmaps all, rerun, heatmaps none")
        for name, heatmaps, into in (("def", "flagged", runs.defaults), ("all", "all", runs.every)):
            into.append(pipe(f"{name}{rep}", heatmaps=heatmaps))
            if name == "all":
                runs.reruns.append(pipe(f"{name}{rep}", heatmaps=heatmaps))  # same --out: nothing new to do
            shutil.rmtree(tmp / f"{name}{rep}", ignore_errors=True)
        runs.none.append(pipe(f"none{rep}", heatmaps="none"))
        shutil.rmtree(tmp / f"none{rep}", ignore_errors=True)
    return runs


def _scaling(pipe: Pipe, plan: Plan, workers: int, runs: _Runs, tmp: Path, log: Log) -> dict[str, float]:
    scaling: dict[str, float] = {}
    for n in SCALING_WORKERS:
        if n == workers:
            scaling[str(n)] = median([r.ips for r in runs.defaults])
            continue
        log(f"pipeline with {n} worker(s)")
        timed_runs = []
        for rep in range(plan.scaling_reps):
            timed_runs.append(pipe(f"w{n}-{rep}", n_workers=n))
            shutil.rmtree(tmp / f"w{n}-{rep}", ignore_errors=True)
        scaling[str(n)] = median([r.ips for r in timed_runs])
    return scaling


def _memory(config: BenchConfig, images: list[Path], workers: int, tmp: Path, log: Log) -> dict[str, MemoryRun]:
    plan, memory = config.plan, {}
    for factor in (1, plan.memory_factor):
        count = plan.memory_images * factor
        log(f"memory: pipeline on {count} images in a subprocess")
        folder = imageset.materialise(images, count, tmp / f"mem{factor}x-images")
        args = child_args(
            folder, tmp / f"mem{factor}x", config.model, config.backend, config.batch_size, workers, config.engines_root
        )
        memory[f"{factor}x"] = measure_run_memory(args)
        shutil.rmtree(tmp / f"mem{factor}x", ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
    return memory


def cpu_ms_outside_model(runs: list[PipelineRun], model_cpu_ms: float) -> float | None:
    """CPU milliseconds per image the pipeline spends beyond the model itself: the process tree's CPU time per
    image (main process, its threads and the worker processes) minus the bare runner's CPU time per image."""
    values = [1000.0 * r.cpu_s / r.processed - model_cpu_ms for r in runs if r.processed]
    return median(values) if values else None


def run_bench(config: BenchConfig, log: Log = lambda _m: None) -> dict[str, Any]:
    """Measure everything the issue asks for; see the module docstring for the order."""
    started = time.perf_counter()
    load_start = system.load_average()
    plan = config.plan
    model = load_model(config.model, root=config.engines_root)
    workers = system.cpu_count() if config.workers is None else config.workers
    source = Path(config.images) if config.images else imageset.default_images_dir()
    images = imageset.list_images(source)
    if not images:
        raise ValueError(f"no images under {source}")
    tmp = Path(tempfile.mkdtemp(prefix="allscan-bench-"))
    try:
        pipeline_dir = _pipeline_set(config, images, source, tmp)
        used = imageset.list_images(pipeline_dir)
        log(f"{len(used)} images from {source}; model {model.card.model_id}; {workers} workers")
        imageset.warm_page_cache(sorted({p.resolve() for p in used}))

        def pipe(
            out: str, heatmaps: str = "flagged", n_workers: int = workers, folder: Path = pipeline_dir
        ) -> PipelineRun:
            args = (config.model, config.backend, config.batch_size, heatmaps, n_workers, config.engines_root)
            return run_once(folder, tmp / out, *args)

        log("warm-up run")
        pipe("warmup", folder=imageset.materialise(images, plan.warmup_images, tmp / "warmup-images"))
        log("runner alone on pre-made batches")
        bare = measure_bare(model, pipeline_dir, config.backend, config.batch_size, plan.bare_batches, plan.reps)
        runs = _pipeline_runs(pipe, plan.reps, tmp, log)
        scaling = _scaling(pipe, plan, workers, runs, tmp, log)
        memory = _memory(config, images, workers, tmp, log)
        log("notebook-style baselines: classification, then classification + Grad-CAM + PNG")
        naive = measure_naive(model, used[: plan.naive_images], system.cpu_count(), plan.reps)
        naive_full = measure_naive_full(model, used[: plan.naive_images], system.cpu_count(), plan.reps)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = _result(config, model, bare, runs, naive, naive_full, memory)
    result.update(
        workers_scaling_ips=scaling,
        n_images=len(used),
        images_dir=str(source),
        workers=workers,
        load_average=f"{load_start} at start, {system.load_average()} at end (1-minute)",
        bench_wall_s=time.perf_counter() - started,
    )
    result["targets"] = check_targets(result)
    return result


def _result(
    config: BenchConfig,
    model: StoredModel,
    bare: BareResult,
    runs: _Runs,
    naive: NaiveResult,
    naive_full: NaiveResult,
    memory: dict[str, MemoryRun],
) -> dict[str, Any]:
    """The measurements as one JSON-ready dict (medians over the repetitions)."""
    pipeline_ips = median([r.ips for r in runs.defaults])
    every_ips = median([r.ips for r in runs.every])
    stages = {s: median([r.stage_ms()[s] for r in runs.every]) for s in (*STAGES, "discover", "report")}
    ms_per_image = 1000.0 / every_ips if every_ips > 0 else 0.0
    mem1, mem10 = memory["1x"], memory[f"{config.plan.memory_factor}x"]
    return {
        "pipeline_ips": pipeline_ips,
        "pipeline_ips_all_heatmaps": every_ips,
        "pipeline_ips_no_heatmaps": median([r.ips for r in runs.none]),
        "bare_ips": bare.ips,
        "naive_ips": naive.ips,
        "naive_full_ips": naive_full.ips,
        "naive_skipped": naive.skipped or None,
        "naive_weights": naive.weights or None,
        "naive_torch_threads": naive.threads or None,
        "ratio_pipeline_bare": pipeline_ips / bare.ips if bare.ips > 0 else None,
        "ratio_pipeline_naive": pipeline_ips / naive.ips if naive.ips else None,
        "ratio_pipeline_naive_full": pipeline_ips / naive_full.ips if naive_full.ips else None,
        "cpu_ms_outside_model": cpu_ms_outside_model(runs.defaults, bare.cpu_ms_per_image),
        "cpu_ms_outside_model_all_heatmaps": cpu_ms_outside_model(runs.every, bare.cpu_ms_per_image),
        "model_cpu_ms": bare.cpu_ms_per_image,
        "stages_ms": stages,
        "pipeline_ms_per_image": ms_per_image,
        "heatmap_share": stages["heatmap"] / ms_per_image if ms_per_image > 0 else None,
        "peak_rss_mb": max(mem1.tree_peak_mb, mem10.tree_peak_mb),
        "memory": {key: _memory_dict(run) for key, run in memory.items()},
        "rss_ratio_10x_1x": mem10.tree_peak_mb / mem1.tree_peak_mb if mem1.tree_peak_mb > 0 else None,
        "rerun_s": median([r.wall_s for r in runs.reruns]),
        "model": model.card.name,
        "model_id": model.card.model_id,
        "backend": bare.backend,
        "backend_reason": bare.backend_reason,
        "precision": bare.precision,
        "batch_size": config.batch_size,
        "cpu_count": system.cpu_count(),
        "gpu": system.gpu_name(),
        "quick": config.quick,
        "repetitions": config.plan.reps,
        "warnings": [
            f"{r.errors} images failed in a timed run (their rows say why)"
            for r in runs.defaults + runs.every + runs.none
            if r.errors
        ],
    }


def _memory_dict(run: MemoryRun) -> dict[str, Any]:
    return {
        "images": run.images,
        "tree_peak_mb": run.tree_peak_mb,
        "main_peak_mb": run.main_peak_mb,
        "worker_peak_mb": run.worker_peak_mb,
    }
