"""Decode, segment and preprocess images in worker processes, with a bounded window of work in flight.

This is the CPU-heavy half of the pipeline, kept off the main process so that the runner (ONNX Runtime or a
GPU) does not wait on Python. At most ``window`` chunks are submitted and not yet consumed, so memory stays
flat whatever the number of images: a slow runner makes the workers wait instead of piling up decoded pixels.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from allscan.io.images import DEFAULT_MAX_PIXELS, WORKING_SIDE, ImageReadError, decode_image
from allscan.models.card import InputSpec
from allscan.pipeline.colour import colour_statistics, lab
from allscan.pipeline.discover import Found
from allscan.pipeline.model_input import cell_boxes, model_inputs
from allscan.pipeline.segment import Cell, SegmentParams, segment

CHUNK = 4  # images per task: amortises inter-process overhead, small enough to keep the window fine-grained


@dataclass(frozen=True)
class PrepareSettings:
    """What a worker needs to know; picklable."""

    spec: InputSpec
    max_pixels: int = DEFAULT_MAX_PIXELS
    keep_image: bool = True  # send the decoded pixels back (needed only when heatmaps may be drawn)
    segment_params: SegmentParams = field(default_factory=SegmentParams)
    working_side: int = WORKING_SIDE  # longest side of the copy that is segmented and rendered


@dataclass
class Prepared:
    """One image, ready for the runner, or the reason it cannot be."""

    found: Found
    error: str = ""
    notes: list[str] = field(default_factory=list)
    width: int = 0  # of the file; ``bgr`` and ``labels`` may be a downscaled working copy
    height: int = 0
    tensors: np.ndarray | None = None  # float32 [k, 3, S, S]
    boxes: list[tuple[int, int, int, int]] | None = None  # crop boxes in 'cells' mode, else None
    cells: list[Cell] = field(default_factory=list)  # measured on the working copy, in the file's pixels
    labels: np.ndarray | None = None  # int32 [H, W]: 0 background, k on the pixels of cell k (cell_id)
    area_fraction: float = 0.0
    bgr: np.ndarray | None = None
    colour: np.ndarray | None = None  # raw LAB statistics [6] (colour.colour_statistics) for the colour flag
    timings: dict[str, float] = field(default_factory=dict)

    def __getstate__(self) -> dict[str, object]:
        """What crosses from a worker to the main process, packed without loss: a grey model input (three equal
        channels) as one plane, a label image in the smallest unsigned type that holds its cell ids. About a
        third of the bytes of a 'lightness' image, so the main process spends less on unpickling."""
        state = dict(self.__dict__)
        tensors, labels = self.tensors, self.labels
        if tensors is not None and tensors.ndim == 4 and tensors.shape[1] == 3 and _grey(tensors):
            state["tensors"] = ("grey", np.ascontiguousarray(tensors[:, :1]))
        if labels is not None and labels.size and labels.dtype == np.int32 and labels.min() >= 0:
            top = int(labels.max())
            small = np.uint8 if top < 256 else np.uint16 if top < 65536 else None
            if small is not None:
                state["labels"] = ("small", labels.astype(small))
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        tensors, labels = state.get("tensors"), state.get("labels")
        if isinstance(tensors, tuple):
            state["tensors"] = np.repeat(tensors[1], 3, axis=1)
        if isinstance(labels, tuple):
            state["labels"] = labels[1].astype(np.int32)
        self.__dict__.update(state)


def _grey(tensors: np.ndarray) -> bool:
    return bool(np.array_equal(tensors[:, 0], tensors[:, 1]) and np.array_equal(tensors[:, 0], tensors[:, 2]))


def prepare(found: Found, settings: PrepareSettings) -> Prepared:
    """Decode, segment and build the model input of one image; every failure becomes ``error``."""
    if found.error:
        return Prepared(found=found, error=found.error)
    timings = {"decode": 0.0, "segment": 0.0, "preprocess": 0.0}
    t0 = time.perf_counter()
    try:
        decoded = decode_image(Path(found.path), max_pixels=settings.max_pixels, max_side=settings.working_side)
    except ImageReadError as exc:
        timings["decode"] = time.perf_counter() - t0
        return Prepared(found=found, error=str(exc), timings=timings)
    t1 = time.perf_counter()
    timings["decode"] = t1 - t0
    try:
        seg = segment(decoded.bgr, settings.segment_params)
        t2 = time.perf_counter()
        field_lab = lab(decoded.bgr) if settings.spec.colour != "rgb" else None  # shared by the two below
        tensors = model_inputs(decoded.bgr, seg, settings.spec, field_lab)
        colour = colour_statistics(decoded.bgr, field_lab) if field_lab is not None else None
        boxes = None
        if settings.spec.mode == "cells" and seg.cells:
            boxes = cell_boxes(seg, settings.spec, decoded.bgr.shape[:2])
        t3 = time.perf_counter()
    except Exception as exc:  # noqa: BLE001 - one odd image must not stop a night's run; its row says why
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return Prepared(found=found, error=f"internal error while segmenting: {type(exc).__name__}: {first}")
    timings["segment"] = t2 - t1
    timings["preprocess"] = t3 - t2
    return Prepared(
        found=found,
        notes=list(decoded.notes),
        width=decoded.width,
        height=decoded.height,
        tensors=tensors,
        boxes=boxes,
        cells=scale_cells(seg.cells, decoded.scale),
        labels=seg.labels,
        area_fraction=seg.area_fraction,
        bgr=decoded.bgr if settings.keep_image else None,
        colour=colour,
        timings=timings,
    )


def scale_cells(cells: list[Cell], scale: float) -> list[Cell]:
    """Cells measured on a working copy, in the original file's pixels (lengths x scale, areas x scale^2), so
    cells.csv means one thing whatever the image's size; shape measures (circularity, colour, share) stay."""
    if scale == 1.0:
        return list(cells)
    return [
        replace(
            c,
            x=int(round(c.x * scale)),
            y=int(round(c.y * scale)),
            width=int(round(c.width * scale)),
            height=int(round(c.height * scale)),
            area_px=int(round(c.area_px * scale * scale)),
            perimeter=round(c.perimeter * scale, 2),
            equivalent_diameter=round(c.equivalent_diameter * scale, 2),
            centroid_x=round(c.centroid_x * scale, 2),
            centroid_y=round(c.centroid_y * scale, 2),
        )
        for c in cells
    ]


def _prepare_chunk(chunk: list[Found], settings: PrepareSettings) -> list[Prepared]:
    return [prepare(found, settings) for found in chunk]


def _exit_with_parent() -> None:
    """Watchdog: a worker whose run was SIGKILLed must not live on (it never sees its queue close).

    multiprocessing keeps a pipe from the run's process open for each worker (``parent_process().sentinel``); it
    reads as closed once that process is gone, even before anyone reaps it, and under the fork server too, where
    the run is not the worker's parent (a pid check would keep a worker of a killed run alive)."""
    parent = multiprocessing.parent_process()
    if parent is not None and parent.sentinel is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group and a scheduler's SIGTERM may too: the main process alone decides
    # how the run stops (it shuts the pool down), so workers neither die mid-chunk nor print tracebacks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    cv2.setNumThreads(1)  # parallelism comes from the processes; OpenCV's own threads would oversubscribe
    threading.Thread(target=_exit_with_parent, daemon=True, name="parent-watch").start()


def _chunks(items: Iterable[Found], size: int) -> Iterator[list[Found]]:
    chunk: list[Found] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def worker_context() -> multiprocessing.context.BaseContext:
    """Processes from a fork server where there is one, else spawned.

    Never a plain fork: this process may already run ONNX Runtime's or OpenCV's threads. A spawned worker imports
    NumPy and OpenCV afresh (~0.5 s of CPU each: on a 16-core machine 16 workers cost more CPU than a few hundred
    images); the fork server, a clean single-threaded process, imports this module once and forks each worker
    ready to go, and serves every later run of this process too.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def prepared_stream(items: Iterable[Found], settings: PrepareSettings, workers: int) -> Generator[Prepared, None, None]:
    """Prepared images in the order of ``items``; ``workers`` = 0 runs in this process (tests, debugging)."""
    if workers <= 0:
        for found in items:
            yield prepare(found, settings)
        return
    window = 2 * workers + 1
    context = worker_context()
    pending: deque[Future[list[Prepared]]] = deque()
    chunks = _chunks(items, CHUNK)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init) as pool:
        try:
            for chunk in chunks:
                pending.append(pool.submit(_prepare_chunk, chunk, settings))
                if len(pending) >= window:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
