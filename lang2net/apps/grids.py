"""The demo's picture: a grid of images titled with predictions, confidences and an overall title."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..utils.atomic import write_atomic

__all__ = ["prediction_grid"]


def prediction_grid(
    images: torch.Tensor,
    predicted: Sequence[str],
    truth: Sequence[str | None],
    path: Path,
    *,
    confidences: Sequence[float] | None = None,
    title: str | None = None,
) -> Path:
    """A PNG grid of images titled with the prediction and its confidence (green when right, red when wrong, black
    when unknown), under an overall ``title`` (e.g. the accuracy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    cols = min(6, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    confidences = confidences if confidences is not None else [None] * n
    for ax, image, pred, true, conf in zip(axes.flat, images, predicted, truth, confidences, strict=False):
        ax.imshow(image.numpy(), cmap="gray" if image.ndim == 2 else None)
        color = "black" if true is None else ("green" if pred == true else "red")
        shown = pred if conf is None else f"{pred} ({100 * conf:.0f}%)"
        ax.set_title(shown if true is None or pred == true else f"{shown}\n(is {true})", fontsize=8, color=color)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path
