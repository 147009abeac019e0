"""The hypernetwork: a permutation-equivariant set encoder over class embeddings and the DeltaGenerator.

Axis legend:
    t  tasks in a batch of tasks          c  classes of a task (padded, with a mask)
    e  text-embedding width               d  generator width (d_model)
    q  targets (adapted layers)           r  rank
    i  a target's fan-in (in * kh * kw)   o  a target's output width
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .config import AdapterConfig
from .engine.lowrank import LowRankDelta
from .engine.targets import Target
from .heads import HeadGenerator

__all__ = ["DeltaGenerator", "SetEncoder", "TaskGenerator"]


# helpers


def _depth_features(depth: Tensor, n_freq: int = 8) -> Tensor:
    """Sinusoidal features of a depth in [0, 1]: (q,) -> (q, 2 * n_freq); works for any number of targets."""
    freqs = math.pi * (2.0 ** torch.arange(n_freq, dtype=depth.dtype, device=depth.device))
    angles = depth[:, None] * freqs  # (q, n_freq)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


# classes


class SetEncoder(nn.Module):
    """Self-attention over a task's class embeddings with no positions: reordering classes reorders the codes (with
    ``n_layers`` 0, none: each class's code depends on its own embedding only).

    Returns contextualised class codes (each class seen against the others of its task) and a task code (attention
    pooling with a learned query, invariant to the order).
    """

    def __init__(self, text_dim: int, d_model: int, n_layers: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, 4 * d_model, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        # n_layers 0: per-class codes (each class encoded alone, no attention over the task's other classes)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False) if n_layers else None
        self.norm = nn.LayerNorm(d_model)
        self.pool_query = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.pool = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)

    def forward(self, embeddings: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """embeddings (t, c, e), mask (t, c) True for real classes -> codes (t, c, d), task code (t, d)."""
        pad = ~mask
        h = self.proj(embeddings)
        if self.encoder is not None:
            h = self.encoder(h, src_key_padding_mask=pad)
        h = self.norm(h)  # (t, c, d)
        query = self.pool_query.expand(h.shape[0], -1, -1)  # (t, 1, d)
        task, _ = self.pool(query, h, h, key_padding_mask=pad, need_weights=False)
        return h, task[:, 0]


class DeltaGenerator(nn.Module):
    """One query per target (learned depth, role and shape-group embeddings) attends to the task's class codes and
    emits that target's low-rank delta.

    Modes:
        "core": learned per-target bases U (o, r) and V (r, i), used with unit columns / rows; the task gives an
            r x r core C = core_bound * tanh(.), so ``B @ A = U @ (C @ V)`` with ``||B @ A||_2 <= r**2 * core_bound``.
            Few parameters; the task steers a bounded move inside a learned subspace of each layer.
        "factors": a linear head per shape group emits A and B directly from the query (Text-to-LoRA style).
        "static": "core" with the task's codes replaced by zeros: deltas learned once and shared by every task, with
            no text in them (the control that tells adaptation written from language from plain domain tuning).
    Either way the part that depends on the task starts at zero, so an untrained generator emits zero deltas.
    ``norm`` (``AdapterConfig.delta_norm``) layer-normalises each query's state before the layer that writes its
    deltas, and bounds a core by its Frobenius norm, ``C = b z / sqrt(1 + ||z||^2 / r^2)``, instead of entry by entry
    with tanh: a core pushed to its bound keeps the direction of ``z``, so the deltas still depend on the task.
    """

    def __init__(
        self,
        specs: Sequence[Target],
        d_model: int,
        n_heads: int,
        rank: int,
        mode: str,
        core_bound: float = 0.1,
        norm: bool = False,
    ) -> None:
        super().__init__()
        if mode not in ("core", "factors", "static"):
            raise ValueError(f"DeltaGenerator mode must be 'core', 'factors' or 'static', got {mode!r}")
        if not specs:
            raise ValueError(
                f"delta_mode={mode!r} needs at least one target, but target_specs is empty; "
                "use delta_mode='none' for a head-only generator"
            )
        self.static = mode == "static"
        mode = "core" if self.static else mode
        self.specs, self.rank, self.mode, self.core_bound = list(specs), rank, mode, core_bound
        roles = sorted({s.role for s in self.specs})
        groups = sorted({s.shape_group for s in self.specs}, key=str)
        self.register_buffer("role_index", torch.tensor([roles.index(s.role) for s in self.specs]), persistent=False)
        self.register_buffer(
            "group_index", torch.tensor([groups.index(s.shape_group) for s in self.specs]), persistent=False
        )
        q = len(self.specs)
        self.register_buffer("depth", torch.arange(q, dtype=torch.float32) / max(q - 1, 1), persistent=False)
        self.role_emb = nn.Embedding(len(roles), d_model)
        self.group_emb = nn.Embedding(len(groups), d_model)
        self.depth_proj = nn.Linear(16, d_model)
        self.cross = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.mlp = nn.Sequential(
            nn.LayerNorm(d_model), nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, d_model)
        )
        self.norm = nn.LayerNorm(d_model) if norm else nn.Identity()
        self.radial = norm
        if mode == "core":
            self.U = nn.ParameterList(
                [nn.Parameter(torch.randn(s.out_features, rank) / math.sqrt(rank)) for s in self.specs]
            )
            self.V = nn.ParameterList(
                [nn.Parameter(torch.randn(rank, s.fan_in) / math.sqrt(s.fan_in)) for s in self.specs]
            )
            self.core = nn.Linear(d_model, rank * rank)
            nn.init.zeros_(self.core.weight)
            nn.init.zeros_(self.core.bias)
        else:
            self.heads = nn.ModuleList()
            for _kind, fan_in_c, out, kernel in groups:
                fan_in = fan_in_c * kernel[0] * kernel[1]
                head = nn.Linear(d_model, rank * fan_in + out * rank)
                nn.init.normal_(head.weight[: rank * fan_in], std=1.0 / math.sqrt(d_model * fan_in))
                nn.init.zeros_(head.weight[rank * fan_in :])  # B starts at zero, as LoRA's B
                nn.init.zeros_(head.bias)
                self.heads.append(head)

    def queries(self) -> Tensor:
        """(q, d): what each target asks of the task."""
        return (
            self.role_emb(self.role_index)
            + self.group_emb(self.group_index)
            + self.depth_proj(_depth_features(self.depth))
        )

    def forward(self, codes: Tensor, task: Tensor, mask: Tensor) -> dict[str, LowRankDelta]:
        """codes (t, c, d), task (t, d), mask (t, c) -> {target: LowRankDelta with a leading task axis t}."""
        t = codes.shape[0]
        if self.static:  # no text reaches the deltas: one learned delta per target, the same for every task
            codes, task, mask = codes[:, :1] * 0, task * 0, torch.ones_like(mask[:, :1])
        q = self.queries()[None] + task[:, None]  # (t, q, d)
        keys = torch.cat([task[:, None], codes], dim=1)  # (t, 1 + c, d): the task token keeps a 1-class task defined
        pad = torch.cat([torch.zeros_like(mask[:, :1]), ~mask], dim=1)
        h, _ = self.cross(q, keys, keys, key_padding_mask=pad, need_weights=False)
        h = h + q
        h = self.norm(h + self.mlp(h))  # (t, q, d)
        if self.mode == "core":
            # bounded cores and unit-norm bases keep ||B @ A||_2 <= rank**2 * core_bound, whatever the task: unbounded deltas
            # can push a BN/ReLU6 backbone into saturation, from which meta-training does not recover
            z = rearrange(self.core(h), "t q (r s) -> t q r s", r=self.rank)
            if self.radial:  # b * z near 0, ||C||_F -> b * r: a large core keeps its direction, which carries the task
                cores = z * (self.core_bound / torch.sqrt(1 + z.square().sum((-2, -1), keepdim=True) / self.rank**2))
            else:  # elementwise: once every entry saturates, only signs are left and the task no longer matters
                cores = torch.tanh(z) * self.core_bound
            return {
                s.name: LowRankDelta(
                    (cores[:, j] @ F.normalize(self.V[j], dim=1)).view(
                        t, self.rank, *s.a_shape(self.rank)[1:]
                    ),  # (t, r, in[, kh, kw])
                    F.normalize(self.U[j], dim=0).expand(t, -1, -1),  # (t, o, r), unit columns
                )
                for j, s in enumerate(self.specs)
            }
        out = {}
        for j, s in enumerate(self.specs):
            flat = self.heads[int(self.group_index[j])](h[:, j])  # (t, r*i + o*r)
            a, b = flat.split([self.rank * s.fan_in, s.out_features * self.rank], dim=-1)
            a = a.view(t, self.rank, *s.a_shape(self.rank)[1:])
            out[s.name] = LowRankDelta(a, b.view(t, s.out_features, self.rank))
        return out


class TaskGenerator(nn.Module):
    """Class embeddings of a batch of tasks -> per-task deltas (leading task axis) and heads."""

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        if not config.resolved:
            raise ValueError("TaskGenerator needs a resolved config (text_dim, feature_dim, target_specs)")
        self.set_encoder = SetEncoder(config.text_dim, config.d_model, config.n_layers, config.n_heads, config.dropout)
        self.head = HeadGenerator(
            config.d_model,
            config.feature_dim,
            feature_norm=config.feature_norm,
            memory=config.memory,
            text_dim=config.text_dim,
            memory_size=config.memory_size,
            classifier_memory=config.classifier_memory,
            classifier_memory_size=config.classifier_memory_size,
        )
        self.deltas = (
            None
            if config.delta_mode == "none"
            else DeltaGenerator(
                config.target_specs,
                config.d_model,
                config.n_heads,
                config.rank,
                config.delta_mode,
                norm=config.delta_norm,
            )
        )

    def forward(self, embeddings: Tensor, mask: Tensor | None = None) -> tuple[dict[str, LowRankDelta], Tensor, Tensor]:
        """embeddings (t, c, e) [mask (t, c)] -> (deltas with leading axis t, head weight (t, c, f), bias (t, c))."""
        if mask is None:
            mask = torch.ones(embeddings.shape[:2], dtype=torch.bool, device=embeddings.device)
        codes, task = self.set_encoder(embeddings, mask)
        weight, bias = self.head(codes, embeddings)
        deltas = {} if self.deltas is None else self.deltas(codes, task, mask)
        return deltas, weight, bias
