"""The whole benchmark: a plan (full or quick), the measurements in a fixed order, one JSON-ready dict.

Order: page cache and a small warm-up run first; then the runner alone; then the pipeline with heatmaps on,
the rerun with nothing new and the pipeline with heatmaps off, interleaved repetition by repetition so that
a burst of load elsewhere hits both sides of the heatmap comparison; then the worker scaling, the memory runs
in subprocesses and last the notebooks' baseline (it loads torch). Every ratio is of numbers taken in this
one run.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allscan.bench import imageset, system
from allscan.bench.bare import measure_bare
from allscan.bench.naive import measure_naive
from allscan.bench.pipeline import PipelineRun, run_once
from allscan.bench.rss import child_args, measure_run_memory
from allscan.bench.stats import median
from allscan.bench.targets import check_targets
from allscan.models.store import load_model
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

        def pipe(out: str, heatmaps: bool = True, n_workers: int = workers, folder: Path = pipeline_dir) -> PipelineRun:
            return run_once(
                folder,
                tmp / out,
                config.model,
                config.backend,
                config.batch_size,
                heatmaps,
                n_workers,
                config.engines_root,
            )

        log("warm-up run")
        pipe("warmup", folder=imageset.materialise(images, plan.warmup_images, tmp / "warmup-images"))

        log("runner alone on pre-made batches")
        bare = measure_bare(model, pipeline_dir, config.backend, config.batch_size, plan.bare_batches, plan.reps)

        on: list[PipelineRun] = []
        off: list[PipelineRun] = []
        reruns: list[PipelineRun] = []
        for rep in range(plan.reps):
            log(f"pipeline, repetition {rep + 1}/{plan.reps}: heatmaps on, rerun, heatmaps off")
            on.append(pipe(f"on{rep}"))
            reruns.append(pipe(f"on{rep}"))  # same --out: nothing new to do
            shutil.rmtree(tmp / f"on{rep}", ignore_errors=True)
            off.append(pipe(f"off{rep}", heatmaps=False))
            shutil.rmtree(tmp / f"off{rep}", ignore_errors=True)

        scaling: dict[str, float] = {}
        for n in SCALING_WORKERS:
            if n == workers:
                scaling[str(n)] = median([r.ips for r in on])
                continue
            log(f"pipeline with {n} worker(s)")
            runs = []
            for rep in range(plan.scaling_reps):
                runs.append(pipe(f"w{n}-{rep}", n_workers=n))
                shutil.rmtree(tmp / f"w{n}-{rep}", ignore_errors=True)
            scaling[str(n)] = median([r.ips for r in runs])

        memory = {}
        for factor in (1, plan.memory_factor):
            count = plan.memory_images * factor
            log(f"memory: pipeline on {count} images in a subprocess")
            folder = imageset.materialise(images, count, tmp / f"mem{factor}x-images")
            args = child_args(
                folder,
                tmp / f"mem{factor}x",
                config.model,
                config.backend,
                config.batch_size,
                workers,
                config.engines_root,
            )
            memory[f"{factor}x"] = measure_run_memory(args)
            shutil.rmtree(tmp / f"mem{factor}x", ignore_errors=True)
            shutil.rmtree(folder, ignore_errors=True)
        log("notebook-style baseline")
        naive = measure_naive(model, used[: plan.naive_images], system.cpu_count(), plan.reps)

    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    pipeline_ips = median([r.ips for r in on])
    no_heat_ips = median([r.ips for r in off])
    stages = {s: median([r.stage_ms()[s] for r in on]) for s in (*STAGES, "discover", "report")}
    ms_per_image = 1000.0 / pipeline_ips if pipeline_ips > 0 else 0.0
    mem1, mem10 = memory["1x"], memory[f"{plan.memory_factor}x"]
    result: dict[str, Any] = {
        "pipeline_ips": pipeline_ips,
        "pipeline_ips_no_heatmaps": no_heat_ips,
        "bare_ips": bare.ips,
        "naive_ips": naive.ips,
        "naive_skipped": naive.skipped or None,
        "naive_weights": naive.weights or None,
        "naive_torch_threads": naive.threads or None,
        "ratio_pipeline_bare": pipeline_ips / bare.ips if bare.ips > 0 else None,
        "ratio_pipeline_naive": pipeline_ips / naive.ips if naive.ips else None,
        "stages_ms": stages,
        "pipeline_ms_per_image": ms_per_image,
        "heatmap_share": stages["heatmap"] / ms_per_image if ms_per_image > 0 else None,
        "peak_rss_mb": max(mem1.tree_peak_mb, mem10.tree_peak_mb),
        "memory": {
            key: {
                "images": run.images,
                "tree_peak_mb": run.tree_peak_mb,
                "main_peak_mb": run.main_peak_mb,
                "worker_peak_mb": run.worker_peak_mb,
            }
            for key, run in memory.items()
        },
        "rss_ratio_10x_1x": mem10.tree_peak_mb / mem1.tree_peak_mb if mem1.tree_peak_mb > 0 else None,
        "workers_scaling_ips": scaling,
        "rerun_s": median([r.wall_s for r in reruns]),
        "n_images": len(used),
        "images_dir": str(source),
        "model": model.card.name,
        "model_id": model.card.model_id,
        "backend": bare.backend,
        "backend_reason": bare.backend_reason,
        "precision": bare.precision,
        "batch_size": config.batch_size,
        "workers": workers,
        "cpu_count": system.cpu_count(),
        "gpu": system.gpu_name(),
        "quick": config.quick,
        "repetitions": plan.reps,
        "warnings": [f"{r.errors} images failed in a timed run (their rows say why)" for r in on + off if r.errors],
        "load_average": f"{load_start} at start, {system.load_average()} at end (1-minute)",
    }
    result["bench_wall_s"] = time.perf_counter() - started
    result["targets"] = check_targets(result)
    return result
