"""The head memory during meta-training: filled from the training classes when a run starts, its mix chosen on the
validation classes when it ends (see ``heads.HeadGenerator`` and ``AdapterConfig.memory``).

Axis legend: n images, f pooled-feature width, m memory entries (training classes), e text width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..heads import HeadGenerator

__all__ = ["MEMORY_BETAS", "MEMORY_GATES", "calibrate_memory", "fill_memory"]

MEMORY_GATES = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)  # mixes tried on the validation classes after training
MEMORY_BETAS = (5.0, 10.0, 20.0, 40.0)


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


def calibrate_memory(
    head: HeadGenerator, validation_top1: Callable[[], float | None], fixed: Sequence[float] | None = None
) -> dict[str, float | None]:
    """Choose the mix (gate, beta) with the best ``validation_top1()`` over the grid MEMORY_GATES x MEMORY_BETAS (the
    first best in sorted order: the smallest gate, then beta, reaching it) and set it; with ``fixed`` = (gate, beta)
    set that mix instead (a refit run, which has no validation classes, takes its selection run's).

    Returns:
        The chosen ``memory_gate`` and ``memory_beta``, their ``val_top1``, and ``without_memory`` (gate 0); with
        ``fixed``, the scores are those ``validation_top1()`` gives (None without validation classes).
    """
    if fixed is not None:
        gate, beta = (float(v) for v in fixed)
        head.set_memory_mix(0.0, beta)
        without = validation_top1()
        head.set_memory_mix(gate, beta)
        return {"memory_gate": gate, "memory_beta": beta, "val_top1": validation_top1(), "without_memory": without}
    scores = {}
    for beta in MEMORY_BETAS:
        for gate in MEMORY_GATES:
            if gate or beta == MEMORY_BETAS[0]:  # gate 0 recalls nothing: one beta is enough
                head.set_memory_mix(gate, beta)
                scores[gate, beta] = validation_top1()
    (gate, beta), score = max(sorted(scores.items()), key=lambda kv: kv[1])
    head.set_memory_mix(gate, beta)
    return {"memory_gate": gate, "memory_beta": beta, "val_top1": score, "without_memory": scores[0.0, MEMORY_BETAS[0]]}
