"""``allscan run --executor ray``: prepare + infer on a Ray cluster with Ray Data; the driver keeps the rest.

The images still to do become a dataset (``ray.data.from_items``); decode + segment + model input run as CPU
``map_batches`` tasks (the same ``workers.prepare`` as the local executor); inference runs in an actor pool, one
runner per actor (``num_gpus=1`` each where the cluster has GPUs, ONNX Runtime on fractional CPUs where it has
none), through the same ``Batcher`` and the same position-independent runner as a local run. Results stream back
in discovery order (``preserve_order``) to this process, which alone writes the journal, the heatmaps and the
tables: resume, the lock and byte-identical tables hold exactly as with the local executor.

Every node must see the INPUTs and the model store at the same paths (a shared filesystem), as with Slurm.
Ray is imported only here and only when this executor runs; it is the ``ray`` extra.
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from allscan.models.store import StoredModel
from allscan.pipeline.batching import Batcher
from allscan.pipeline.discover import Found
from allscan.pipeline.workers import CHUNK, Prepared, PrepareSettings, prepare

INSTALL_HINT = "pip install 'allscan[ray]'"
# Whole CPUs per actor stall reading on small machines (the prepare tasks get no slot). The two differ so that Ray
# Data does not fuse prepare into the actors (it fuses operators with equal resources): prepare then scales with
# the cluster's CPUs while the actors only run the model.
PREPARE_CPUS = 0.5
ACTOR_CPUS = 0.25

Outputs = dict[str, np.ndarray]


def ray_missing() -> str | None:
    """One line saying how to install Ray Data when it is not importable, else None."""
    for name in ("ray", "pandas", "pyarrow"):  # ray.data needs all three
        try:
            if importlib.util.find_spec(name) is None:
                raise ImportError(name)
        except (ImportError, ValueError):
            return f"--executor ray needs Ray Data, which is not installed ({name} is missing): {INSTALL_HINT}"
    return None


@dataclass
class RayBatch:
    """Results of one actor call, in discovery order: ``outputs`` is None for an image that failed to prepare."""

    pairs: list[tuple[Prepared, Outputs | None]]
    infer_s: float
    backend: str
    reason: str
    precision: str


def _prepare_batch(batch: dict[str, np.ndarray], settings: PrepareSettings) -> dict[str, np.ndarray]:
    import cv2

    cv2.setNumThreads(1)  # parallelism comes from the tasks, as with the local worker processes
    done = [pickle.dumps(prepare(pickle.loads(raw), settings), protocol=5) for raw in batch["found"]]
    return {"item": np.array(done, dtype=object)}


class _InferActor:
    """One runner per actor, chosen as ``allscan run`` would choose it on that node."""

    def __init__(self, model: StoredModel, backend: str, batch_size: int) -> None:
        from allscan.runtime.select import select_runner

        choice = select_runner(model, backend, batch_size)
        self.runner = choice.runner
        self.runner.__enter__()
        self.batch_size = batch_size
        self.info = (choice.runner.backend, choice.reason, choice.runner.precision)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items: list[Prepared] = [pickle.loads(raw) for raw in batch["item"]]
        t0 = time.perf_counter()
        batcher = Batcher(self.runner.infer, self.batch_size)
        pairs: list[tuple[Prepared, Outputs]] = []
        for item in items:
            if not item.error:
                pairs.extend(batcher.add(item))
        pairs.extend(batcher.flush())
        infer_s = time.perf_counter() - t0
        outputs = {id(item): out for item, out in pairs}
        results = []
        for item in items:
            out = outputs.get(id(item))
            item.tensors = None  # the driver does not need the model inputs back
            results.append(pickle.dumps((item, out), protocol=5))
        n = len(items)
        backend, reason, precision = self.info
        return {
            "result": np.array(results, dtype=object),
            "infer_s": np.array([infer_s] + [0.0] * (n - 1)),
            "backend": np.array([backend] * n),
            "reason": np.array([reason] * n),
            "precision": np.array([precision] * n),
        }


def _actor_resources(ray: object, backend: str) -> tuple[dict[str, float], int]:
    """(remote args, number of actors): one actor per GPU, else one per node on fractional CPUs."""
    gpus = int(ray.cluster_resources().get("GPU", 0))  # type: ignore[attr-defined]
    if gpus >= 1 and backend != "onnxruntime":
        return {"num_gpus": 1}, gpus
    nodes: int = sum(1 for node in ray.nodes() if node.get("Alive"))  # type: ignore[attr-defined,misc]
    return {"num_cpus": ACTOR_CPUS}, max(1, nodes)


def ray_results(
    todo: Iterable[Found],
    settings: PrepareSettings,
    model: StoredModel,
    backend: str,
    batch_size: int,
    address: str | None,
    log: object = None,
) -> Generator[RayBatch, None, None]:
    """Prepared images with their network outputs, in the order of ``todo``, computed on a Ray cluster.

    Connects to ``address`` (None: ``$RAY_ADDRESS`` or a new local cluster) unless Ray is already initialised
    in this process; a cluster started here is shut down when the iterator ends or is closed."""
    import ray
    from ray.data import DataContext

    started = _join(ray, address)
    try:
        context = DataContext.get_current()
        context.execution_options.preserve_order = True  # the journal and tables want discovery order
        context.enable_progress_bars = False  # allscan draws its own progress
        items = [{"found": pickle.dumps(found, protocol=5)} for found in todo]
        if not items:
            return
        model = replace(model, folder=model.folder.resolve())  # actors may start in another working directory
        remote, actors = _actor_resources(ray, backend)
        if callable(log):
            log(
                f"ray: {len(items)} images on {ray.cluster_resources().get('CPU', 0):g} CPUs, {actors} inference actors"
            )
        dataset = _dataset(ray, items, settings, model, backend, batch_size, remote, actors)
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            if len(batch["result"]):
                yield _ray_batch(batch)
    finally:
        if started:
            ray.shutdown()


def _join(ray: Any, address: str | None) -> bool:
    """Join (or start) the cluster unless this process already did; True when this call initialised Ray."""
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)  # allscan logs what the user needs
    started = False
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, ValueError, RuntimeError) as exc:  # no cluster at ADDR, a malformed ADDR
            from allscan.pipeline.config import RunError

            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RunError(f"cannot join the Ray cluster {address or '(local)'}: {first}") from None
        started = True
    return started


def _dataset(
    ray: Any,
    items: list[dict[str, bytes]],
    settings: PrepareSettings,
    model: StoredModel,
    backend: str,
    batch_size: int,
    remote: dict[str, float],
    actors: int,
) -> Any:
    """The Ray Data plan: prepare as CPU tasks, then infer in a pool of ``actors`` runners."""
    return (
        ray.data.from_items(items)
        .map_batches(
            _prepare_batch,
            batch_size=CHUNK,
            batch_format="numpy",
            fn_kwargs={"settings": settings},
            num_cpus=PREPARE_CPUS,
        )
        .map_batches(
            _InferActor,
            batch_size=batch_size,
            batch_format="numpy",
            fn_constructor_kwargs={"model": model, "backend": backend, "batch_size": batch_size},
            compute=ray.data.ActorPoolStrategy(size=actors),
            **remote,
        )
    )


def _ray_batch(batch: dict[str, np.ndarray]) -> RayBatch:
    """One actor call's columns as a :class:`RayBatch` (the runner facts are the same on every row)."""
    return RayBatch(
        pairs=[pickle.loads(raw) for raw in batch["result"]],
        infer_s=float(np.sum(batch["infer_s"])),
        backend=str(batch["backend"][0]),
        reason=str(batch["reason"][0]),
        precision=str(batch["precision"][0]),
    )
