"""After training: features and logits through the inference path's own preprocessing, then temperature
scaling, out-of-distribution statistics and flag thresholds fitted on calibration (never test) images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from allscan.io.images import ImageReadError, decode_image
from allscan.models.card import InputSpec
from allscan.pipeline.colour import colour_statistics as raw_colour_statistics
from allscan.pipeline.model_input import model_inputs
from allscan.pipeline.segment import SegmentParams, segment
from allscan.runtime.softmax import softmax
from allscan.train.data import Sample
from allscan.train.ood import OodScore, colour_statistics, fit_gaussian, min_mahalanobis

MAX_FLAG_RATE = 0.05


@dataclass
class Forwarded:
    """Per view: logits, pooled features, colour statistics; per image: label, index of its views, n_cells."""

    logits: np.ndarray
    pooled: np.ndarray
    colour: np.ndarray
    view_image: np.ndarray
    labels: np.ndarray
    n_cells: np.ndarray


@torch.no_grad()
def forward_samples(
    net: nn.Module, samples: list[Sample], spec: InputSpec, params: SegmentParams, batch_size: int = 64
) -> Forwarded:
    net.eval()
    pending: list[np.ndarray] = []
    pending_colour: list[np.ndarray] = []
    owners: list[int] = []
    labels, n_cells = [], []
    out_logits, out_pooled, out_colour = [], [], []

    def flush() -> None:
        if not pending:
            return
        x = torch.from_numpy(np.concatenate(pending))
        logits, _, pooled = net(x)
        out_logits.append(logits.numpy())
        out_pooled.append(pooled.numpy())
        if spec.colour == "rgb":  # the graph's own colour statistics of what the network sees (first release)
            out_colour.append(colour_statistics(x, spec.mean, spec.std, spec.mask_fill, spec.mode == "masked").numpy())
        else:  # colour-free input: the raw image's LAB statistics, as the pipeline computes them
            out_colour.append(np.stack(pending_colour).astype(np.float32))
            pending_colour.clear()
        pending.clear()

    for i, sample in enumerate(samples):
        try:
            bgr = decode_image(sample.path).bgr
        except ImageReadError:
            labels.append(sample.label)
            n_cells.append(-1)
            continue
        seg = segment(bgr, params)
        x = model_inputs(bgr, seg, spec)
        pending.append(x)
        pending_colour += [raw_colour_statistics(bgr)] * len(x)
        owners += [i] * len(x)
        labels.append(sample.label)
        n_cells.append(len(seg.cells))
        if sum(len(p) for p in pending) >= batch_size:
            flush()
    flush()
    return Forwarded(
        logits=np.concatenate(out_logits),
        pooled=np.concatenate(out_pooled),
        colour=np.concatenate(out_colour),
        view_image=np.asarray(owners),
        labels=np.asarray(labels),
        n_cells=np.asarray(n_cells),
    )


def image_probabilities(logits: np.ndarray, view_image: np.ndarray, n_images: int, temperature: float):
    """Per-image probabilities: softmax(logits / T), averaged over an image's views (cells mode)."""
    p = softmax(logits, temperature)
    out = np.full((n_images, logits.shape[1]), np.nan)
    for i in range(n_images):
        rows = p[view_image == i]
        if len(rows):
            out[i] = rows.mean(0)
    return out


def fit_temperature(logits: np.ndarray, view_image: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising image-level negative log-likelihood (a 1-D search is enough)."""
    best_t, best_nll = 1.0, np.inf
    for t in np.exp(np.linspace(np.log(0.3), np.log(5.0), 120)):
        p = image_probabilities(logits, view_image, len(labels), float(t))
        ok = ~np.isnan(p[:, 0])
        nll = -np.mean(np.log(np.clip(p[ok, labels[ok]], 1e-12, None)))
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t


def per_image_max(values: np.ndarray, view_image: np.ndarray, n_images: int) -> np.ndarray:
    out = np.full(n_images, np.nan)
    for i in range(n_images):
        rows = values[view_image == i]
        if len(rows):
            out[i] = rows.max()
    return out


@dataclass
class Calibration:
    temperature: float
    ood_module: OodScore
    ood_threshold: float
    low_confidence: float
    calib_flag_rate: float
    calib_accuracy: float


def calibrate(spec: InputSpec, train: Forwarded, calib: Forwarded) -> Calibration:
    feat_means, feat_prec = fit_gaussian(train.pooled, train.labels[train.view_image])
    col_means, col_prec = fit_gaussian(train.colour, None)

    def distances(f: Forwarded) -> tuple[np.ndarray, np.ndarray]:
        d_feat = min_mahalanobis(
            torch.from_numpy(f.pooled), torch.from_numpy(feat_means), torch.from_numpy(feat_prec)
        ).numpy()
        d_col = min_mahalanobis(
            torch.from_numpy(f.colour), torch.from_numpy(col_means), torch.from_numpy(col_prec)
        ).numpy()
        return d_feat, d_col

    cf, cc = distances(calib)
    module = OodScore(
        spec,
        feat_means,
        feat_prec,
        col_means,
        col_prec,
        float(np.quantile(cf, 0.95)),
        float(np.quantile(cc, 0.95)),
        colour_in_graph=spec.colour == "rgb",
    )
    n = len(calib.labels)
    ood_view = np.maximum(cf / module.feat_scale, cc / module.col_scale)
    ood = per_image_max(ood_view, calib.view_image, n)
    temperature = fit_temperature(calib.logits, calib.view_image, calib.labels)
    probs = image_probabilities(calib.logits, calib.view_image, n, temperature)
    ok = ~np.isnan(probs[:, 0])
    conf = np.where(ok, np.nanmax(np.nan_to_num(probs, nan=0.0), axis=1), 0.0)
    no_cells = calib.n_cells == 0
    # The OOD cut keeps 97 % of calibration images; the confidence cut is the highest that keeps the total flag
    # rate (no_cells + out_of_distribution + low_confidence) within 5 %.
    ood_threshold = float(np.nanquantile(ood, 0.97))
    low_conf = 0.0
    for candidate in np.round(np.arange(0.80, 0.29, -0.05), 2):
        rate = float(np.mean(no_cells | (ood > ood_threshold) | (conf < candidate)))
        if rate <= MAX_FLAG_RATE:
            low_conf = float(candidate)
            break
    rate = float(np.mean(no_cells | (ood > ood_threshold) | (conf < low_conf)))
    accuracy = float(np.mean(np.nanargmax(np.nan_to_num(probs[ok], nan=-1), axis=1) == calib.labels[ok]))
    return Calibration(temperature, module, ood_threshold, low_conf, rate, accuracy)


def raw_colour_gaussian(cal: Calibration) -> dict | None:
    """The card's ``flags.colour`` for a colour-free model: the raw-colour distance the pipeline adds to the graph's
    feature distance (the network never sees the colour, the flag does). None where the graph has it."""
    module = cal.ood_module
    if module.colour_in_graph:
        return None
    return {
        "statistics": "LAB mean and std of the raw image (allscan.pipeline.colour.colour_statistics)",
        "means": module.col_means.numpy().astype(float).round(6).tolist(),
        "precision": module.col_precision.numpy().astype(float).tolist(),
        "scale": round(module.col_scale, 6),
    }
