"""HeadGenerator: contextualised class codes -> a linear classification head in the backbone's pooled-feature space.

Axis legend: t tasks, c classes, d generator width, f pooled-feature width, n images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import FEATURE_NORMS

__all__ = ["HeadGenerator", "head_logits"]


class HeadGenerator(nn.Module):
    """One weight vector and bias per class code; logits stay linear in the features (``f @ W.T + b``).

    The generated W is L2-normalised and multiplied by a learned scale, so a generated head is exactly an
    ``nn.Linear`` that a plain timm classifier or a peft ``modules_to_save`` head can hold.

    With ``feature_norm="center"`` the head scores centred, rescaled features ``(f - mu) / sigma``, where ``mu`` is
    the mean and ``sigma`` the mean centred norm of the training images' pooled features under the frozen backbone
    (:meth:`set_feature_statistics`, saved with the generator). Post-ReLU pooled features share a large mean
    direction that a cosine head otherwise spends its capacity on; the classic zero-shot fits centre for the same
    reason. Both are folded into the emitted head (``W / sigma`` and ``b - W @ mu / sigma``), so it is still one exact
    ``nn.Linear`` on the backbone's raw pooled features.

    Args:
        d_model: width of the class codes.
        feature_dim: width of the backbone's pooled features (timm ``num_features`` / ``head_hidden_size``).
        init_scale: initial norm of each generated weight vector (the logit temperature, learned); default 1 on raw
            features (logits at the scale of the pooled features), 10 on centred ones (about unit norm).
        feature_norm: "none" (raw pooled features) or "center".
    """

    def __init__(
        self, d_model: int, feature_dim: int, init_scale: float | None = None, feature_norm: str = "none"
    ) -> None:
        super().__init__()
        if feature_norm not in FEATURE_NORMS:
            raise ValueError(f"feature_norm must be one of {FEATURE_NORMS}, got {feature_norm!r}")
        self.feature_norm = feature_norm
        if init_scale is None:
            init_scale = 10.0 if feature_norm == "center" else 1.0
        self.weight_mlp = nn.Sequential(
            nn.LayerNorm(d_model), nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, feature_dim)
        )
        self.bias_head = nn.Linear(d_model, 1)
        nn.init.zeros_(self.bias_head.weight)
        nn.init.zeros_(self.bias_head.bias)
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        if feature_norm == "center":  # identity until set_feature_statistics: mean 0, scale 1
            self.register_buffer("feature_mean", torch.zeros(feature_dim))
            self.register_buffer("feature_scale", torch.ones(()))

    @torch.no_grad()
    def set_feature_statistics(self, features: Tensor) -> None:
        """Record ``mu`` and ``sigma`` from (n, f) pooled features of the training images (frozen backbone)."""
        if self.feature_norm != "center":
            raise ValueError(f"feature statistics need feature_norm='center', this head has {self.feature_norm!r}")
        width = self.feature_mean.shape[0]
        if features.ndim != 2 or features.shape[1] != width or features.shape[0] < 2:
            raise ValueError(f"feature statistics need (n >= 2, {width}) features, got {tuple(features.shape)}")
        features = features.detach().double()
        mean = features.mean(0)
        scale = (features - mean).norm(dim=1).mean()
        if not bool(torch.isfinite(scale)) or float(scale) <= 0:
            raise ValueError(f"feature statistics need finite, not all-equal features (mean centred norm {scale})")
        self.feature_mean.copy_(mean.to(self.feature_mean))
        self.feature_scale.copy_(scale.to(self.feature_scale))

    def forward(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        """codes (t, c, d) -> weight (t, c, f), bias (t, c): the head on raw pooled features."""
        weight = F.normalize(self.weight_mlp(codes), dim=-1) * self.log_scale.exp()  # (t, c, f)
        bias = self.bias_head(codes).squeeze(-1)  # (t, c)
        if self.feature_norm == "center":
            weight = weight / self.feature_scale.to(weight)
            bias = bias - weight @ self.feature_mean.to(weight)
        return weight, bias


def head_logits(features: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """features (b, f) with a shared head (c, f) -> (b, c), or with per-sample heads (b, c, f) -> (b, c)."""
    if weight.ndim == 2:
        return F.linear(features, weight, bias)
    return torch.einsum("bf,bcf->bc", features, weight) + bias
