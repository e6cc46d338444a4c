"""From network outputs to an image's call: probabilities, label, and the flags that say "do not trust this".

A model trained on one lab's smears answers confidently on anything; the flags are how allscan admits it. They
are computed here, once, from the card's thresholds, so the tables, the slide rule and the heatmap choice
agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from allscan.io.records import benign_class
from allscan.io.tables import Flag
from allscan.models.card import ModelCard
from allscan.pipeline.colour import colour_distance
from allscan.runtime.softmax import softmax

__all__ = ["Flag", "Prediction", "benign_class", "predict", "softmax", "wants_heatmap"]


@dataclass(frozen=True)
class Prediction:
    """One image's call."""

    probs: np.ndarray  # [C] float64, sums to 1
    label_index: int
    ood: float | None
    flags: tuple[Flag, ...]

    @property
    def confidence(self) -> float:
        return float(self.probs[self.label_index])


def predict(
    logits: np.ndarray, ood: np.ndarray | None, card: ModelCard, n_cells: int, colour: np.ndarray | None = None
) -> Prediction:
    """Pool the rows of one image (1 row, or one per cell crop in 'cells' mode) into its call and flags.

    Cells mode: the image's probabilities are the mean of its cells' probabilities, and its ood score the
    maximum over its cells (one strange cell is enough to distrust the image). A colour-free model's card carries
    a raw-colour Gaussian: the image's colour distance (``colour``: its raw statistics) joins the score by maximum,
    so a foreign stain is flagged although the network never saw it.
    """
    probs = softmax(logits, card.temperature).mean(axis=0)
    label_index = int(np.argmax(probs))
    ood_value = float(np.max(ood)) if ood is not None and np.size(ood) else None
    if card.flags.colour is not None and colour is not None:
        distance = colour_distance(colour, card.flags.colour)
        ood_value = distance if ood_value is None else max(ood_value, distance)
    flags: list[Flag] = []
    if n_cells == 0:
        flags.append(Flag.NO_CELLS)
    if ood_value is not None and card.flags.ood is not None and ood_value > card.flags.ood:
        flags.append(Flag.OUT_OF_DISTRIBUTION)
    if float(probs[label_index]) < card.flags.low_confidence:
        flags.append(Flag.LOW_CONFIDENCE)
    return Prediction(probs=probs, label_index=label_index, ood=ood_value, flags=tuple(flags))


def wants_heatmap(mode: str, label: str, flags: tuple[Flag, ...], classes: tuple[str, ...]) -> bool:
    """``--heatmaps``: all, none, or flagged = a non-Benign call or any flag."""
    if mode == "all":
        return True
    if mode == "none":
        return False
    return label != benign_class(classes) or bool(flags)
