"""Does a model's ONNX graph say what its card says? Checked once when a run loads the model.

The card's hash only proves the ONNX file is the one the card was written for; a card edited by hand (a class
dropped, outputs renamed) or another model's ONNX copied in with the hash recomputed passes that check and would
end in a traceback deep in the first batch, or worse, in tables whose columns name the wrong classes. The graph's
declared inputs and outputs (ONNX Runtime's session metadata, no inference) are compared with the card before any
image is read; every mismatch is one line naming the model folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from allscan.models.card import ModelCard
from allscan.models.store import ModelStoreError, StoredModel

REQUIRED_OUTPUTS = ("logits", "cam")  # kept equal to allscan.runtime.base.REQUIRED_OUTPUTS (tested)


def card_problems(card: ModelCard) -> list[str]:
    """What is wrong with the card on its own (no ONNX needed)."""
    problems = []
    if not card.classes:
        problems.append("card.json lists no classes")
    elif len(set(card.classes)) != len(card.classes):
        problems.append(f"card.json lists a class twice ({', '.join(card.classes)})")
    missing = [name for name in REQUIRED_OUTPUTS if name not in card.outputs]
    if missing:
        problems.append(f"card.json outputs lack {', '.join(missing)}")
    return problems


def _dim(shape: Sequence[Any], axis: int) -> int | None:
    """A fixed dimension of a declared shape, or None when it is symbolic or absent."""
    if axis >= len(shape):
        return None
    value = shape[axis]
    return value if isinstance(value, int) and value > 0 else None


def graph_problems(card: ModelCard, inputs: dict[str, Sequence[Any]], outputs: dict[str, Sequence[Any]]) -> list[str]:
    """Mismatches between the card and the graph's declared input and output shapes (name -> shape)."""
    problems = []
    absent = [name for name in card.outputs if name not in outputs]
    if absent:
        problems.append(f"the ONNX has no output {', '.join(absent)} (it has {', '.join(outputs) or 'none'})")
    n_classes = len(card.classes)
    for name, rank in (("logits", 2), ("cam", 4)):
        shape = outputs.get(name)
        if shape is None:
            continue
        if len(shape) != rank:
            problems.append(f"the ONNX's {name} has {len(shape)} dimensions, not {rank}")
        elif _dim(shape, 1) not in (None, n_classes):
            problems.append(f"card.json lists {n_classes} classes, the ONNX's {name} has {_dim(shape, 1)}")
    if len(inputs) != 1:
        problems.append(f"the ONNX has {len(inputs)} inputs, not 1")
        return problems
    shape = next(iter(inputs.values()))
    size = card.input.size
    if len(shape) != 4:
        problems.append(f"the ONNX's input has {len(shape)} dimensions, not 4 ([N, 3, {size}, {size}])")
    elif _dim(shape, 1) not in (None, 3) or any(_dim(shape, a) not in (None, size) for a in (2, 3)):
        shown = "x".join(str(d) for d in shape[1:])
        problems.append(f"card.json input.size is {size}, the ONNX's input is {shown}")
    return problems


def _declared(model: StoredModel) -> tuple[dict[str, Sequence[Any]], dict[str, Sequence[Any]]]:
    """(inputs, outputs) as name -> declared shape, read by ONNX Runtime without optimising the graph."""
    from allscan.runtime.base import RunnerError
    from allscan.runtime.onnxrt import ort_session

    try:
        session = ort_session(model.onnx_path, threads=1, optimization="disable")
    except RunnerError as exc:
        cause = exc.__cause__ or exc
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise ModelStoreError(
            f"model folder {model.folder}: ONNX Runtime cannot load {model.card.onnx_file}: {first}"
        ) from None
    return (
        {i.name: list(i.shape) for i in session.get_inputs()},
        {o.name: list(o.shape) for o in session.get_outputs()},
    )


def check_model(model: StoredModel) -> None:
    """Raise :class:`ModelStoreError` (one line) when the card and its ONNX disagree."""
    problems = card_problems(model.card)
    if not problems:
        problems = graph_problems(model.card, *_declared(model))
    if problems:
        raise ModelStoreError(
            f"model folder {model.folder}: card.json does not match {model.card.onnx_file}: {'; '.join(problems)}"
        )
