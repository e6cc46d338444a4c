"""The processing loops: every image still to do goes through prepare -> infer -> finish, into the journal.

``process`` picks the executor: local (worker processes feed batches to a runner in this process) or Ray (prepare
and infer on a cluster; rows, PNGs and the journal are still written here). Each returns a :class:`Processed`
with the runner it used, the images it finished and the stage timings.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager

import cv2

from allscan.models.store import StoredModel
from allscan.pipeline.batching import infer_stream
from allscan.pipeline.config import Progress, RunConfig
from allscan.pipeline.finishing import Finisher, finishing_threads
from allscan.pipeline.journal import Journal
from allscan.pipeline.summary import Processed
from allscan.pipeline.workers import Prepared, PrepareSettings, prepared_stream
from allscan.runtime.select import select_runner

# With the default --workers, runs of up to this many images decode in the main process: starting worker
# processes (seconds on a busy machine) costs more than it saves.
SMALL_RUN = 64
_WORKER_STAGES = ("decode", "segment", "preprocess")


class _Tally:
    """Counts finished images and tells ``config.progress`` after each one."""

    def __init__(self, config: RunConfig, total: int) -> None:
        self.config, self.total = config, total
        self.done = self.errors = 0

    def note(self, n_errors: int = 0) -> None:
        self.done += 1
        self.errors += n_errors
        if self.config.progress:
            self.config.progress(Progress(done=self.done, total=self.total, errors=self.errors))


def _settings(config: RunConfig, model: StoredModel) -> PrepareSettings:
    return PrepareSettings(spec=model.card.input, max_pixels=config.max_pixels, keep_image=config.heatmaps != "none")


@contextmanager
def opencv_threads(n: int) -> Iterator[None]:
    """OpenCV's own thread pool sized ``n`` for the duration (then as it was). In this process OpenCV works on one
    small image at a time (class maps, heatmaps, small runs' decoding), where a pool of one thread per core only
    competes with ONNX Runtime's threads and, with finishing threads, would multiply them. Measured on 16 cores:
    as fast or faster (83-86 against 77-78 images/s in one set of runs, 107-118 against 108-113 in another)."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def process(config: RunConfig, model: StoredModel, journal: Journal, total: int) -> Processed:
    """Run the ``total`` images marked todo through the chosen executor; results go to the journal."""
    if config.executor == "ray":
        return process_ray(config, model, journal, total)
    return process_local(config, model, journal, total)


def process_local(config: RunConfig, model: StoredModel, journal: Journal, total: int) -> Processed:
    """Worker processes (or this process, for small runs) prepare; one runner here infers in batches."""
    choice = select_runner(model, config.backend, config.batch_size)
    config.say(f"backend {choice.reason}")
    threads = config.finish_threads
    if threads is None:
        threads = finishing_threads(choice.runner.backend)
    finisher = Finisher(model.card, config.out, config.heatmaps, journal, threads)
    timings = finisher.timings
    tally = _Tally(config, total)
    workers = 0 if config.workers is None and total <= SMALL_RUN else config.resolved_workers

    def ready(stream: Iterable[Prepared]) -> Iterator[Prepared]:
        """The images the runner gets; the others are finished (as errors) as they arrive."""
        for item in stream:
            for stage in _WORKER_STAGES:
                timings[stage] += item.timings.get(stage, 0.0)
            if item.error:
                finisher.error(item)
                finisher.commit()
                tally.note(1)
            else:
                yield item

    stream = prepared_stream(journal.iter_todo(), _settings(config, model), workers)
    with opencv_threads(1), finisher, choice.runner as runner, runner.profile() as inference, closing(stream):
        pending = 0
        for item, outputs in infer_stream(ready(stream), runner.infer_many, config.batch_size):
            finisher.ok(item, outputs)
            tally.note()
            pending += 1
            if pending >= config.batch_size:  # one commit per batch
                finisher.commit()
                pending = 0
        finisher.commit()
    timings["infer"] += inference.seconds
    chosen = choice.runner
    return Processed(chosen.backend, choice.reason, chosen.precision, tally.done, workers, timings)


def process_ray(config: RunConfig, model: StoredModel, journal: Journal, total: int) -> Processed:
    """As :func:`process_local`, with prepare + infer on Ray Data; rows, PNGs and the journal are written here."""
    from allscan.pipeline.ray_executor import ray_results

    finisher = Finisher(model.card, config.out, config.heatmaps, journal)
    timings = finisher.timings
    tally = _Tally(config, total)
    backend = reason = precision = ""
    stream = ray_results(
        journal.iter_todo(), _settings(config, model), model, config.backend, config.batch_size,
        config.ray_address, config.log,
    )  # fmt: skip
    with finisher, closing(stream):
        for batch in stream:
            if not backend:
                backend, reason, precision = batch.backend, batch.reason, batch.precision
                config.say(f"backend {batch.reason} (on the Ray actors)")
            timings["infer"] += batch.infer_s
            for item, outputs in batch.pairs:
                for stage in _WORKER_STAGES:
                    timings[stage] += item.timings.get(stage, 0.0)
                if outputs is None:
                    finisher.error(item)
                else:
                    finisher.ok(item, outputs)
                tally.note(int(outputs is None))
            finisher.commit()
    return Processed(backend, reason, precision, tally.done, 0, timings)


__all__ = ["SMALL_RUN", "process", "process_local", "process_ray"]
