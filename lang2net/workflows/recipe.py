"""Recipes: the YAML files in hub_configs/ that say which generator to build, on which data, and how to train it."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from ..config import AdapterConfig
from ..utils.checks import check_fraction, check_int, check_positive_int, reject_unknown_keys

__all__ = ["DataConfig", "EvalConfig", "Recipe", "TrainConfig", "load_recipe", "override_recipe"]

MIXED_PRECISION = ("no", "bf16", "fp16")
PARAPHRASES = ("sample", "mean")
EPISODES = ("random", "neighbours")
METHODS = ("head_only", "full", "static")  # generators a benchmark recipe trains (see workflows.reproduce)


def _from_dict(cls, data: Any, where: str):
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    reject_unknown_keys(data, known, "unknown keys {unknown} in {where}; valid keys: {known}", where=where)
    return cls(**data)


def _positive(where: str, **values: Any) -> None:
    for name, value in values.items():
        check_positive_int(f"{where}.{name}", value)


@dataclass
class DataConfig:
    """Which images and descriptions to train and evaluate on.

    Attributes:
        dataset: "fashion_mnist", "digits", "shapes", "emoji" or "imagefolder".
        root: dataset folder (imagefolder, emoji cache; or where Fashion-MNIST lives when not in the default places).
        descriptions: descriptions file (imagefolder; for the others it replaces or extends the shipped ones).
        split_file: a class-split JSON anywhere on disk (same format as ``lang2net/data/splits/*.json``); default: the
            split shipped for the dataset.
        train_split, test_split: the dataset splits to train and evaluate on (emoji: "train"/"test" are both
            styles, "twitter" / "google" one style each).
        img_size: side the images are decoded at and fed to the backbone (64: EfficientNet-Lite0 trains ~220 img/s
            on 2 CPUs); recorded in the trained generator's config as its input size.
        limit_per_class: training images kept per class (None: all).
        test_limit_per_class: test images kept per class (None: all).
    """

    dataset: str = "fashion_mnist"
    root: str | None = None
    descriptions: str | None = None
    split_file: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    img_size: int = 64
    limit_per_class: int | None = None
    test_limit_per_class: int | None = None

    def __post_init__(self) -> None:
        _positive("data", img_size=self.img_size)
        for name in ("limit_per_class", "test_limit_per_class"):
            if getattr(self, name) is not None:
                _positive("data", **{name: getattr(self, name)})


@dataclass
class TrainConfig:
    """Episodic meta-training settings.

    Attributes:
        steps: optimiser steps (one episode per step and process).
        k_way: classes per episode, drawn from the seen classes.
        batch_size: images per episode, balanced over its classes.
        lr, weight_decay: AdamW.
        warmup_steps: linear warm-up, then cosine decay to zero.
        grad_clip: max global gradient norm.
        seed: seeds initialisation, episodes and paraphrase choice.
        mixed_precision: "no", "bf16" or "fp16" (applied on GPU; the CPU runs fp32).
        augment: strength of the image augmentation in [0, 1] (0: none): random resized crops, small rotations and
            scale changes, colour jitter and background tints, scaled together (see ``lang2net.data.augment``).
        label_smoothing: cross-entropy label smoothing.
        paraphrases: how an episode describes each class: "sample" (one of its descriptions at random each time)
            or "mean" (their embeddings averaged, exactly as a generated task sees the class at inference).
        feature_views: head-only runs only (0: off): compute the frozen backbone's pooled features of every training
            image once, under this many views (view 0 plain, the others augmented at ``augment`` strength), and train
            on them instead of running the backbone each step (see ``lang2net.workflows.feature_bank``); delta runs
            always read images.
        episodes: how an episode's classes are drawn: "random" (``k_way`` seen classes at random) or "neighbours"
            (an anchor class at random plus ``k_way - 1`` drawn from its ``2 (k_way - 1)`` nearest seen classes by the
            cosine similarity of their description embeddings: classes that are hard to tell apart, so that
            adapting to the task's own classes pays; see ``lang2net.data.EpisodeSampler``).
        trunk_cache: delta runs without augmentation on a backbone that can be cut (timm's EfficientNet and ResNet
            families): compute the frozen trunk before the first adapted layer once for every training image and
            run only the rest each step. Exact (the same logits); much faster when the deltas sit late.
        init_from: a trained generator folder to start from (e.g. the head-only one, for a delta run): every weight
            whose name and shape match is copied; the rest keep their initialisation.
        checkpoint_every: steps between checkpoints (the last step always checkpoints).
        keep_checkpoints: how many recent checkpoints stay on disk.
        log_every: steps between metric lines.
        select_on_validation: when the fold has validation classes, every checkpoint scores zero-shot top-1 over
            them (all at once, their training-split images, no augmentation; logged as ``val_top1``) and the saved
            generator is the best-scoring checkpoint's (early stopping on classes never trained on).
        refit: after the checkpoint (and a head memory's mix) is chosen on the validation classes, train once more
            from the start on the training + validation classes for the chosen number of steps, with the chosen mix,
            as the closed-form baselines refit on both (see ``lang2net.workflows.refit``). Protocol A and
            ``--publish`` use the refit generator; protocol B's calibration treats validation classes as unseen, so
            it measures the selection run's.
        memory_mix: a fixed head-memory mix ``[gate, beta]`` (``[gate, beta, classifier_gate]`` with a classifier
            memory) instead of choosing one on validation classes (a refit run takes its selection run's).
    """

    steps: int = 500
    k_way: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    grad_clip: float = 1.0
    seed: int = 0
    mixed_precision: str = "bf16"
    augment: float = 0.0
    label_smoothing: float = 0.0
    paraphrases: str = "sample"
    feature_views: int = 0
    episodes: str = "random"
    trunk_cache: bool = True
    init_from: str | None = None
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    select_on_validation: bool = True
    refit: bool = False
    memory_mix: list[float] | None = None

    def __post_init__(self) -> None:
        mix = self.memory_mix
        if mix is not None and not (
            isinstance(mix, (list, tuple))
            and len(mix) in (2, 3)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in mix)
            and mix[0] >= 0
            and mix[1] > 0
            and (len(mix) == 2 or mix[2] >= 0)
        ):
            raise ValueError(
                f"train.memory_mix must be [gate >= 0, beta > 0], [gate, beta, classifier_gate >= 0] or null, got {mix!r}"
            )
        _positive("train", steps=self.steps, k_way=self.k_way, batch_size=self.batch_size)
        _positive("train", checkpoint_every=self.checkpoint_every, keep_checkpoints=self.keep_checkpoints)
        _positive("train", log_every=self.log_every)
        check_int("train.feature_views", self.feature_views, minimum=0)
        if self.episodes not in EPISODES:
            raise ValueError(f"train.episodes must be one of {EPISODES}, got {self.episodes!r}")
        if self.paraphrases not in PARAPHRASES:
            raise ValueError(f"train.paraphrases must be one of {PARAPHRASES}, got {self.paraphrases!r}")
        if self.k_way < 2:
            raise ValueError(f"train.k_way must be at least 2 (a 1-way episode teaches nothing), got {self.k_way}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"train.mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        check_fraction("train.augment", self.augment, high_open=False)
        check_fraction("train.label_smoothing", self.label_smoothing)
        if not (self.lr > 0 and self.grad_clip > 0 and self.weight_decay >= 0 and self.warmup_steps >= 0):
            raise ValueError("train.lr and train.grad_clip must be > 0, weight_decay and warmup_steps >= 0")


@dataclass
class EvalConfig:
    """Evaluation settings: which folds, batch size, and the ImageNet top-k used by the text-similarity baseline."""

    folds: list[int] | None = None  # None: every fold of the dataset's class split
    batch_size: int = 256
    text_similarity_top_k: int = 10
    # two-style benchmarks (emoji), see lang2net.workflows.reproduce:
    generators: dict[str, list[int] | None] | None = None  # protocol A method -> folds (None: every fold)
    gzsl_generators: dict[str, list[int] | None] | None = None  # protocol B, trained on gzsl_train_split
    gzsl_train_split: str = "twitter"
    baseline_img_sizes: list[int] = field(default_factory=list)  # extra sizes measured for the baselines only
    publish: str = "full"  # the method whose first-fold generator ``reproduce --publish`` writes
    few_way: list[int] = field(default_factory=list)  # protocol C: class counts of tasks among the unseen classes
    few_way_rounds: int = 10  # protocol C: partitions of the unseen classes into tasks, per count
    few_way_similar: list[int] = field(default_factory=list)  # protocol C: counts of tasks of similar classes

    def __post_init__(self) -> None:
        _positive("eval", batch_size=self.batch_size, text_similarity_top_k=self.text_similarity_top_k)
        _positive("eval", few_way_rounds=self.few_way_rounds)
        for key in ("few_way", "few_way_similar"):
            counts = getattr(self, key)
            if not isinstance(counts, list) or not all(
                isinstance(w, int) and not isinstance(w, bool) and w >= 2 for w in counts
            ):
                raise ValueError(f"eval.{key} must be a list of class counts >= 2, got {counts!r}")
        if self.publish not in METHODS:
            raise ValueError(f"eval.publish: unknown method {self.publish!r}; valid: {list(METHODS)}")
        for size in self.baseline_img_sizes:
            _positive("eval", baseline_img_sizes=size)
        for key in ("generators", "gzsl_generators"):
            table = getattr(self, key)
            if table is None:
                continue
            if not isinstance(table, dict):
                raise ValueError(f"eval.{key} maps methods to folds, got {type(table).__name__}")
            for method, folds in table.items():
                if method not in METHODS:
                    raise ValueError(f"eval.{key}: unknown method {method!r}; valid: {list(METHODS)}")
                if folds is not None and not (
                    isinstance(folds, list) and all(isinstance(f, int) and not isinstance(f, bool) for f in folds)
                ):
                    raise ValueError(f"eval.{key}.{method} must be a list of fold numbers or null, got {folds!r}")


@dataclass
class Recipe:
    """A whole recipe: the generator's AdapterConfig plus data, training and evaluation settings."""

    name: str
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    description: str = ""
    card: dict[str, Any] = field(default_factory=dict)  # model-card text of what it builds (see io.cards.CARD_KEYS)

    def __post_init__(self) -> None:
        from ..io.cards import check_card_section

        check_card_section(self.card, "recipe card")
        if not isinstance(self.name, str) or not self.name or any(c in self.name for c in "/\\\0") or ".." in self.name:
            raise ValueError(f"recipe name must be a plain folder name, got {self.name!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        if not isinstance(data, dict):
            raise ValueError(f"a recipe is a mapping, got {type(data).__name__}")
        known = {"name", "adapter", "data", "train", "eval", "description", "card"}
        reject_unknown_keys(data, known, "unknown recipe keys {unknown}; valid keys: {known}")
        if "name" not in data:
            raise ValueError("a recipe needs a name")
        return cls(
            name=data["name"],
            adapter=AdapterConfig.from_dict(data.get("adapter") or {}),
            data=_from_dict(DataConfig, data.get("data"), "data"),
            train=_from_dict(TrainConfig, data.get("train"), "train"),
            eval=_from_dict(EvalConfig, data.get("eval"), "eval"),
            description=data.get("description", ""),
            card=data.get("card") or {},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "adapter": {
                k: v for k, v in self.adapter.to_dict().items() if k not in ("text_dim", "feature_dim", "target_specs")
            },
            "data": dataclasses.asdict(self.data),
            "train": dataclasses.asdict(self.train),
            "eval": dataclasses.asdict(self.eval),
            "card": dict(self.card),
        }


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read a recipe YAML (or JSON) file; unknown keys and bad values are errors that name them."""
    import yaml

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"recipe not found: {path}")
    with open(path, "rb") as f:
        try:
            data = yaml.safe_load(f.read().decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ValueError(f"recipe {path} is not UTF-8 text: {e}") from None
        except RecursionError:
            raise ValueError(f"recipe {path} nests too deeply to be a recipe") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ValueError(f"recipe {path} does not parse{where}: {getattr(e, 'problem', e)}") from None
    if data is None:
        raise ValueError(f"recipe {path} is empty; a recipe needs at least a name (see hub_configs/ for examples)")
    try:
        return Recipe.from_dict(data)
    except (ValueError, TypeError) as e:
        raise ValueError(f"recipe {path}: {e}") from None


def override_recipe(recipe: Recipe, assignments: list[str] | tuple[str, ...]) -> Recipe:
    """A copy of ``recipe`` with ``section.key=value`` assignments applied (values are YAML: ``64``, ``[0, 1]``,
    ``{head_only: [0]}``, ``null``), validated like a recipe file; e.g. ``["train.k_way=96", "adapter.rank=16"]``.

    Raises:
        ValueError: an assignment without ``=``, a section or key the recipe does not have, or a bad value; the
            message names it and lists the valid ones.
    """
    import yaml

    data = recipe.to_dict()
    sections = [k for k, v in data.items() if isinstance(v, dict) and k != "card"]
    for item in assignments:
        key, sep, text = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ValueError(f"override {item!r} is not section.key=value (e.g. train.k_way=96)")
        if section not in sections:
            raise ValueError(f"override {item!r}: unknown section {section!r}; valid: {sections}")
        if name not in data[section]:
            raise ValueError(f"override {item!r}: {section} has no key {name!r}; valid: {sorted(data[section])}")
        try:
            data[section][name] = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"override {item!r}: the value does not parse as YAML ({e})") from None
    try:
        return Recipe.from_dict(data)
    except (ValueError, TypeError) as e:
        raise ValueError(f"overrides {list(assignments)}: {e}") from None
