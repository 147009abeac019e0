"""The data of meta-training episodes: a recipe's class split and dataset, loaded once, with every description of
the fold's classes embedded once (text model frozen)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from ..adapter import LanguageConditionedAdapter
from .recipe import Recipe

__all__ = ["EpisodeData", "count_folds", "load_recipe_data", "load_split", "prepare_episode_data"]


@dataclass
class EpisodeData:
    """Everything an episode needs, prepared once: images, labels, seen classes and every paraphrase's embedding."""

    images: Tensor  # uint8 (N, H, W[, 3])
    labels: Tensor  # (N,)
    seen: list[int]  # class indices usable in episodes
    paraphrases: list[Tensor]  # per class: (P_c, e) embeddings of its descriptions ((0, e) outside the fold)
    data_config: dict
    img_size: int
    validation: list[int] = dataclasses.field(default_factory=list)  # held-out seen classes, for model selection


def _splits(recipe: Recipe):
    from ..data import class_splits, load_split_file

    d = recipe.data
    if d.split_file is not None:
        return load_split_file(d.split_file)
    if d.dataset == "imagefolder":
        raise ValueError("imagefolder training needs seen/unseen classes: set data.split_file to a class-split JSON")
    return class_splits(d.dataset)


def count_folds(recipe: Recipe) -> int:
    """How many folds the recipe's class split has."""
    return len(_splits(recipe))


def load_split(recipe: Recipe, fold: int):
    """The recipe's class split for ``fold``: its split file, else the one shipped for its dataset."""
    d = recipe.data
    splits = _splits(recipe)
    if not 0 <= fold < len(splits):
        raise ValueError(f"fold {fold} does not exist for {d.split_file or d.dataset}: folds 0..{len(splits) - 1}")
    return splits[fold]


def load_recipe_data(recipe: Recipe, split: str, limit_per_class: int | None):
    """A split of the recipe's dataset, decoded once at the recipe's image size where the loader can."""
    from ..data import DATASETS, load_dataset

    d = recipe.data
    sized = "img_size" in DATASETS[d.dataset].options if d.dataset in DATASETS else False
    return load_dataset(
        d.dataset,
        split,
        root=d.root,
        descriptions=d.descriptions,
        limit_per_class=limit_per_class,
        seed=recipe.train.seed,
        **({"img_size": d.img_size} if sized else {}),
    )


def prepare_episode_data(recipe: Recipe, adapter: LanguageConditionedAdapter, backbone, fold: int) -> EpisodeData:
    """Load the training split, keep the fold's training classes (seen minus validation), and embed every description
    once (text model frozen)."""
    from ..data import validate_split

    d = recipe.data
    train = load_recipe_data(recipe, d.train_split, d.limit_per_class)
    split = load_split(recipe, fold)
    validate_split(split, train.descriptions)
    classes = split.train_classes
    if recipe.train.k_way > len(classes):
        raise ValueError(f"train.k_way={recipe.train.k_way} exceeds the {len(classes)} training classes of fold {fold}")
    seen = [train.class_names.index(c) for c in classes]
    validation = [train.class_names.index(c) for c in split.validation]
    encoder = adapter.text_encoder
    used = set(classes) | set(split.validation)  # only the fold's classes are ever drawn or scored: encode those
    empty = torch.empty(0, adapter.config.text_dim)
    paraphrases = [encoder.encode(train.descriptions[c]) if c in used else empty for c in train.class_names]
    config = dict(adapter.config.preprocessing)
    return EpisodeData(train.images, train.labels, seen, paraphrases, config, d.img_size, validation)
