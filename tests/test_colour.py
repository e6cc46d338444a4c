"""The colour-free model input: one transform shared by training and ``allscan run``, invariant to a stain swap;
the raw-colour flag; the tail split."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from allscan.io.images import decode_image
from allscan.models.card import COLOUR_MODES as CARD_COLOUR_MODES
from allscan.models.card import FlagThresholds, InputSpec, ModelCard
from allscan.pipeline.colour import (
    COLOUR_MODES,
    apply_colour,
    colour_distance,
    colour_statistics,
    normalised_lightness,
    reinhard_transfer,
)
from allscan.pipeline.flags import Flag, predict
from allscan.pipeline.model_input import model_inputs
from allscan.pipeline.segment import SegmentParams, segment

REPO = Path(__file__).resolve().parents[1]
SAMPLES = sorted((REPO / "sample_images").rglob("*.jpg"))


def _sample(i: int) -> np.ndarray:
    return decode_image(SAMPLES[i]).bgr


def test_colour_modes_agree_and_are_checked() -> None:
    assert CARD_COLOUR_MODES == COLOUR_MODES
    with pytest.raises(ValueError, match="input.colour"):
        InputSpec(colour="hue")
    with pytest.raises(ValueError, match="input.colour"):
        apply_colour(_sample(0), "hue")


def test_lightness_ignores_brightness_contrast_and_stain() -> None:
    bgr = _sample(0)
    base = normalised_lightness(bgr).astype(np.float32)
    assert 120 <= base.mean() <= 136 and 30 <= base.std() <= 50  # z-scored: centre 128, spread 40
    dimmer = cv2.convertScaleAbs(bgr, alpha=0.8, beta=10)
    assert np.abs(normalised_lightness(dimmer) - base).mean() < 3.0
    for donor in (1, 5, 9):  # another image's stain (Reinhard): the lightness view barely moves
        swapped = reinhard_transfer(bgr, colour_statistics(_sample(donor)))
        assert np.abs(normalised_lightness(swapped) - base).mean() < 4.0
        assert np.abs(swapped.astype(np.float32) - bgr).mean() > 2.0  # while the colours did change
    grey = apply_colour(bgr, "lightness")
    assert grey.shape == bgr.shape and np.array_equal(grey[:, :, 0], grey[:, :, 2])
    assert apply_colour(bgr, "rgb") is bgr


def test_reinhard_transfer_takes_the_target_statistics() -> None:
    bgr, donor = _sample(2), _sample(7)
    target = colour_statistics(donor)
    moved = colour_statistics(reinhard_transfer(bgr, target))
    np.testing.assert_allclose(moved[:3], target[:3], atol=1.5)  # LAB means (clipping and 8 bits allow a little)
    np.testing.assert_allclose(moved[3:], target[3:], rtol=0.1, atol=1.0)


def test_training_batch_equals_inference_input() -> None:
    """What is trained is what runs: an unaugmented training batch is the pipeline's tensor, bit for bit."""
    torch = pytest.importorskip("torch")
    from allscan.train.data import Sample, cache_views
    from allscan.train.loop import batch_tensor
    from allscan.train.pipeline import colour_input

    spec = colour_input(224, "full", "lightness")
    samples = [Sample(path, 0, i) for i, path in enumerate(SAMPLES[:4])]
    views = cache_views(samples, spec, SegmentParams())
    trained = batch_tensor(views, np.arange(4), spec, None, 0.0).numpy()
    for i, path in enumerate(SAMPLES[:4]):
        bgr = decode_image(path).bgr
        run = model_inputs(bgr, segment(bgr, SegmentParams()), spec)[0]
        np.testing.assert_allclose(trained[i], run, atol=1e-5)
    assert torch.is_tensor(batch_tensor(views, np.arange(2), spec, np.random.default_rng(0), 0.0, 1.0))


def test_colour_flag_from_raw_statistics() -> None:
    """A colour-free model's card carries a raw-colour Gaussian: a foreign stain is flagged, the call unchanged."""
    stats = np.stack([colour_statistics(_sample(i)) for i in range(len(SAMPLES))])
    centred = stats - stats.mean(0)
    cov = centred.T @ centred / len(stats) + np.eye(6) * 1e-3
    gaussian = {"means": stats.mean(0, keepdims=True).tolist(), "precision": np.linalg.inv(cov).tolist(), "scale": 6}
    card = ModelCard(
        name="m",
        architecture="x",
        classes=("Benign", "Pro"),
        input=InputSpec(colour="lightness"),
        flags=FlagThresholds(ood=1.0, low_confidence=0.4, colour=gaussian),
    )
    logits = np.array([[2.0, 0.0]])
    foreign = cv2.cvtColor(cv2.cvtColor(_sample(0), cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)  # no stain at all
    home = predict(logits, np.array([0.2]), card, 3, colour_statistics(_sample(0)))
    away = predict(logits, np.array([0.2]), card, 3, colour_statistics(foreign))
    assert Flag.OUT_OF_DISTRIBUTION not in home.flags
    assert Flag.OUT_OF_DISTRIBUTION in away.flags and away.ood == pytest.approx(
        colour_distance(colour_statistics(foreign), gaussian)
    )
    assert home.label_index == away.label_index == 0
    legacy = dataclasses.replace(card, flags=FlagThresholds(ood=1.0, low_confidence=0.4))
    assert predict(logits, np.array([0.2]), legacy, 3, colour_statistics(foreign)).ood == pytest.approx(0.2)


def test_tail_split_holds_out_the_latest_numbers() -> None:
    from allscan.train.data import Sample, split_samples

    samples = [Sample(Path(f"{c}-{n}.jpg"), c, n) for c in range(2) for n in range(100)]
    parts = split_samples(samples, "tail", seed=3)
    for c in range(2):
        test = sorted(s.number for s in parts["test"] if s.label == c)
        assert test == list(range(88, 100))
        rest = [s.number for part in ("train", "calib") for s in parts[part] if s.label == c]
        assert sorted(rest) == list(range(88)) and max(rest) < min(test)
    assert parts["calib"] and parts["train"]
    with pytest.raises(ValueError, match="blocked, tail, random"):
        split_samples(samples, "latest", seed=0)
