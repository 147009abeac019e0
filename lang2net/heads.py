"""HeadGenerator: contextualised class codes -> a linear classification head in the backbone's pooled-feature space.

Axis legend: t tasks, c classes, d generator width, f pooled-feature width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HeadGenerator", "head_logits"]


class HeadGenerator(nn.Module):
    """One weight vector and bias per class code; logits stay linear in the features (``f @ W.T + b``).

    The generated W is L2-normalised and multiplied by a learned scale (the features are left alone), so a generated
    head is exactly an ``nn.Linear`` that a plain timm classifier or a peft ``modules_to_save`` head can hold.

    Args:
        d_model: width of the class codes.
        feature_dim: width of the backbone's pooled features (timm ``num_features`` / ``head_hidden_size``).
        init_scale: initial norm of each generated weight vector (the logit temperature, learned); 1 starts the
            logits at the scale of the pooled features.
    """

    def __init__(self, d_model: int, feature_dim: int, init_scale: float = 1.0) -> None:
        super().__init__()
        self.weight_mlp = nn.Sequential(
            nn.LayerNorm(d_model), nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, feature_dim)
        )
        self.bias_head = nn.Linear(d_model, 1)
        nn.init.zeros_(self.bias_head.weight)
        nn.init.zeros_(self.bias_head.bias)
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    def forward(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        """codes (t, c, d) -> weight (t, c, f), bias (t, c)."""
        weight = F.normalize(self.weight_mlp(codes), dim=-1) * self.log_scale.exp()  # (t, c, f)
        bias = self.bias_head(codes).squeeze(-1)  # (t, c)
        return weight, bias


def head_logits(features: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """features (b, f) with a shared head (c, f) -> (b, c), or with per-sample heads (b, c, f) -> (b, c)."""
    if weight.ndim == 2:
        return F.linear(features, weight, bias)
    return torch.einsum("bf,bcf->bc", features, weight) + bias
