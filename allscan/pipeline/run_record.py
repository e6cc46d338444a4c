"""run.json of ``allscan run``: the record of what ran, built from the run's config, model and summary."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from allscan import __version__
from allscan.io.records import ModelRecord, ModelRef, Producer, RecordError, RunFlags, RunRecord, ShardInfo
from allscan.io.records.run import from_json
from allscan.io.tables import TABLES_VERSION
from allscan.models.card import sha256_file
from allscan.models.store import StoredModel

if TYPE_CHECKING:
    from allscan.pipeline.config import RunConfig
    from allscan.pipeline.summary import RunSummary


def versions() -> dict[str, str]:
    import onnxruntime  # type: ignore[import-untyped]

    return {
        "allscan": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "onnxruntime": onnxruntime.__version__,
        "platform": platform.platform(),
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def producer_record(model: StoredModel, summary: RunSummary, started: datetime) -> Producer:
    """What run.json's ``produced_by`` says of a run that processed images: enough to know how rows were made."""
    card = model.card
    return Producer(
        started=started.isoformat(timespec="seconds"),
        finished=_now(),
        versions=dict(sorted(versions().items())),
        model=ModelRef(name=card.name, id=card.model_id, architecture=card.architecture),
        backend=summary.backend,
        backend_reason=summary.backend_reason,
        precision=summary.precision,
        workers_used=summary.workers_used,
        processed=summary.n_processed,
        wall_s=round(summary.wall_s, 4),
        images_per_s=round(summary.images_per_s, 3),
    )


def stored_producer(data: dict[str, Any] | None) -> Producer | None:
    """The journal's producer as a record; None when there is none or it is not one (an older allscan's)."""
    try:
        return from_json(Producer, data, "produced_by") if data else None
    except RecordError:
        return None


def model_record(model: StoredModel) -> ModelRecord:
    """run.json ``model``: the card's identity, classes, labels and flag thresholds, and the files' hashes."""
    card = model.card
    onnx_sha = card.onnx_sha256 or sha256_file(model.onnx_path)  # load_model verified the card's hash
    return ModelRecord(
        name=card.name,
        id=card.model_id,
        architecture=card.architecture,
        classes=card.classes,
        input_mode=card.input.mode,
        heatmap_method=card.heatmap_method,
        files={card.onnx_file: onnx_sha, "card.json": sha256_file(model.folder / "card.json")},
        class_labels=dict(card.class_labels),
        flags=RunFlags(low_confidence=card.flags.low_confidence, ood=card.flags.ood),
    )


def run_record(
    config: RunConfig,
    model: StoredModel,
    summary: RunSummary,
    started: datetime,
    produced_by: Producer | None = None,
) -> RunRecord:
    """The run's run.json; ``produced_by`` is the last run that made rows (the other keys are this run's own)."""
    shard = None
    if config.shard:
        shard = ShardInfo(k=config.shard.k, n=config.shard.n, discovered=summary.discovered)
    return RunRecord(
        tables_version=TABLES_VERSION,
        started=started.isoformat(timespec="seconds"),
        finished=_now(),
        versions=versions(),
        model=model_record(model),
        backend=summary.backend,
        backend_reason=summary.backend_reason,
        precision=summary.precision,
        args=config.args(),
        input_roots=tuple(os.path.abspath(p) for p in config.inputs),
        workers_used=summary.workers_used,
        counts=summary.counts(),
        timings_s={k: round(v, 4) for k, v in summary.timings.items()},
        wall_s=round(summary.wall_s, 4),
        images_per_s=round(summary.images_per_s, 3),
        exit_code=summary.exit_code,
        warnings=tuple(summary.warnings),
        produced_by=produced_by,
        shard=shard,
    )
