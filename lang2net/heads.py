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

    With a memory (``memory=True``, :meth:`set_memory`; needs ``feature_norm="center"``) the head also draws on what
    the training classes look like: M prototypes (each training class's mean unit centred feature direction under the
    frozen backbone) keyed by the classes' text embeddings. A class's weight direction is its generated one plus
    ``gate`` times its recall, the prototypes averaged with attention ``softmax(beta * cos(e, key))`` over the memory
    and re-normalised. A class described exactly as a training class recalls that class's own prototype most, as a
    close paraphrase does (the recall is continuous in the text); classes far from every key get a blend of the
    nearest looks. ``gate`` and ``beta`` are not
    trained by gradient (on its own training classes a generated head fits perfectly, so a learned mix suits them, not
    new classes: measured, it generalised worse); they are chosen on validation classes after training (:meth:`set_memory_mix`; ``gate`` 0, no recall,
    until then). The emitted head is still one exact linear layer.

    With a classifier memory (``classifier_memory=True``, :meth:`set_classifier_memory`; needs ``feature_norm="center"``)
    the head also recalls the backbone's own pretrained classifier: its K rows (e.g. ImageNet's 1000 classes), keyed
    by the text embeddings of their label descriptions. A row ``w`` scores ``w . x = sigma * w . z + w . mu`` for the
    centred features ``z``, so its unit direction is a class direction in the centred space too. A class's direction
    gets ``classifier_gate`` times the rows recalled with the same attention (``beta``), so "wallaby" borrows from
    ImageNet's wallaby and "kangaroo" from both; the gate is chosen with the other mix on validation classes.

    Args:
        d_model: width of the class codes.
        feature_dim: width of the backbone's pooled features (timm ``num_features`` / ``head_hidden_size``).
        init_scale: initial norm of each generated weight vector (the logit temperature, learned); default 1 on raw
            features (logits at the scale of the pooled features), 10 on centred ones (about unit norm).
        feature_norm: "none" (raw pooled features) or "center".
        memory: give the head a memory of training-class prototypes (filled by :meth:`set_memory`).
        text_dim: width of the class embeddings (the memory's keys); needed with ``memory``.
        memory_size: prototypes the memory holds when built (a saved generator's; 0 until :meth:`set_memory`).
        classifier_memory: give the head a memory of the backbone classifier's rows (filled by
            :meth:`set_classifier_memory`); needs ``text_dim``.
        classifier_memory_size: rows that memory holds when built (0 until :meth:`set_classifier_memory`).
    """

    def __init__(
        self,
        d_model: int,
        feature_dim: int,
        init_scale: float | None = None,
        feature_norm: str = "none",
        *,
        memory: bool = False,
        text_dim: int | None = None,
        memory_size: int = 0,
        classifier_memory: bool = False,
        classifier_memory_size: int = 0,
    ) -> None:
        super().__init__()
        if feature_norm not in FEATURE_NORMS:
            raise ValueError(f"feature_norm must be one of {FEATURE_NORMS}, got {feature_norm!r}")
        if (memory or classifier_memory) and (feature_norm != "center" or text_dim is None):
            raise ValueError(
                "a head memory needs feature_norm='center' (prototypes live in the centred space) and text_dim, got "
                f"feature_norm={feature_norm!r}, text_dim={text_dim!r}"
            )
        self.memory = memory
        self.classifier_memory = classifier_memory
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
        if memory:
            self.register_buffer("memory_keys", torch.zeros(memory_size, text_dim or 0))  # (m, e) unit text embeddings
            self.register_buffer("memory_values", torch.zeros(memory_size, feature_dim))  # (m, f) unit prototypes
            self.register_buffer("memory_gate", torch.zeros(()))  # weight of the recall in the class direction
            self.register_buffer("memory_beta", torch.tensor(10.0))  # attention sharpness over the memory
        if classifier_memory:
            self.register_buffer("classifier_keys", torch.zeros(classifier_memory_size, text_dim or 0))  # (k, e)
            self.register_buffer("classifier_values", torch.zeros(classifier_memory_size, feature_dim))  # (k, f) unit
            self.register_buffer("classifier_gate", torch.zeros(()))  # weight of the recalled rows
            if not memory:  # the two memories attend alike: one sharpness
                self.register_buffer("memory_beta", torch.tensor(10.0))

    @property
    def memory_size(self) -> int:
        """Prototypes in the memory (0: none)."""
        return int(self.memory_keys.shape[0]) if self.memory else 0

    @property
    def classifier_memory_size(self) -> int:
        """Classifier rows in the classifier memory (0: none)."""
        return int(self.classifier_keys.shape[0]) if self.classifier_memory else 0

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

    @torch.no_grad()
    def set_memory(self, keys: Tensor, features: Tensor, labels: Tensor) -> None:
        """Hold one prototype per key: ``keys`` (m, e) class embeddings, ``features`` (n, f) pooled features of their
        images under the frozen backbone, ``labels`` (n,) each image's row in ``keys``. Call after
        :meth:`set_feature_statistics`: prototypes live in the centred space the head scores."""
        if not self.memory:
            raise ValueError("this head has no memory (AdapterConfig.memory=False)")
        m, width = len(keys), self.feature_mean.shape[0]
        if keys.ndim != 2 or m < 2 or keys.shape[1] != self.memory_keys.shape[1]:
            raise ValueError(
                f"memory keys must be (m >= 2, {self.memory_keys.shape[1]}) class embeddings, got {tuple(keys.shape)}"
            )
        if features.ndim != 2 or features.shape[1] != width or labels.shape != features.shape[:1]:
            raise ValueError(
                f"memory features must be (n, {width}) with labels (n,), got {tuple(features.shape)} and "
                f"{tuple(labels.shape)}"
            )
        if labels.min() < 0 or labels.max() >= m:
            raise ValueError(f"memory labels must be rows of the keys, in [0, {m}), got {labels.min()}..{labels.max()}")
        missing = torch.nonzero(torch.bincount(labels, minlength=m) == 0).flatten().tolist()
        if missing:
            raise ValueError(f"every memory key needs images; rows without any: {missing[:5]}")
        x = (features.detach().double() - self.feature_mean.double()) / self.feature_scale.double()
        sums = torch.zeros(m, width, dtype=x.dtype).index_add_(0, labels, F.normalize(x, dim=1))
        device = self.feature_mean.device
        self.memory_keys = F.normalize(keys.detach().float(), dim=1).to(device)
        self.memory_values = F.normalize(sums, dim=1).float().to(device)

    @torch.no_grad()
    def set_classifier_memory(self, keys: Tensor, weight: Tensor) -> None:
        """Hold the backbone classifier's rows: ``keys`` (k, e) embeddings of their label descriptions, ``weight``
        (k, f) the classifier's weight on raw pooled features (its bias is not used: only the directions are)."""
        if not self.classifier_memory:
            raise ValueError("this head has no classifier memory (AdapterConfig.classifier_memory=False)")
        width = self.feature_mean.shape[0]
        if keys.ndim != 2 or len(keys) < 2 or keys.shape[1] != self.classifier_keys.shape[1]:
            raise ValueError(
                f"classifier memory keys must be (k >= 2, {self.classifier_keys.shape[1]}) label embeddings, got "
                f"{tuple(keys.shape)}"
            )
        if weight.shape != (len(keys), width):
            raise ValueError(
                f"classifier weight must be ({len(keys)}, {width}), one row per key, got {tuple(weight.shape)}"
            )
        if not bool(torch.isfinite(weight).all()) or not bool((weight.norm(dim=1) > 0).all()):
            raise ValueError("classifier weight rows must be finite and non-zero")
        device = self.feature_mean.device
        self.classifier_keys = F.normalize(keys.detach().float(), dim=1).to(device)
        self.classifier_values = F.normalize(weight.detach().float(), dim=1).to(device)

    @torch.no_grad()
    def set_memory_mix(self, gate: float, beta: float, classifier_gate: float = 0.0) -> None:
        """How much of the recall enters each class direction (``gate`` >= 0; 0: none), how much of the recalled
        classifier rows (``classifier_gate`` >= 0) and how sharply both attend (``beta`` > 0)."""
        if not (self.memory or self.classifier_memory):
            raise ValueError("this head has no memory (AdapterConfig.memory=False)")
        if not all(math.isfinite(v) and v >= 0 for v in (gate, classifier_gate)) or not (
            math.isfinite(beta) and beta > 0
        ):
            raise ValueError(
                f"memory mix needs finite gates >= 0 and beta > 0, got gate={gate!r}, beta={beta!r}, "
                f"classifier_gate={classifier_gate!r}"
            )
        for name, value, present in (
            ("gate", gate, self.memory),
            ("classifier_gate", classifier_gate, self.classifier_memory),
        ):
            if value and not present:
                raise ValueError(f"{name}={value!r} but this head has no such memory; valid: 0")
        if self.memory:
            self.memory_gate.fill_(gate)
        if self.classifier_memory:
            self.classifier_gate.fill_(classifier_gate)
        self.memory_beta.fill_(beta)

    def recall(self, embeddings: Tensor, source: str = "memory") -> Tensor:
        """embeddings (t, c, e) -> (t, c, f): each class's attention-weighted entries of a memory, re-normalised;
        ``source`` "memory" (training-class prototypes) or "classifier" (the backbone classifier's rows)."""
        if source not in self._sources():
            raise ValueError(f"no {source!r} memory to recall from; valid: {self._sources()}")
        keys, values = (
            (self.memory_keys, self.memory_values)
            if source == "memory"
            else (self.classifier_keys, self.classifier_values)
        )
        sim = F.normalize(embeddings, dim=-1) @ keys.to(embeddings.dtype).T  # (t, c, m)
        attention = torch.softmax(sim * self.memory_beta.to(sim), dim=-1)
        return F.normalize(attention @ values.to(sim), dim=-1)

    def _sources(self) -> list[str]:
        return [name for name, on in (("memory", self.memory), ("classifier", self.classifier_memory)) if on]

    def _recalls(self) -> list[tuple[str, Tensor]]:
        """The memories in use: (source, gate) with a non-zero gate and entries."""
        pools = []
        if self.memory_size and float(self.memory_gate) > 0:
            pools.append(("memory", self.memory_gate))
        if self.classifier_memory_size and float(self.classifier_gate) > 0:
            pools.append(("classifier", self.classifier_gate))
        return pools

    def forward(self, codes: Tensor, embeddings: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """codes (t, c, d) [embeddings (t, c, e)] -> weight (t, c, f), bias (t, c): the head on raw pooled features.
        A head whose memory is in use needs the class embeddings."""
        direction = F.normalize(self.weight_mlp(codes), dim=-1)  # (t, c, f)
        pools = self._recalls()
        if pools:
            if embeddings is None:
                raise ValueError("this head recalls from its memory by text: pass the class embeddings")
            mixed = direction
            for source, gate in pools:
                mixed = mixed + gate.to(direction) * self.recall(embeddings.to(direction.dtype), source)
            direction = F.normalize(mixed, dim=-1)
        weight = direction * self.log_scale.exp()
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
