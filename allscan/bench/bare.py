"""The ceiling: the runner alone, fed batches that were decoded, segmented and preprocessed beforehand.

Same model, backend, thread count and batch size as the pipeline, so ``pipeline_ips / bare_ips`` says how
much of the runner's speed the pipeline keeps. Images that give several model inputs ('cells' mode) are
counted as images: rows per second divided by the mean rows per image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from allscan.bench.stats import median, rate, timed
from allscan.models.store import StoredModel
from allscan.pipeline.discover import discover
from allscan.pipeline.workers import PrepareSettings, prepare
from allscan.runtime.select import select_runner


@dataclass(frozen=True)
class BareResult:
    ips: float  # images per second (median of repetitions)
    cpu_ms_per_image: float  # CPU time of this process per image while the runner alone ran (the model's cost)
    rows_per_image: float
    backend: str
    precision: str
    backend_reason: str


def premade_batches(
    model: StoredModel, images_dir: Path, batch_size: int, n_images: int
) -> tuple[list[np.ndarray], float]:
    """Full batches of real model inputs from the first ``n_images`` images, and the mean rows per image."""
    settings = PrepareSettings(spec=model.card.input, keep_image=False)
    rows: list[np.ndarray] = []
    used = 0
    for found in discover([images_dir]):
        if used >= n_images:
            break
        item = prepare(found, settings)
        if item.error or item.tensors is None:
            continue
        rows.extend(item.tensors)
        used += 1
    if not rows:
        raise ValueError(f"no usable image under {images_dir}")
    n_batches = max(1, -(-len(rows) // batch_size))
    cycled = [rows[k % len(rows)] for k in range(n_batches * batch_size)]
    batches = [np.stack(cycled[k : k + batch_size]) for k in range(0, len(cycled), batch_size)]
    return batches, len(rows) / used


def measure_bare(
    model: StoredModel, images_dir: Path, backend: str, batch_size: int, batches_per_rep: int, reps: int
) -> BareResult:
    batches, rows_per_image = premade_batches(model, images_dir, batch_size, n_images=2 * batch_size)
    choice = select_runner(model, backend, batch_size)
    with choice.runner as runner:
        for batch in batches[:2]:  # warm-up: first calls allocate and plan
            runner.infer(batch)

        def one_rep() -> None:
            for k in range(batches_per_rep):
                runner.infer(batches[k % len(batches)])

        rates, cpu = [], []
        for _ in range(reps):
            cpu0 = time.process_time()
            seconds, _ = timed(one_rep)
            images = batches_per_rep * batch_size / rows_per_image
            cpu.append(1000.0 * (time.process_time() - cpu0) / images)
            rates.append(rate(batches_per_rep * batch_size, seconds) / rows_per_image)
    return BareResult(
        ips=median(rates),
        cpu_ms_per_image=median(cpu),
        rows_per_image=rows_per_image,
        backend=choice.runner.backend,
        precision=choice.runner.precision,
        backend_reason=choice.reason,
    )
