"""ZSL / GZSL metrics on score matrices: per-class top-k, GZSL seen/unseen/H, bootstrap intervals, McNemar's test.

Also the input checks the classic baselines in ``zsl.py`` share. Pure functions on tensors; no lang2net imports.
"""

# Axis legend: n images, c classes (columns of a score matrix), m classes with at least one image, k top-k.

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["bootstrap_ci", "gzsl_metrics", "harmonic_mean", "mcnemar", "per_class_topk", "seen_unseen_curve"]


# input checks


def _shape(t: Tensor) -> str:
    return str(tuple(t.shape))


def _check_matrix(t: Tensor, name: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {_shape(t)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    return t


def _check_labels(labels: Tensor, n: int, c: int) -> Tensor:
    if not isinstance(labels, Tensor):
        raise ValueError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},) to match {n} rows, got shape {_shape(labels)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if n == 0:
        raise ValueError("labels is empty: need at least one sample")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= c:
        raise ValueError(f"labels must lie in [0, {c}) for {c} classes, got values in [{lo}, {hi}]")
    return labels.long()


def _check_reg(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def _check_mask(seen_mask: Tensor, c: int) -> Tensor:
    if not isinstance(seen_mask, Tensor):
        raise ValueError(f"seen_mask must be a torch.Tensor, got {type(seen_mask).__name__}")
    if seen_mask.shape != (c,):
        raise ValueError(f"seen_mask must have shape ({c},) to match {c} classes, got shape {_shape(seen_mask)}")
    if seen_mask.dtype != torch.bool and not bool(((seen_mask == 0) | (seen_mask == 1)).all()):
        raise ValueError(f"seen_mask must be bool or 0/1, got dtype {seen_mask.dtype} with other values")
    return seen_mask.bool()


def _check_scores_labels(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    scores = _check_matrix(scores, "scores")
    return scores, _check_labels(labels, scores.shape[0], scores.shape[1])


def _check_fit_inputs(features: Tensor, labels: Tensor, class_embeddings: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    features = _check_matrix(features, "features")
    class_embeddings = _check_matrix(class_embeddings, "class_embeddings")
    labels = _check_labels(labels, features.shape[0], class_embeddings.shape[0])
    if labels.device != features.device or class_embeddings.device != features.device:
        raise ValueError(
            f"features, labels and class_embeddings must share a device, got {features.device}, {labels.device} "
            f"and {class_embeddings.device}"
        )
    return features, labels, class_embeddings


def _solve(a: Tensor, b: Tensor, what: str) -> Tensor:
    try:
        return torch.linalg.solve(a, b)
    except torch.linalg.LinAlgError as err:  # singular system: only possible with a zero regulariser
        raise ValueError(f"{what} is singular; use a regulariser > 0 ({err})") from err


def _check_gzsl_split(scores: Tensor, labels: Tensor, seen_mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Scores, labels, the (c,) seen mask and the (n,) per-image seen flags of a GZSL problem with both sides."""
    scores, labels = _check_scores_labels(scores, labels)
    mask = _check_mask(seen_mask, scores.shape[1]).to(scores.device)
    if bool(mask.all()) or not bool(mask.any()):
        raise ValueError(f"seen_mask must mark at least one seen and one unseen class, got {int(mask.sum())} seen")
    image_seen = mask[labels]
    if bool(image_seen.all()) or not bool(image_seen.any()):
        raise ValueError(f"labels must include seen and unseen classes, got {int(image_seen.sum())}/{len(labels)} seen")
    return scores, labels, mask, image_seen


def _per_class_mean(values: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Mean of ``values`` (n,) within each class present in ``labels``: returns (classes (m,), means (m,) float64)."""
    classes, inverse = torch.unique(labels, return_inverse=True)
    sums = torch.zeros(len(classes), dtype=torch.float64, device=values.device)
    sums.index_add_(0, inverse, values.to(torch.float64))
    counts = torch.bincount(inverse, minlength=len(classes)).to(torch.float64)
    return classes, sums / counts


def _as_1d_numpy(values: Any, name: str) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


# metrics


def per_class_topk(scores: Tensor, labels: Tensor, k: int | Sequence[int] = (1, 5)) -> dict[str, Any]:
    """Per-class mean top-k accuracy over the classes that have images.

    An image is a top-k hit when at most ``k`` classes (its own included) score >= its true class, so a tie with the
    true class counts against it (a constant score matrix gets 0 for ``k < c``). ``k >= c`` is always a hit.

    Args:
        scores: (n, c) scores.
        labels: (n,) true classes.
        k: one or several cut-offs >= 1.

    Returns:
        ``{"top{k}": float mean over classes, "per_class_top{k}": (m,) float64 per-class hit rates, ...,
        "classes": (m,) the class ids, in the order of the per-class vectors}``.
    """
    scores, labels = _check_scores_labels(scores, labels)
    ks = [k] if isinstance(k, int) else list(k)
    if not ks or any(not isinstance(ki, int) or isinstance(ki, bool) or ki < 1 for ki in ks):
        raise ValueError(f"k must be one or more integers >= 1, got {k}")
    true_score = scores.gather(1, labels[:, None])  # (n, 1)
    rank = (scores >= true_score).sum(1)  # (n,) 1-based rank of the true class, ties counted against it
    out: dict[str, Any] = {}
    for ki in ks:
        classes, per_class = _per_class_mean((rank <= ki).double(), labels)
        out[f"top{ki}"] = float(per_class.mean())
        out[f"per_class_top{ki}"] = per_class
        out["classes"] = classes
    return out


def harmonic_mean(a: float, b: float) -> float:
    """Harmonic mean ``2ab / (a + b)`` of two accuracies; 0 when both are 0, NaN if either is NaN."""
    a, b = float(a), float(b)
    if a < 0 or b < 0:
        raise ValueError(f"harmonic_mean needs values >= 0, got {a} and {b}")
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def gzsl_metrics(scores: Tensor, labels: Tensor, seen_mask: Tensor) -> dict[str, float]:
    """Generalised zero-shot accuracy: predict among all classes, average per class within seen and unseen images.

    Args:
        scores: (n, c) scores over all classes; the prediction is the argmax (first index on ties).
        labels: (n,) true classes.
        seen_mask: (c,) True for seen classes.

    Returns:
        ``{"seen": per-class mean accuracy over classes of seen images, "unseen": same for unseen, "h": their
        harmonic mean}``; a side with no images is NaN, and then so is ``h``.
    """
    scores, labels = _check_scores_labels(scores, labels)
    mask = _check_mask(seen_mask, scores.shape[1]).to(scores.device)
    correct = scores.argmax(1) == labels  # (n,)
    classes, per_class = _per_class_mean(correct, labels)  # (m,), (m,)
    class_seen = mask[classes]
    seen = float(per_class[class_seen].mean()) if bool(class_seen.any()) else math.nan
    unseen = float(per_class[~class_seen].mean()) if bool((~class_seen).any()) else math.nan
    return {"seen": seen, "unseen": unseen, "h": harmonic_mean(seen, unseen)}


def seen_unseen_curve(scores: Tensor, labels: Tensor, seen_mask: Tensor) -> dict[str, Any]:
    """The seen-unseen accuracy curve of calibrated stacking over every ``gamma``, and the area under it (AUSUC,
    Chao et al., ECCV 2016): a GZSL summary that needs no calibration data.

    Subtracting ``gamma`` from the seen classes' scores sends an image to its best unseen class once ``gamma`` passes
    its gap ``max seen score - max unseen score``; sweeping ``gamma`` from -inf to +inf flips images in order of
    their gaps, so the curve is exact: one point per distinct gap, plus both ends. Accuracies are per-class means
    within the seen and the unseen images, as in :func:`gzsl_metrics`.

    Args:
        scores: (n, c) scores over all classes.
        labels: (n,) true classes; images of both seen and unseen classes.
        seen_mask: (c,) True for seen classes; at least one of each.

    Returns:
        ``{"unseen": (p,) float64 non-decreasing, "seen": (p,) float64 non-increasing, "ausuc": area under seen
        accuracy as a function of unseen accuracy}``; the first point is ``gamma = -inf`` (everything predicted
        seen), the last ``gamma = +inf``.
    """
    scores, labels, mask, image_seen = _check_gzsl_split(scores, labels, seen_mask)
    s = scores.detach().to(torch.float64)
    seen_cols, unseen_cols = torch.nonzero(mask).flatten(), torch.nonzero(~mask).flatten()
    top_seen, arg_seen = s[:, seen_cols].max(1)
    top_unseen, arg_unseen = s[:, unseen_cols].max(1)
    gap = top_seen - top_unseen  # (n,)
    hit_seen = (seen_cols[arg_seen] == labels).double()  # right when predicted seen
    hit_unseen = (unseen_cols[arg_unseen] == labels).double()  # right when predicted unseen
    classes, inverse = torch.unique(labels, return_inverse=True)
    counts = torch.bincount(inverse).double()
    n_side = torch.tensor([int((~mask[classes]).sum()), int(mask[classes].sum())], dtype=torch.float64)
    weight = 1.0 / (counts[inverse] * n_side[image_seen.long()].to(s.device))  # (n,): per-class mean on each side
    order = torch.argsort(gap)
    g = gap[order]
    flip_seen = torch.cumsum((weight * hit_seen * image_seen)[order], 0)  # seen accuracy lost as images flip
    gain_unseen = torch.cumsum((weight * hit_unseen * ~image_seen)[order], 0)
    last = torch.ones_like(g, dtype=torch.bool)  # keep the last image of each group of equal gaps: they flip together
    last[:-1] = g[1:] != g[:-1]
    start = float((weight * hit_seen * image_seen).sum())
    zero = torch.zeros(1, dtype=torch.float64, device=s.device)
    seen = torch.cat([zero + start, start - flip_seen[last]]).cpu().numpy()
    unseen = torch.cat([zero, gain_unseen[last]]).cpu().numpy()
    area = float(np.sum((unseen[1:] - unseen[:-1]) * (seen[1:] + seen[:-1]) / 2))  # trapezoids
    return {"unseen": unseen, "seen": seen, "ausuc": area}


def bootstrap_ci(
    per_class_values: Tensor | np.ndarray | Sequence[float], n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean over classes (classes resampled with replacement).

    Args:
        per_class_values: (m,) one value per class, e.g. ``per_class_top1`` from :func:`per_class_topk`.
        n_boot: number of resamples.
        alpha: 1 − confidence level, in (0, 1).
        seed: seed of the numpy generator; equal seeds give equal intervals.

    Returns:
        ``(low, high)``: the ``alpha/2`` and ``1 − alpha/2`` quantiles of the resampled means.
    """
    values = _as_1d_numpy(per_class_values, "per_class_values").astype(np.float64)
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError(f"per_class_values must be non-empty and finite, got {values.size} values")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_boot, values.size))  # (b, m)
    means = values[idx].mean(1)  # (b,)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def mcnemar(
    correct_a: Tensor | np.ndarray | Sequence[bool],
    correct_b: Tensor | np.ndarray | Sequence[bool],
    exact_max: int = 100,
) -> float:
    """Two-sided McNemar test on paired per-image correctness of two classifiers.

    With ``b`` images only A gets right and ``c`` only B gets right, the exact p-value is
    ``min(1, 2 · Σ_{i<=min(b,c)} C(b+c, i) / 2^(b+c))``; above ``exact_max`` discordant pairs the normal
    approximation with continuity correction, ``erfc(max(|b − c| − 1, 0) / sqrt(2(b + c)))``, is used instead.

    Args:
        correct_a: (n,) bool (or 0/1) correctness of classifier A.
        correct_b: (n,) same for classifier B, on the same images.
        exact_max: largest discordant count that uses the exact binomial test.

    Returns:
        The p-value; 1.0 when there are no discordant pairs.
    """
    a = _as_1d_numpy(correct_a, "correct_a")
    b = _as_1d_numpy(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"correct_a and correct_b must have the same shape, got {a.shape} and {b.shape}")
    for name, arr in (("correct_a", a), ("correct_b", b)):
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must hold bools or 0/1, got values {np.unique(arr)[:5].tolist()}")
    a, b = a.astype(bool), b.astype(bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    if n == 0:
        return 1.0
    if n <= exact_max:
        tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1))
        return min(1.0, 2 * tail / 2**n)
    z = max(abs(only_a - only_b) - 1, 0) / math.sqrt(n)
    return math.erfc(z / math.sqrt(2))
