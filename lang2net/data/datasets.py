"""The dataset registry and ``load_dataset``: Fashion-MNIST, scikit-learn digits, procedural shapes, emoji, folders."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..utils.checks import check_int
from .descriptions import load_descriptions, packaged_descriptions
from .digits import DIGIT_CLASSES, read_digits
from .emoji import EMOJI_SPLITS, load_emoji
from .fashion_mnist import FASHION_MNIST_CLASSES, read_fashion_mnist
from .imagefolder import match_descriptions, read_image_folder
from .labeled import LabeledImages, keep_per_class
from .shapes import ProceduralShapes

__all__ = ["DATASETS", "DatasetSpec", "load_dataset"]

SHAPES_PER_CLASS = {"train": 50, "test": 20}
SHAPES_RENDER_SEED = {"train": 0, "test": 1}  # different renderings of the same classes


@dataclass(frozen=True)
class DatasetSpec:
    """A registry entry.

    Attributes:
        loader: ``loader(split, **options) -> LabeledImages``.
        splits: valid split names.
        options: keyword options the loader takes ("root", "img_size", "skip_bad", "descriptions",
            "limit_per_class"); ``load_dataset`` rejects the others and applies descriptions/limit itself when the
            loader does not take them.
        summary: one line for error messages and docs.
        joinable: a split may also be several of ``splits`` joined by "+" (their images, in that order).
    """

    loader: Callable[..., LabeledImages]
    splits: tuple[str, ...]
    options: frozenset[str]
    summary: str
    joinable: bool = False

    def check_split(self, name: str, split: str) -> None:
        """ValueError naming the valid splits if ``split`` is not one of this dataset's."""
        parts = split.split("+") if self.joinable else [split]
        if split not in self.splits and not (len(set(parts)) == len(parts) and set(parts) <= set(self.splits)):
            joined = " (or distinct ones joined by '+')" if self.joinable else ""
            raise ValueError(f"{name} has no split {split!r}; valid: {list(self.splits)}{joined}")


# loaders


def _fashion_mnist(split: str, *, root: str | None = None) -> LabeledImages:
    images, labels = read_fashion_mnist(split, root)
    texts = packaged_descriptions("fashion_mnist")
    return LabeledImages(images, labels, list(FASHION_MNIST_CLASSES), texts, "fashion_mnist")


def _digits(split: str) -> LabeledImages:
    images, labels = read_digits(split)
    return LabeledImages(images, labels, list(DIGIT_CLASSES), packaged_descriptions("digits"), "digits")


def _shapes(split: str, *, img_size: int | None = None, limit_per_class: int | None = None) -> LabeledImages:
    shapes = ProceduralShapes(img_size=32 if img_size is None else img_size)
    n = SHAPES_PER_CLASS[split] if limit_per_class is None else limit_per_class
    seed = SHAPES_RENDER_SEED[split]
    images = torch.from_numpy(
        np.concatenate([shapes.render(c, n, seed) for c in range(len(shapes))])
    )  # (C * n, S, S, 3)
    labels = torch.arange(len(shapes)).repeat_interleave(n)
    return LabeledImages(images, labels, list(shapes.class_names), shapes.descriptions, "shapes")


def _emoji(split: str, **options) -> LabeledImages:
    return load_emoji(split, **options)


def _imagefolder(split: str, **options) -> LabeledImages:
    return read_image_folder(options.pop("root", None), split, **options)


DATASETS: dict[str, DatasetSpec] = {
    "fashion_mnist": DatasetSpec(
        _fashion_mnist, ("train", "test"), frozenset({"root"}), "Fashion-MNIST, 10 classes, 60000/10000 28x28 grey"
    ),
    "digits": DatasetSpec(
        _digits, ("train", "test"), frozenset(), "scikit-learn digits, 10 classes, 1438/359 8x8 grey (80/20)"
    ),
    "shapes": DatasetSpec(
        _shapes,
        ("train", "test"),
        frozenset({"img_size", "limit_per_class"}),
        "ProceduralShapes, 224 shape x colour x pattern classes, 50/20 renderings per class, 32x32 RGB",
    ),
    "emoji": DatasetSpec(
        _emoji,
        EMOJI_SPLITS,
        frozenset({"root", "img_size", "skip_bad", "descriptions"}),
        "emoji (Twemoji + Noto; OpenMoji, Fluent for training), 857 animal/food/place/activity/object classes, "
        "1 image per class and style, 64x64 RGB",
        joinable=True,
    ),
    "imagefolder": DatasetSpec(
        _imagefolder,
        ("train", "test"),
        frozenset({"root", "descriptions", "img_size", "skip_bad"}),
        "your folder root/<class>/*.{png,jpg,...} (or root/<split>/<class>/...) plus a descriptions file",
    ),
}


def load_dataset(
    name: str,
    split: str = "train",
    *,
    root: str | os.PathLike[str] | None = None,
    descriptions: str | os.PathLike[str] | None = None,
    limit_per_class: int | None = None,
    seed: int = 0,
    img_size: int | None = None,
    skip_bad: bool = False,
) -> LabeledImages:
    """Load a registered dataset split into memory.

    Args:
        name: a key of :data:`DATASETS`: "fashion_mnist", "digits", "shapes", "emoji" or "imagefolder".
        split: "train" or "test"; "emoji" also has one split per image style ("twitter", "google", and the
            training-only "openmoji", "fluent", "fluent-flat"), joinable with "+" ("twitter+google+openmoji"), and
            its "train" and "test" are the same images of both base styles (Twemoji, then Noto): its packaged class
            split (``class_splits("emoji")``) holds classes out, not images.
        root: Fashion-MNIST folder (idx files or a torchvision root; default: ``$LANG2NET_FASHION_MNIST``, the
            Debian package folder, ``~/.cache/torchvision``), the emoji cache folder (default:
            ``$LANG2NET_DATA/emoji``, else ``~/.cache/lang2net/emoji``; ``python -m lang2net.data.emoji fetch``
            installs it), or the imagefolder root.
        descriptions: a YAML/JSON descriptions file; replaces the packaged ones (it must describe exactly the
            dataset's classes) or, for imagefolder, defaults to ``root/descriptions.yaml``. For "emoji" it may name
            any subset of the classes (a description or a list each) and replaces the generated descriptions of
            those classes.
        limit_per_class: keep the first n images per class after a shuffle seeded by ``seed``; for "shapes", the
            number of renderings per class (default 50 train, 20 test).
        seed: seed of the ``limit_per_class`` shuffle. Train/test splits never depend on it, nor do the "shapes"
            renderings (fixed per split: every rendering is already an independent random draw).
        img_size: stored image side for "shapes" (default 32), "emoji" (default 64) and "imagefolder" (default 224).
        skip_bad: imagefolder and emoji only: warn about and skip unreadable images instead of raising.

    Raises:
        ValueError: If the name, split or an option is invalid for the dataset, or descriptions do not match.
        FileNotFoundError: If the dataset files (Fashion-MNIST, emoji data, image folder, descriptions) are missing.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {sorted(DATASETS)}")
    spec = DATASETS[name]
    spec.check_split(name, split)
    check_int("limit_per_class", limit_per_class, optional=True)
    given = {"root": root, "img_size": img_size, "skip_bad": skip_bad or None}
    unused = [key for key, value in given.items() if value is not None and key not in spec.options]
    if unused:
        raise ValueError(f"{name} does not take {unused}; it takes {sorted(spec.options - {'limit_per_class'})}")
    given |= {"descriptions": descriptions, "limit_per_class": limit_per_class, "skip_bad": skip_bad}
    data = spec.loader(split, **{key: given[key] for key in spec.options})
    if descriptions is not None and "descriptions" not in spec.options:
        texts = match_descriptions(data.class_names, load_descriptions(descriptions), os.fspath(descriptions))
        data = LabeledImages(data.images, data.labels, data.class_names, texts, data.name)
    if limit_per_class is not None and "limit_per_class" not in spec.options:
        data = keep_per_class(data, limit_per_class, seed)
    return data
