"""Knowledge distillation from a stored model (``allscan train --teacher NAME``).

The teacher is the exported ``model.onnx`` of a model in the store, run by the same ONNX Runtime runner as
``allscan run``: any shipped CNN can teach, with no torch checkpoint needed. The student learns from the teacher's
soft logits on the very augmented batch it sees (Hinton et al., 2015; DeiT's soft distillation): a ViT trained
from scratch on 2,400 images learns far faster with a CNN's answers than with labels alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from allscan.models.card import InputSpec
from allscan.models.store import load_model
from allscan.runtime.onnxrt import OnnxRuntimeRunner


@dataclass
class Teacher:
    name: str
    model_id: str
    runner: OnnxRuntimeRunner

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        out = self.runner.infer(np.ascontiguousarray(x.detach().numpy(), dtype=np.float32))
        return torch.from_numpy(out["logits"])


def load_teacher(name: str, spec: InputSpec, classes: tuple[str, ...], root: Path, threads: int | None) -> Teacher:
    """The stored model ``name`` as a teacher; refuses one that sees another input or knows other classes."""
    model = load_model(name, root)
    card = model.card
    if tuple(card.classes) != tuple(classes):
        raise ValueError(f"teacher {name!r} has classes {card.classes}, the data {classes}")
    theirs = (card.input.size, card.input.mode, card.input.colour, card.input.colour_order, card.input.mean)
    ours = (spec.size, spec.mode, spec.colour, spec.colour_order, spec.mean)
    if theirs != ours or tuple(card.input.std) != tuple(spec.std):
        raise ValueError(
            f"teacher {name!r} sees another input (size, mode, colour, order, mean: {theirs}; student: {ours}); "
            "train the student with the teacher's --size/--mode/--colour"
        )
    runner = OnnxRuntimeRunner(model.onnx_path, threads=threads)
    runner.activate()
    return Teacher(name=name, model_id=card.model_id, runner=runner)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened logits, times T^2 so its gradient scale does not depend on T."""
    t = float(temperature)
    return F.kl_div(
        F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), reduction="batchmean", log_target=True
    ) * (t * t)
