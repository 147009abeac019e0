"""LabeledImages: a dataset held in memory as uint8 image and label tensors plus class descriptions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from ..utils.checks import check_int

__all__ = ["LabeledImages", "keep_per_class"]


@dataclass
class LabeledImages:
    """Images, their labels, the class names the labels index, and each class's descriptions.

    Attributes:
        images: uint8, ``(N, H, W)`` grayscale or ``(N, H, W, 3)`` RGB.
        labels: int64 ``(N,)``, indices into ``class_names``.
        class_names: class names in label order.
        descriptions: class name -> paraphrases; every class has at least one.
        name: dataset name, e.g. ``"fashion_mnist"``.

    Raises:
        ValueError: If the shapes, dtypes or labels are inconsistent, or a class has no descriptions.
    """

    images: torch.Tensor = field(repr=False)
    labels: torch.Tensor = field(repr=False)
    class_names: list[str]
    descriptions: dict[str, list[str]] = field(repr=False)
    name: str

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
            raise ValueError(f"{self.name}: images must be a uint8 tensor, got {getattr(images, 'dtype', images)}")
        if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
            raise ValueError(f"{self.name}: images must be (N, H, W) or (N, H, W, 3), got {tuple(images.shape)}")
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.ndim != 1:
            raise ValueError(
                f"{self.name}: labels must be an int64 (N,) tensor, got {getattr(labels, 'dtype', labels)}"
            )
        if len(labels) != len(images):
            raise ValueError(f"{self.name}: {len(images)} images but {len(labels)} labels")
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"{self.name}: duplicate class names in {self.class_names}")
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(self.class_names)):
            raise ValueError(
                f"{self.name}: labels span {int(labels.min())}..{int(labels.max())}, "
                f"valid: 0..{len(self.class_names) - 1} ({len(self.class_names)} classes)"
            )
        if not isinstance(self.descriptions, Mapping):
            raise TypeError(
                f"{self.name}: descriptions must be a dict of class -> list of str, got {self.descriptions!r}"
            )
        missing = [c for c in self.class_names if not self.descriptions.get(c)]
        if missing:
            raise ValueError(f"{self.name}: classes without descriptions: {missing}")

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"LabeledImages(name={self.name!r}, images={tuple(self.images.shape)}, classes={len(self.class_names)})"

    def subset(self, class_names: Sequence[str]) -> LabeledImages:
        """Keep only the images of ``class_names`` and relabel them 0..k-1 in the given order.

        Args:
            class_names: classes to keep, each once.

        Returns:
            A new LabeledImages; the images are copied.

        Raises:
            ValueError: If a name is unknown or repeated.
        """
        if isinstance(class_names, str):
            raise TypeError(f"class_names must be a sequence of names, not the str {class_names!r}")
        unknown = [c for c in class_names if c not in self.class_names]
        if unknown:
            raise ValueError(f"{self.name}: unknown classes {unknown}; valid: {self.class_names}")
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"{self.name}: class_names repeats a class: {list(class_names)}")
        old = torch.tensor([self.class_names.index(c) for c in class_names], dtype=torch.int64)
        remap = torch.full((len(self.class_names),), -1, dtype=torch.int64)
        remap[old] = torch.arange(len(old))
        keep = remap[self.labels] >= 0
        return LabeledImages(
            images=self.images[keep],
            labels=remap[self.labels[keep]],
            class_names=list(class_names),
            descriptions={c: list(self.descriptions[c]) for c in class_names},
            name=self.name,
        )


def keep_per_class(data: LabeledImages, n: int, seed: int = 0) -> LabeledImages:
    """Keep the first ``n`` images of each class after a seeded shuffle; the kept images stay in dataset order.

    Args:
        data: the dataset.
        n: images kept per class (classes with fewer keep all).
        seed: seed of the per-class shuffle.

    Raises:
        ValueError: If ``n`` is not a positive int.
    """
    check_int("limit_per_class", n)
    gen = torch.Generator().manual_seed(seed)
    kept = []
    for c in range(len(data.class_names)):
        index = torch.nonzero(data.labels == c).flatten()
        kept.append(index[torch.randperm(len(index), generator=gen)[:n]])
    keep = torch.sort(torch.cat(kept)).values
    descriptions = {c: list(texts) for c, texts in data.descriptions.items()}
    return LabeledImages(data.images[keep], data.labels[keep], list(data.class_names), descriptions, data.name)
