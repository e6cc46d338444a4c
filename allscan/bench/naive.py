"""The research notebooks' way, as the baseline a lab would otherwise use.

One image at a time: PIL open, torchvision ``Resize -> ToTensor -> Normalize``, the same network in torch
eager at batch 1, softmax and argmax. The network is the model's architecture from ``allscan.train.archs``
with the card's options, and its checkpoint's weights when one is shipped (``checkpoints/last.pt``),
otherwise random weights: the speed is what is measured. torch gets 1 thread or as many as ONNX Runtime,
whichever is faster here, and denormal flushing on (random or lightly trained weights otherwise make eager CPU
inference up to 30x slower, see measurements.md), so the baseline is the notebooks at their best.

torch, torchvision and Pillow are optional (the light install has none of them): :func:`measure_naive` then
returns the reason it was skipped.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allscan.bench.stats import median, rate, timed
from allscan.models.store import StoredModel


@dataclass(frozen=True)
class NaiveResult:
    ips: float | None  # images per second, None when skipped
    skipped: str = ""  # why it was not measured
    weights: str = ""  # 'checkpoint' or 'random'
    threads: int = 0


def missing_dependency() -> str:
    """Empty when the baseline can run here, else the one-line reason it cannot."""
    for module, package in (("torch", "torch"), ("torchvision", "torchvision"), ("PIL", "pillow")):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed (pip install 'allscan[train]' pillow)"
    return ""


def build_network(model: StoredModel) -> tuple[Any, str]:
    """The card's architecture in torch eager, with the shipped checkpoint's weights when there is one."""
    import torch

    from allscan.train import archs

    card = model.card
    options = dict(((card.training or {}).get("config") or {}).get("arch_options") or {})
    torch.manual_seed(0)
    net = archs.build(card.architecture, len(card.classes), image_size=card.input.size, **options)
    checkpoint = model.folder / "checkpoints" / "last.pt"
    weights = "random"
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        net.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
        weights = "checkpoint"
    return net.eval(), weights


@dataclass(frozen=True)
class NotebookSetup:
    """What both notebook baselines start from: the eager network, where its weights came from, the transform."""

    net: Any
    weights: str  # 'checkpoint' or 'random'
    transform: Any  # torchvision Resize -> ToTensor -> Normalize at the card's size, mean and std


def notebook_setup(model: StoredModel) -> NotebookSetup | NaiveResult:
    """The notebooks' setup for ``model``, or the skipped result saying why it cannot be made here."""
    reason = missing_dependency()
    if reason:
        return NaiveResult(ips=None, skipped=reason)
    import torch
    from torchvision import transforms

    torch.set_flush_denormal(True)
    try:
        net, weights = build_network(model)
    except (ValueError, KeyError, RuntimeError) as exc:
        return NaiveResult(ips=None, skipped=f"no torch network for {model.card.architecture!r}: {exc}")
    spec = model.card.input
    transform = transforms.Compose(
        [
            transforms.Resize((spec.size, spec.size)),
            transforms.ToTensor(),
            transforms.Normalize(list(spec.mean), list(spec.std)),
        ]
    )
    return NotebookSetup(net, weights, transform)


def measure_naive(model: StoredModel, images: list[Path], max_threads: int, reps: int) -> NaiveResult:
    setup = notebook_setup(model)
    if isinstance(setup, NaiveResult):
        return setup
    import torch
    from PIL import Image

    net, weights, transform = setup.net, setup.weights, setup.transform

    def classify(path: Path) -> int:
        x = transform(Image.open(path).convert("RGB")).unsqueeze(0)
        with torch.no_grad():
            out = net(x)
        logits = out[0] if isinstance(out, tuple) else out
        return int(torch.softmax(logits, dim=1).argmax(dim=1).item())

    def one_rep(paths: list[Path]) -> None:
        for path in paths:
            classify(path)

    threads = fastest_threads(lambda: one_rep(images[:4]), max_threads)
    rates = [rate(len(images), timed(lambda: one_rep(images))[0]) for _ in range(reps)]
    return NaiveResult(ips=median(rates), weights=weights, threads=threads)


def fastest_threads(trial: Callable[[], None], max_threads: int) -> int:
    """Set torch to 1 or ``max_threads`` threads, whichever classifies faster here, and return it.

    Why: on a busy machine torch's OpenMP threads wait for each other at every barrier, and two threads can be
    fifty times slower than one; the baseline must be the notebooks at their best, not a victim of the load.
    """
    import torch

    best, best_s = 1, float("inf")
    for n in sorted({1, max(1, max_threads)}):
        torch.set_num_threads(n)
        trial()  # warm-up: first calls allocate
        seconds, _ = timed(trial)
        if seconds < best_s:
            best, best_s = n, seconds
    torch.set_num_threads(best)
    return best
