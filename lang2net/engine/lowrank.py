"""Low-rank weight deltas for Linear and Conv2d layers: the one delta definition behind hooks, folding and export.

A delta of rank ``r`` on a layer with weight ``W`` (out, in[, kh, kw]) is ``dW = scale * B @ A`` with ``A`` (r, in[, kh, kw])
and ``B`` (out, r): the layout of peft's ``lora_A`` / ``lora_B`` weights, so exporting is a renaming. With a leading
batch axis (``A`` (n, r, in, ...), ``B`` (n, out, r)) there is one delta per sample.

Axis legend used in shape comments:
    n   samples carrying their own delta (per-sample mode)
    k   extra items folded into the batch per sample (e.g. Swin windows), leading axis = n * k
    r   rank
    i   input features / channels
    o   output features / channels
    kh, kw  kernel height / width; p spatial positions
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

DeltaKind = Literal["linear", "conv2d"]

__all__ = ["LowRankDelta", "conv2d_delta", "delta_weight", "fold_weight", "linear_delta"]


# helpers


def _describe(t: Tensor) -> str:
    return f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')} on {t.device}"


# classes


@dataclass(frozen=True, eq=False)
class LowRankDelta:
    """A low-rank weight delta ``scale * B @ A`` for one Linear or Conv2d layer, optionally one per sample.

    Args:
        A: (r, in) for Linear, (r, in, kh, kw) for Conv2d; with a leading batch axis for one delta per sample.
        B: (out, r); (n, out, r) for one delta per sample.
        scale: multiplies ``B @ A`` (peft's ``lora_alpha / r``).
    """

    A: Tensor
    B: Tensor
    scale: float = 1.0

    def __post_init__(self) -> None:
        A, B = self.A, self.B
        if not isinstance(A, Tensor) or not isinstance(B, Tensor):
            raise TypeError(f"LowRankDelta needs tensors for A and B, got {type(A).__name__} and {type(B).__name__}")
        if B.ndim not in (2, 3):
            raise ValueError(f"B must be (out, r) or (n, out, r), got shape {tuple(B.shape)}")
        batched = B.ndim == 3
        if A.ndim - batched not in (2, 4):
            want = "(n, r, in) or (n, r, in, kh, kw)" if batched else "(r, in) or (r, in, kh, kw)"
            raise ValueError(f"A must be {want} to go with B of shape {tuple(B.shape)}, got shape {tuple(A.shape)}")
        if A.shape[batched] != B.shape[-1]:
            raise ValueError(
                f"rank mismatch: A {tuple(A.shape)} has rank {A.shape[batched]}, B {tuple(B.shape)} has {B.shape[-1]}"
            )
        if batched and A.shape[0] != B.shape[0]:
            raise ValueError(f"per-sample batch mismatch: A has {A.shape[0]} deltas, B has {B.shape[0]}")
        for label, t in (("A", A), ("B", B)):
            if not t.is_floating_point():
                raise TypeError(f"{label} must be a floating-point tensor, got {_describe(t)}")
        if A.dtype != B.dtype or A.device != B.device:
            raise ValueError(f"A and B must share dtype and device, got A {_describe(A)} and B {_describe(B)}")
        scale = float(self.scale)
        if not math.isfinite(scale):
            raise ValueError(f"scale must be finite, got {self.scale!r}")
        object.__setattr__(self, "scale", scale)

    # shape facts

    @property
    def batched(self) -> bool:
        """True when the delta carries one (A, B) pair per sample."""
        return self.B.ndim == 3

    @property
    def batch_size(self) -> int | None:
        return self.B.shape[0] if self.batched else None

    @property
    def rank(self) -> int:
        return self.B.shape[-1]

    @property
    def kind(self) -> DeltaKind:
        return "linear" if self.A.ndim - self.batched == 2 else "conv2d"

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """Shape of the layer weight this delta adds to: (out, in[, kh, kw])."""
        return (self.B.shape[-2], *self.A.shape[1 + self.batched :])

    # conversions

    def to(self, *args, **kwargs) -> LowRankDelta:
        return LowRankDelta(self.A.to(*args, **kwargs), self.B.to(*args, **kwargs), self.scale)

    def detach(self) -> LowRankDelta:
        return LowRankDelta(self.A.detach(), self.B.detach(), self.scale)

    def select(self, index: int) -> LowRankDelta:
        """The delta of one sample of a per-sample delta."""
        if not self.batched:
            raise ValueError("select() needs a per-sample delta (A and B with a leading batch axis)")
        return LowRankDelta(self.A[index], self.B[index], self.scale)

    def is_finite(self) -> bool:
        return bool(torch.isfinite(self.A).all() and torch.isfinite(self.B).all())

    def weight(self, dtype: torch.dtype | None = None) -> Tensor:
        """The dense delta ``scale * B @ A``: (out, in[, kh, kw]), or (n, out, in[, kh, kw]) per sample."""
        return delta_weight(self, dtype)

    def __repr__(self) -> str:
        n = f"n={self.batch_size}, " if self.batched else ""
        return f"LowRankDelta({self.kind}, {n}rank={self.rank}, weight={self.weight_shape}, scale={self.scale:g}, dtype={self.A.dtype})"


# the delta math: weight space


def delta_weight(delta: LowRankDelta, dtype: torch.dtype | None = None) -> Tensor:
    """``scale * B @ A`` reshaped to the layer's weight shape (with the batch axis for per-sample deltas)."""
    A, B = delta.A, delta.B
    if dtype is not None:
        A, B = A.to(dtype), B.to(dtype)
    if delta.batched:
        w = torch.bmm(B, A.flatten(2)) * delta.scale  # (n, o, i*kh*kw)
        return w.view(B.shape[0], *delta.weight_shape)
    w = (B @ A.flatten(1)) * delta.scale  # (o, i*kh*kw)
    return w.view(delta.weight_shape)


def fold_weight(weight: Tensor, delta: LowRankDelta) -> Tensor:
    """``weight + scale * B @ A`` as a new tensor in the weight's dtype and memory layout; ``weight`` is untouched."""
    if delta.batched:
        raise ValueError("a per-sample delta has no single folded weight; select() one sample first")
    A, B = delta.A.to(weight.dtype), delta.B.to(weight.dtype)
    if weight.is_contiguous():
        # one fused kernel: W + s * B @ A
        return torch.addmm(weight.flatten(1), B, A.flatten(1), alpha=delta.scale).view_as(weight)
    # keep e.g. channels_last weights channels_last so the conv picks the same kernel as the plain layer
    return weight + delta_weight(delta, weight.dtype)


# the delta math: activation space


def linear_delta(x: Tensor, delta: LowRankDelta) -> Tensor:
    """``scale * (x @ A^T) @ B^T`` for input x (..., i); per-sample deltas need x's leading axis = n * k."""
    A, B = delta.A.to(x.dtype), delta.B.to(x.dtype)
    if not delta.batched:
        return F.linear(F.linear(x, A), B) * delta.scale  # (..., o)
    n = A.shape[0]
    x3 = x.reshape(n, -1, x.shape[-1])  # (n, k*..., i): batch-major folding keeps sample j's rows together
    t = torch.bmm(x3, A.transpose(1, 2))  # (n, L, r)
    y = torch.bmm(t, B.transpose(1, 2)) * delta.scale  # (n, L, o)
    return y.view(*x.shape[:-1], B.shape[1])


def conv2d_delta(
    x: Tensor,
    delta: LowRankDelta,
    stride: tuple[int, int],
    padding: tuple[int, int] | str,
    dilation: tuple[int, int],
) -> Tensor:
    """``scale * conv1x1(conv(x, A), B)`` for input x (N, i, H, W) already padded as the layer pads it."""
    A, B = delta.A.to(x.dtype), delta.B.to(x.dtype)
    if not delta.batched:
        t = F.conv2d(x, A, None, stride, padding, dilation)  # (N, r, H', W')
        return F.conv2d(t, B[:, :, None, None]) * delta.scale  # (N, o, H', W')
    n = A.shape[0]
    xg = rearrange(x, "(n k) i h w -> k (n i) h w", n=n)  # each sample's channels become one conv group
    t = F.conv2d(xg, rearrange(A, "n r i kh kw -> (n r) i kh kw"), None, stride, padding, dilation, groups=n)
    h = t.shape[-2]
    t = rearrange(t, "k (n r) h w -> n k r (h w)", n=n)  # (n, k, r, p)
    y = torch.matmul(B[:, None], t) * delta.scale  # (n, 1, o, r) @ (n, k, r, p) -> (n, k, o, p)
    return rearrange(y, "n k o (h w) -> (n k) o h w", h=h)
