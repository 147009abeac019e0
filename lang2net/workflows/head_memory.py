"""The head memory during meta-training: filled from the training classes when a run starts, its mix chosen on the
validation classes when it ends (see ``heads.HeadGenerator``, ``AdapterConfig.memory`` and
``AdapterConfig.classifier_memory``, whose rows come from the backbone's ImageNet classifier).

Axis legend: n images, f pooled-feature width, m memory entries (training classes), e text width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..backbones import imagenet_classifier
from ..heads import HeadGenerator

__all__ = [
    "CLASSIFIER_GATES",
    "MEMORY_BETAS",
    "MEMORY_GATES",
    "calibrate_memory",
    "fill_classifier_memory",
    "fill_memory",
]

MEMORY_GATES = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)  # mixes tried on the validation classes after training
MEMORY_BETAS = (5.0, 10.0, 20.0, 40.0)
CLASSIFIER_GATES = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # with a classifier memory, each of these too


def fill_memory(head: HeadGenerator, keys: Tensor, features: Tensor, labels: Tensor, seen: Sequence[int]) -> int:
    """Hold one entry per training class and switch the recall off for training (a warm start may bring a mix).

    Args:
        keys: (m, e) the classes' embeddings as inference computes them, in ``seen`` order.
        features: (n, f) pooled features of their images under the frozen backbone.
        labels: (n,) each image's class (global index, one of ``seen``).
        seen: the training classes.

    Returns:
        m, the memory's size (for ``AdapterConfig.memory_size``).
    """
    seen = torch.as_tensor(list(seen))
    if not bool(torch.isin(labels, seen).all()):
        raise ValueError("every memory image must belong to a training class")
    head.set_memory(keys, features, (labels[:, None] == seen).int().argmax(1))
    head.set_memory_mix(0.0, float(head.memory_beta))
    return len(seen)


def fill_classifier_memory(head: HeadGenerator, backbone: torch.nn.Module, encoder: Any) -> int:
    """Hold the backbone's 1000 ImageNet classifier rows, keyed by ``encoder``'s embeddings of their label
    descriptions (see :func:`lang2net.backbones.imagenet_classifier`); its gate stays 0 until the mix is chosen.

    Returns:
        k, the memory's size (for ``AdapterConfig.classifier_memory_size``).
    """
    classifier, labels = imagenet_classifier(backbone)
    head.set_classifier_memory(encoder.encode(labels).float().cpu(), classifier.weight.detach().float().cpu())
    head.classifier_gate.zero_()
    return len(labels)


def calibrate_memory(
    head: HeadGenerator, validation_top1: Callable[[], float | None], fixed: Sequence[float] | None = None
) -> dict[str, float | None]:
    """Choose the mix (gate, beta[, classifier gate]) with the best ``validation_top1()`` over the grid MEMORY_GATES x
    MEMORY_BETAS (x CLASSIFIER_GATES with a classifier memory; only gate 0 without a training-class memory), the first
    best in sorted order (the smallest gate, then beta, then classifier gate, reaching it), and set it; with ``fixed``
    = (gate, beta[, classifier gate]) set that mix instead (a refit run, which has no validation classes, takes its
    selection run's).

    Returns:
        The chosen ``memory_gate`` and ``memory_beta`` (and ``classifier_gate``), their ``val_top1``, and
        ``without_memory`` (every gate 0); with ``fixed``, the scores are those ``validation_top1()`` gives (None
        without validation classes).
    """
    extra = head.classifier_memory
    if fixed is not None:
        if len(fixed) != 2 + extra:
            names = "[gate, beta, classifier_gate]" if extra else "[gate, beta]"
            raise ValueError(f"a fixed memory mix for this head is {names}, got {list(fixed)!r}")
        mix = tuple(float(v) for v in fixed)
        head.set_memory_mix(0.0, mix[1])
        without = validation_top1()
        head.set_memory_mix(*mix)
        return {**_named(mix), "val_top1": validation_top1(), "without_memory": without}
    scores = {}
    gates = MEMORY_GATES if head.memory else (0.0,)
    for beta in MEMORY_BETAS:
        for gate in gates:
            for classifier_gate in CLASSIFIER_GATES if extra else (0.0,):
                if gate or classifier_gate or beta == MEMORY_BETAS[0]:  # no recall at all: one beta is enough
                    head.set_memory_mix(gate, beta, classifier_gate)
                    scores[(gate, beta, classifier_gate)[: 2 + extra]] = validation_top1()
    mix, score = max(sorted(scores.items()), key=lambda kv: kv[1])
    head.set_memory_mix(*mix)
    without = scores[(0.0, MEMORY_BETAS[0], 0.0)[: 2 + extra]]
    return {**_named(mix), "val_top1": score, "without_memory": without}


def _named(mix: Sequence[float]) -> dict[str, float]:
    return dict(zip(("memory_gate", "memory_beta", "classifier_gate"), mix, strict=False))
