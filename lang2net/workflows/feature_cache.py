"""Pooled features of a frozen backbone, computed once per dataset split and image size, stored as safetensors."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from ..backbones import data_config as backbone_data_config
from ..backbones import pooled_features
from ..data import LabeledImages, to_backbone_input
from ..utils.atomic import write_atomic

if TYPE_CHECKING:
    from ..adapter import LanguageConditionedAdapter

__all__ = ["CACHE_FORMAT", "FeatureCache", "state_digest"]

logger = logging.getLogger(__name__)

CACHE_FORMAT = "1"  # bump when the stored features change meaning


def _slug(text: str) -> str:
    """A file-name-safe form of ``text``; a short hash is appended when characters were replaced or cut."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:40]
    return safe if safe == text else f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def state_digest(module: nn.Module) -> str:
    """SHA-256 of ``module``'s state dict: names and exact values."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


@dataclass(eq=False)
class FeatureCache:
    """Pooled features of one frozen backbone, computed once per dataset split and image size.

    Features are memoised in the instance and, with ``cache_dir``, stored as safetensors files named by (dataset,
    split, img_size, backbone, weights). A stored file also records a fingerprint of the images, labels and
    normalisation; a file whose fingerprint differs is recomputed and overwritten.

    Attributes:
        backbone: the frozen timm model (on the device features are computed on).
        data_config: timm data config with ``mean`` and ``std``.
        backbone_name: the timm model name, part of the file key.
        weights: the weight source, part of the file key.
        cache_dir: folder of the safetensors files; None keeps features in memory only.
        batch_size: images per forward pass.
        computed: image sets run through the backbone so far (not loaded or memoised).
    """

    backbone: nn.Module = field(repr=False)
    data_config: dict[str, Any]
    backbone_name: str
    weights: str
    cache_dir: Path | None = None
    batch_size: int = 256
    computed: int = field(default=0, init=False)
    _memo: dict[tuple[str, str, int, str], Tensor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        self.data_config = dict(self.data_config)
        self.cache_dir = Path(self.cache_dir).expanduser() if self.cache_dir is not None else None

    @classmethod
    def for_adapter(
        cls,
        adapter: LanguageConditionedAdapter,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 256,
        device: str | torch.device | None = None,
    ) -> FeatureCache:
        """The cache of ``adapter``'s configured backbone (built here, frozen, on ``device``)."""
        backbone, config = adapter.create_backbone().to(device or "cpu"), adapter.config
        names = {"backbone_name": config.backbone, "weights": config.backbone_weights}
        data_config = backbone_data_config(backbone, config.preprocessing)
        return cls(backbone, data_config, **names, cache_dir=cache_dir, batch_size=batch_size)

    @property
    def device(self) -> torch.device:
        """The backbone's device."""
        return next(self.backbone.parameters()).device

    def path(self, dataset: str, split: str, img_size: int) -> Path | None:
        """The safetensors file of these features, or None without ``cache_dir``."""
        if self.cache_dir is None:
            return None
        parts = (_slug(dataset), _slug(split), f"{img_size}px", _slug(self.backbone_name), _slug(self.weights))
        return self.cache_dir / ("__".join(parts) + ".safetensors")

    @functools.cached_property
    def weights_digest(self) -> str:
        """SHA-256 of the backbone's state dict (so that two "random" backbones never share a cache file)."""
        return state_digest(self.backbone)

    def fingerprint(self, data: LabeledImages, img_size: int) -> str:
        """SHA-256 of the backbone weights, images, labels, image size and normalisation."""
        digest = hashlib.sha256(self.weights_digest.encode())
        digest.update(data.images.contiguous().numpy().tobytes())
        digest.update(data.labels.contiguous().numpy().tobytes())
        stats = [self.data_config.get("mean"), self.data_config.get("std"), img_size, CACHE_FORMAT]
        digest.update(repr([list(s) if isinstance(s, (list, tuple)) else s for s in stats]).encode())
        return digest.hexdigest()

    def features(self, data: LabeledImages, split: str, img_size: int) -> Tensor:
        """(N, f) float32 CPU pooled features of ``data``'s images resized to ``img_size`` (cached).

        Args:
            data: the images.
            split: the split name ("twitter", "google", ...), part of the file key.
            img_size: backbone input side.
        """
        if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
            raise ValueError(f"img_size must be a positive int, got {img_size!r}")
        fingerprint = self.fingerprint(data, img_size)
        key = (data.name, split, img_size, fingerprint)
        if key in self._memo:
            return self._memo[key]
        path = self.path(data.name, split, img_size)
        features = self._load(path, fingerprint, len(data)) if path is not None else None
        if features is None:
            features = self._compute(data, img_size)
            if path is not None:
                meta = {"fingerprint": fingerprint, "dataset": data.name, "split": split, "img_size": str(img_size)}
                tensors = {"features": features.contiguous(), "labels": data.labels.contiguous()}
                write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
                logger.info("stored %s features %s in %s", split, tuple(features.shape), path)
        self._memo[key] = features
        return features

    def _load(self, path: Path, fingerprint: str, n: int) -> Tensor | None:
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                stored = (f.metadata() or {}).get("fingerprint")
                features = f.get_tensor("features") if stored == fingerprint else None
        except (OSError, SafetensorError) as exc:
            logger.warning("recomputing features: unreadable cache file %s (%s)", path, exc)
            return None
        if features is None or features.ndim != 2 or features.shape[0] != n:
            logger.info("recomputing features: %s was made from other images or settings", path)
            return None
        return features

    def _compute(self, data: LabeledImages, img_size: int) -> Tensor:
        out = []
        with torch.no_grad():
            for images in data.images.split(self.batch_size):
                x = to_backbone_input(images.to(self.device), self.data_config, img_size)
                out.append(pooled_features(self.backbone, x).float().cpu())
        self.computed += 1
        return torch.cat(out) if out else torch.zeros(0, 0)
