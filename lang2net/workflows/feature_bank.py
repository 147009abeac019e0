"""The frozen-backbone fast path of head-only meta-training: pooled features of every training image under a fixed
set of augmented views, computed once; episodes then read features instead of running the backbone.

A head-only generator never changes the backbone, so an image's pooled features depend on the (augmented) image
alone. With ``train.feature_views = V``, view 0 is each image as it is and views 1..V-1 are augmentations at
``train.augment`` strength drawn from their own generator seeded by ``train.seed``: the bank is the same on every
run and after every resume, so resuming stays exact. Each episode image takes one of its V views at random (from
the trainer's augmentation generator): augmentation comes from a pool of V variants per image instead of a fresh
draw each step. Without augmentation (``train.augment = 0``) one view is enough and the bank is exact.

Axis legend: v views, n images, f pooled-feature width, b episode images.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..backbones import pooled_features
from ..utils.checks import check_int

__all__ = ["BANK_SEED_OFFSET", "FeatureBank"]

logger = logging.getLogger(__name__)

BANK_SEED_OFFSET = 13  # the views' generator is seeded train.seed + 13: apart from the episode and paraphrase streams


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
    ) -> FeatureBank:
        """Run ``backbone`` (frozen, as it is) over ``views`` versions of ``images`` (uint8 (n, h, w[, 3])).

        Args:
            views: how many versions of each image (>= 1); 1 when ``augment`` is 0, whatever is asked.
            augment: augmentation strength of views 1..v-1 (see ``lang2net.data.augment``).
            seed: seeds the views' augmentations (``seed + BANK_SEED_OFFSET``).
        """
        from ..data import to_backbone_input
        from ..data.augment import augment_batch

        check_int("views", views)
        check_int("batch_size", batch_size)
        views = views if augment > 0 else 1
        gen = torch.Generator().manual_seed(seed + BANK_SEED_OFFSET)
        device = device if device is not None else next(backbone.parameters()).device
        out = []
        for view in range(views):
            chunks = []
            for chunk in images.split(batch_size):  # view-major, chunk-minor: the order the generator is drawn in
                raw = chunk if view == 0 else augment_batch(chunk, augment, gen)
                x = to_backbone_input(raw, data_config, img_size).to(device)
                chunks.append(pooled_features(backbone, x).float().cpu())
            out.append(torch.cat(chunks))
        bank = cls(torch.stack(out))
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
