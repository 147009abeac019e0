"""The frozen-backbone fast path of head-only meta-training: pooled features of every training image under a fixed
set of augmented views, computed once; episodes then read features instead of running the backbone.

A head-only generator never changes the backbone, so an image's pooled features depend on the (augmented) image
alone. With ``train.feature_views = V``, view 0 is each image as it is and views 1..V-1 are augmentations at
``train.augment`` strength drawn from their own generator seeded by ``train.seed``: the bank is the same on every
run and after every resume, so resuming stays exact. Each episode image takes one of its V views at random (from
the trainer's augmentation generator): augmentation comes from a pool of V variants per image instead of a fresh
draw each step. Without augmentation (``train.augment = 0``) one view is enough and the bank is exact.

View 0 can come from a :class:`FeatureStore`: a folder keeping each image's unaugmented features by the image's
content, so that the runs of one benchmark (selection, refit, protocol B, the delta runs' centring statistics, other
folds) run the backbone over an image once instead of once per run.

Axis legend: v views, n images, f pooled-feature width, b episode images.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from ..backbones import pooled_features
from ..utils.atomic import write_atomic
from ..utils.checks import check_int
from .feature_cache import state_digest

__all__ = ["BANK_SEED_OFFSET", "STORE_FORMAT", "FeatureBank", "FeatureStore"]

logger = logging.getLogger(__name__)

BANK_SEED_OFFSET = 13  # the views' generator is seeded train.seed + 13: apart from the episode and paraphrase streams
STORE_FORMAT = "1"  # bump when stored features change meaning


def _image_keys(images: Tensor) -> list[bytes]:
    """SHA-256 of each image's shape, dtype and bytes."""
    head = f"{tuple(images.shape[1:])}{images.dtype}".encode()
    return [hashlib.sha256(head + image.contiguous().numpy().tobytes()).digest() for image in images.cpu()]


def _forward(
    backbone: nn.Module,
    images: Tensor,
    data_config: Mapping[str, Any],
    img_size: int | None,
    batch_size: int,
    device: torch.device,
    gen: torch.Generator | None = None,
    augment: float = 0.0,
) -> Tensor:
    """(n, f) float32 CPU pooled features of uint8 ``images``, augmented when ``augment`` > 0 (drawn from ``gen``)."""
    from ..data import to_backbone_input
    from ..data.augment import augment_batch

    chunks = []
    for chunk in images.split(batch_size):  # chunk order is the order the generator is drawn in
        raw = augment_batch(chunk, augment, gen) if augment > 0 else chunk
        x = to_backbone_input(raw, data_config, img_size).to(device)
        chunks.append(pooled_features(backbone, x).float().cpu())
    return torch.cat(chunks)


@dataclass(frozen=True)
class FeatureStore:
    """A folder of unaugmented pooled features kept by image content: one safetensors file per (backbone weights,
    normalisation, input size, device type), holding each image's SHA-256 (``keys``, (n, 32) uint8) and its
    features (``features``, (n, f) float32). Images already in the file are read; only the others go through the
    backbone, and the file is rewritten atomically with them added. A file that cannot be read, or holds something
    else, is logged and replaced.
    """

    folder: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder).expanduser())

    def path(
        self, backbone: nn.Module, data_config: Mapping[str, Any], img_size: int | None, device: torch.device
    ) -> Path:
        """The file of features made by ``backbone`` (as it is) from inputs prepared with these settings."""
        settings = json.dumps([dict(data_config), img_size, torch.device(device).type, STORE_FORMAT], sort_keys=True)
        digest = hashlib.sha256((state_digest(backbone) + settings).encode()).hexdigest()[:20]
        return self.folder / f"plain__{img_size or 'native'}px__{digest}.safetensors"

    def _read(self, path: Path) -> tuple[Tensor, Tensor] | None:
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                fmt, keys, features = (f.metadata() or {}).get("format"), f.get_tensor("keys"), f.get_tensor("features")
        except (OSError, SafetensorError) as exc:
            logger.warning("replacing the unreadable feature store file %s (%s)", path, exc)
            return None
        ok = fmt == STORE_FORMAT and keys.dtype == torch.uint8 and keys.ndim == 2 and keys.shape[1] == 32
        if not (ok and features.ndim == 2 and features.dtype == torch.float32 and len(features) == len(keys)):
            logger.warning("replacing the feature store file %s: it holds something else", path)
            return None
        return keys, features

    def features(
        self,
        backbone: nn.Module,
        images: Tensor,
        data_config: Mapping[str, Any],
        img_size: int | None,
        *,
        batch_size: int = 256,
        device: torch.device,
    ) -> Tensor:
        """(n, f) unaugmented pooled features of ``images`` (uint8 (n, h, w[, 3])), running the backbone only over
        images the store does not hold yet."""
        path = self.path(backbone, data_config, img_size, device)
        stored = self._read(path)
        known: dict[bytes, Tensor] = {}
        if stored is not None:
            known = {bytes(k.tolist()): row for k, row in zip(stored[0], stored[1], strict=True)}
        keys = _image_keys(images)
        missing = [i for i, k in enumerate(keys) if k not in known]
        if missing:
            new = _forward(backbone, images[torch.tensor(missing)], data_config, img_size, batch_size, device)
            known.update({keys[i]: row for i, row in zip(missing, new, strict=True)})
            all_keys = torch.tensor([list(k) for k in known], dtype=torch.uint8)
            tensors = {"keys": all_keys, "features": torch.stack(list(known.values())).contiguous()}
            write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": STORE_FORMAT}))
        logger.info("feature store %s: %d of %d images computed", path.name, len(missing), len(images))
        return torch.stack([known[k] for k in keys])


@dataclass
class FeatureBank:
    """Pooled features (v, n, f) of n images under v views; view 0 is the images unaugmented."""

    features: Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.features, Tensor) or self.features.ndim != 3 or 0 in self.features.shape:
            raise ValueError(f"a feature bank is a (views, images, features) tensor, got {self.features!r:.80}")

    @property
    def views(self) -> int:
        return int(self.features.shape[0])

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        backbone: nn.Module,
        images: Tensor,
        data_config: Mapping[str, Any],
        img_size: int | None,
        *,
        views: int,
        augment: float,
        seed: int,
        batch_size: int = 256,
        device: str | torch.device | None = None,
        store: FeatureStore | str | os.PathLike[str] | None = None,
    ) -> FeatureBank:
        """Run ``backbone`` (frozen, as it is) over ``views`` versions of ``images`` (uint8 (n, h, w[, 3])).

        Args:
            views: how many versions of each image (>= 1); 1 when ``augment`` is 0, whatever is asked.
            augment: augmentation strength of views 1..v-1 (see ``lang2net.data.augment``).
            seed: seeds the views' augmentations (``seed + BANK_SEED_OFFSET``).
            store: a :class:`FeatureStore` (or its folder) that view 0 is read from and added to.
        """
        check_int("views", views)
        check_int("batch_size", batch_size)
        views = views if augment > 0 else 1
        gen = torch.Generator().manual_seed(seed + BANK_SEED_OFFSET)
        device = torch.device(device) if device is not None else next(backbone.parameters()).device
        if store is not None:
            store = store if isinstance(store, FeatureStore) else FeatureStore(Path(store))
            plain = store.features(backbone, images, data_config, img_size, batch_size=batch_size, device=device)
        else:
            plain = _forward(backbone, images, data_config, img_size, batch_size, device)
        augmented = [
            _forward(backbone, images, data_config, img_size, batch_size, device, gen, augment)
            for _ in range(views - 1)
        ]  # view-major, chunk-minor: the order the generator is drawn in
        bank = cls(torch.stack([plain, *augmented]))
        logger.info("feature bank: %d views x %d images (%.0f MB)", *bank.features.shape[:2], bank.nbytes / 2**20)
        return bank

    @property
    def nbytes(self) -> int:
        return self.features.numel() * self.features.element_size()

    def take(self, index: Tensor, gen: torch.Generator) -> Tensor:
        """Features (b, f) of images ``index`` (b,), each in one of its views drawn from ``gen``."""
        view = torch.randint(self.views, (len(index),), generator=gen)
        return self.features[view, index]

    def plain(self, index: Tensor) -> Tensor:
        """Features (b, f) of images ``index`` unaugmented (view 0)."""
        return self.features[0, index]
