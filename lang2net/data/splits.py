"""Seen/unseen class splits: packaged JSON folds per dataset, their generators, and the check against descriptions."""

from __future__ import annotations

import functools
import itertools
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .descriptions import packaged_descriptions
from .digits import DIGIT_CLASSES
from .fashion_mnist import FASHION_MNIST_CLASSES
from .shapes import ATTRIBUTES, ProceduralShapes

__all__ = [
    "SPLIT_FORMAT_VERSION",
    "ClassSplit",
    "class_splits",
    "compositional_split",
    "generate_splits",
    "kfold_class_split",
    "validate_split",
]

SPLIT_FORMAT_VERSION = 1
_SPLITS_DIR = Path(__file__).parent / "splits"
_KFOLD = {"fashion_mnist": FASHION_MNIST_CLASSES, "digits": DIGIT_CLASSES}
N_FOLDS = 5
SPLIT_SEED = 0
SHAPES_UNSEEN_FRACTION = 0.2


@dataclass(frozen=True)
class ClassSplit:
    """One fold: the classes a generator trains on (seen) and the ones it must handle from descriptions (unseen).

    Raises:
        ValueError: If a side is empty, repeats a class, or the sides overlap.
        TypeError: If a class name is not a string.
    """

    fold: int
    seen: tuple[str, ...]
    unseen: tuple[str, ...]

    def __post_init__(self) -> None:
        # frozen: coerce lists (from JSON) to tuples through object.__setattr__
        for side in ("seen", "unseen"):
            names = getattr(self, side)
            if isinstance(names, str) or not isinstance(names, Sequence):
                raise TypeError(f"fold {self.fold}: {side} must be a sequence of class names, got {names!r}")
            object.__setattr__(self, side, tuple(names))
            bad = [n for n in names if not isinstance(n, str)]
            if bad:
                raise TypeError(f"fold {self.fold}: {side} class names must be str, got {bad}")
            if not names:
                raise ValueError(f"fold {self.fold}: no {side} classes")
            repeated = sorted(n for n, k in Counter(names).items() if k > 1)
            if repeated:
                raise ValueError(f"fold {self.fold}: {side} repeats {repeated}")
        both = sorted(set(self.seen) & set(self.unseen))
        if both:
            raise ValueError(f"fold {self.fold}: classes both seen and unseen: {both}")


def validate_split(split: ClassSplit, descriptions: Mapping[str, Sequence[str]]) -> None:
    """Check that every class of a split has descriptions.

    Raises:
        ValueError: Naming the classes without descriptions.
    """
    missing = [c for c in (*split.seen, *split.unseen) if not descriptions.get(c)]
    if missing:
        raise ValueError(
            f"fold {split.fold} names classes with no descriptions: {missing}; described: {sorted(descriptions)}"
        )


# generators (the packaged JSON files are their output; `python -m lang2net.data.splits` rewrites them)


def kfold_class_split(class_names: Sequence[str], n_folds: int = N_FOLDS, seed: int = SPLIT_SEED) -> dict[str, Any]:
    """Every class unseen in exactly one fold: a seeded permutation cut into ``n_folds`` equal groups.

    Returns:
        ``{"permutation": [...], "folds": [{"fold", "seen", "unseen"}, ...]}``, classes in ``class_names`` order.

    Raises:
        ValueError: If the classes do not divide into ``n_folds`` equal groups.
    """
    if n_folds < 2 or len(class_names) % n_folds:
        raise ValueError(f"{len(class_names)} classes do not divide into {n_folds} folds (need n_folds >= 2)")
    permutation = [int(i) for i in np.random.default_rng(seed).permutation(len(class_names))]
    per_fold = len(class_names) // n_folds
    folds = []
    for fold in range(n_folds):
        unseen = set(permutation[fold * per_fold : (fold + 1) * per_fold])
        folds.append(
            {
                "fold": fold,
                "seen": [c for i, c in enumerate(class_names) if i not in unseen],
                "unseen": [c for i, c in enumerate(class_names) if i in unseen],
            }
        )
    return {"permutation": permutation, "folds": folds}


def compositional_split(
    shapes: ProceduralShapes, fraction: float = SHAPES_UNSEEN_FRACTION, seed: int = SPLIT_SEED
) -> dict[str, Any]:
    """Hold out attribute combinations: unseen classes whose every attribute *pair* still occurs among seen classes.

    Classes are visited in a seeded order and held out greedily while every (shape, colour), (shape, pattern) and
    (colour, pattern) pair keeps a seen class, so unseen classes are new triples of familiar parts.

    Returns:
        ``{"folds": [{"fold": 0, "seen", "unseen"}]}``, classes in ``shapes.class_names`` order.
    """
    pairs = list(itertools.combinations(ATTRIBUTES, 2))
    keys = [[(a, b, attrs[a], attrs[b]) for a, b in pairs] for attrs in map(shapes.attributes, shapes.class_names)]
    seen_count = Counter(k for class_keys in keys for k in class_keys)
    target = round(fraction * len(shapes.class_names))
    unseen: set[int] = set()
    for i in np.random.default_rng(seed).permutation(len(shapes.class_names)):
        if len(unseen) == target:
            break
        if all(seen_count[k] > 1 for k in keys[i]):
            unseen.add(int(i))
            seen_count.subtract(keys[i])
    names = shapes.class_names
    fold = {
        "fold": 0,
        "seen": [c for i, c in enumerate(names) if i not in unseen],
        "unseen": [c for i, c in enumerate(names) if i in unseen],
    }
    return {"folds": [fold]}


def generate_splits(name: str) -> dict[str, Any]:
    """The content of a packaged split file, regenerated from its generator.

    Raises:
        ValueError: If ``name`` has no split generator.
    """
    if name in _KFOLD:
        body = kfold_class_split(_KFOLD[name])
        generator = f"kfold_class_split(n_folds={N_FOLDS}, seed={SPLIT_SEED})"
    elif name == "shapes":
        body = compositional_split(ProceduralShapes())
        generator = f"compositional_split(fraction={SHAPES_UNSEEN_FRACTION}, seed={SPLIT_SEED})"
    else:
        raise ValueError(f"no split generator for {name!r}; valid: {[*_KFOLD, 'shapes']}")
    return {"dataset": name, "version": SPLIT_FORMAT_VERSION, "generator": generator, **body}


def _dataset_descriptions(name: str) -> dict[str, list[str]]:
    return ProceduralShapes().descriptions if name == "shapes" else packaged_descriptions(name)


@functools.cache
def _load_splits(name: str) -> tuple[ClassSplit, ...]:
    path = _SPLITS_DIR / f"{name}.json"
    if not path.is_file():
        shipped = sorted(p.stem for p in _SPLITS_DIR.glob("*.json"))
        raise ValueError(
            f"no packaged class split for {name!r}; packaged: {shipped}. For your own data build "
            "ClassSplit(fold=0, seen=(...), unseen=(...)) yourself"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("version") != SPLIT_FORMAT_VERSION:
        raise ValueError(f"{path}: split format version {data.get('version')!r}, expected {SPLIT_FORMAT_VERSION}")
    splits = tuple(ClassSplit(int(f["fold"]), f["seen"], f["unseen"]) for f in data["folds"])
    if [s.fold for s in splits] != list(range(len(splits))):
        raise ValueError(f"{path}: folds must be numbered 0..{len(splits) - 1}, got {[s.fold for s in splits]}")
    descriptions = _dataset_descriptions(name)
    for split in splits:
        validate_split(split, descriptions)
    return splits


def class_splits(name: str) -> list[ClassSplit]:
    """The packaged seen/unseen folds of a dataset: 5 folds of 8 seen + 2 unseen for ``fashion_mnist`` and ``digits``;
    one fold of held-out attribute combinations for ``shapes``.

    Raises:
        ValueError: If ``name`` has no packaged split, or a split names a class without descriptions.
    """
    return list(_load_splits(name))


def _write_packaged_splits() -> None:
    """Regenerate every packaged split file."""
    for name in (*_KFOLD, "shapes"):
        path = _SPLITS_DIR / f"{name}.json"
        path.write_text(json.dumps(generate_splits(name), indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    _write_packaged_splits()
