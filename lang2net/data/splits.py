"""Seen/unseen class splits: packaged JSON folds per dataset, their generators, and the check against descriptions."""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.checks import check_int
from .descriptions import packaged_descriptions
from .digits import DIGIT_CLASSES
from .emoji import emoji_classes, emoji_descriptions
from .fashion_mnist import FASHION_MNIST_CLASSES
from .shapes import ATTRIBUTES, ProceduralShapes

__all__ = [
    "SPLIT_FORMAT_VERSION",
    "ClassSplit",
    "class_splits",
    "compositional_split",
    "generate_splits",
    "kfold_class_split",
    "load_split_file",
    "stratified_class_split",
    "validate_split",
]

logger = logging.getLogger(__name__)

SPLIT_FORMAT_VERSION = 1
_SPLITS_DIR = Path(__file__).parent / "splits"
_KFOLD = {"fashion_mnist": FASHION_MNIST_CLASSES, "digits": DIGIT_CLASSES}
N_FOLDS = 5
SPLIT_SEED = 0
SHAPES_UNSEEN_FRACTION = 0.2
SHAPES_VALIDATION_FRACTION = 0.1
EMOJI_SPLIT = {"n_folds": 4, "unseen_fraction": 0.25, "validation_fraction": 0.1, "seed": SPLIT_SEED}


@dataclass(frozen=True)
class ClassSplit:
    """One fold: the classes a generator trains on (seen) and the ones it must handle from descriptions (unseen).

    Attributes:
        fold: the fold number.
        seen: classes available for training.
        unseen: classes held out for zero-shot evaluation.
        validation: a subset of ``seen`` held out from training for calibration, early stopping and hyperparameter
            choice (empty when the split file has none); :attr:`train_classes` is the rest of ``seen``.

    Raises:
        ValueError: If seen or unseen is empty, a side repeats a class, seen and unseen overlap, or validation is
            not a subset of seen.
        TypeError: If a class name is not a string.
    """

    fold: int
    seen: tuple[str, ...]
    unseen: tuple[str, ...]
    validation: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # frozen: coerce lists (from JSON) to tuples through object.__setattr__
        for side in ("seen", "unseen", "validation"):
            names = getattr(self, side)
            if isinstance(names, str) or not isinstance(names, Sequence):
                raise TypeError(f"fold {self.fold}: {side} must be a sequence of class names, got {names!r}")
            object.__setattr__(self, side, tuple(names))
            bad = [n for n in names if not isinstance(n, str)]
            if bad:
                raise TypeError(f"fold {self.fold}: {side} class names must be str, got {bad}")
            if not names and side != "validation":
                raise ValueError(f"fold {self.fold}: no {side} classes")
            repeated = sorted(n for n, k in Counter(names).items() if k > 1)
            if repeated:
                raise ValueError(f"fold {self.fold}: {side} repeats {repeated}")
        both = sorted(set(self.seen) & set(self.unseen))
        if both:
            raise ValueError(f"fold {self.fold}: classes both seen and unseen: {both}")
        outside = [n for n in self.validation if n not in set(self.seen)]
        if outside:
            raise ValueError(f"fold {self.fold}: validation classes must be seen classes; not seen: {outside}")

    @property
    def train_classes(self) -> tuple[str, ...]:
        """The seen classes minus the validation classes, in seen order."""
        held = set(self.validation)
        return tuple(n for n in self.seen if n not in held)


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
    """Every class unseen in exactly one fold: a seeded permutation cut into ``n_folds`` equal groups; each fold's
    validation classes are the next fold's unseen group (seen here, held out from training for model choice and
    calibration), so every class also validates exactly one fold.

    Returns:
        ``{"permutation": [...], "folds": [{"fold", "seen", "unseen", "validation"}, ...]}``, classes in
        ``class_names`` order.

    Raises:
        ValueError: If the classes do not divide into ``n_folds`` equal groups.
    """
    if n_folds < 2 or len(class_names) % n_folds:
        raise ValueError(f"{len(class_names)} classes do not divide into {n_folds} folds (need n_folds >= 2)")
    permutation = [int(i) for i in np.random.default_rng(seed).permutation(len(class_names))]
    per_fold = len(class_names) // n_folds
    groups = [set(permutation[k * per_fold : (k + 1) * per_fold]) for k in range(n_folds)]
    folds = []
    for fold, unseen in enumerate(groups):
        validation = groups[(fold + 1) % n_folds]
        folds.append(
            {
                "fold": fold,
                "seen": [c for i, c in enumerate(class_names) if i not in unseen],
                "unseen": [c for i, c in enumerate(class_names) if i in unseen],
                "validation": [c for i, c in enumerate(class_names) if i in validation],
            }
        )
    return {"permutation": permutation, "folds": folds}


def compositional_split(
    shapes: ProceduralShapes,
    fraction: float = SHAPES_UNSEEN_FRACTION,
    seed: int = SPLIT_SEED,
    validation_fraction: float = SHAPES_VALIDATION_FRACTION,
) -> dict[str, Any]:
    """Hold out attribute combinations: unseen classes whose every attribute *pair* still occurs among training
    classes.

    Classes are visited in a seeded order and held out greedily while every (shape, colour), (shape, pattern) and
    (colour, pattern) pair keeps a class that is trained on, so unseen classes are new triples of familiar parts:
    first ``fraction`` of all classes as unseen, then ``validation_fraction`` of the seen ones as validation (the
    same rule, the same visiting order; validation classes are seen but not trained on).

    Returns:
        ``{"folds": [{"fold": 0, "seen", "unseen", "validation"}]}``, classes in ``shapes.class_names`` order.
    """
    pairs = list(itertools.combinations(ATTRIBUTES, 2))
    keys = [[(a, b, attrs[a], attrs[b]) for a, b in pairs] for attrs in map(shapes.attributes, shapes.class_names)]
    trained = Counter(k for class_keys in keys for k in class_keys)
    order = [int(i) for i in np.random.default_rng(seed).permutation(len(shapes.class_names))]

    def hold_out(target: int, taken: set[int]) -> set[int]:
        held: set[int] = set()
        for i in order:
            if len(held) == target:
                break
            if i not in taken and all(trained[k] > 1 for k in keys[i]):
                held.add(i)
                trained.subtract(keys[i])
        return held

    unseen = hold_out(round(fraction * len(shapes.class_names)), set())
    validation = hold_out(round(validation_fraction * (len(shapes.class_names) - len(unseen))), unseen)
    names = shapes.class_names
    fold = {
        "fold": 0,
        "seen": [c for i, c in enumerate(names) if i not in unseen],
        "unseen": [c for i, c in enumerate(names) if i in unseen],
        "validation": [c for i, c in enumerate(names) if i in validation],
    }
    return {"folds": [fold]}


def _check_stratified(
    classes: Sequence[str], categories: Sequence[str], n_folds: int, unseen_fraction: float, validation_fraction: float
) -> None:
    if len(classes) != len(categories):
        raise ValueError(f"{len(classes)} classes but {len(categories)} categories; give one category per class")
    repeated = sorted(n for n, k in Counter(classes).items() if k > 1)
    if repeated:
        raise ValueError(f"classes repeat: {repeated}")
    check_int("n_folds", n_folds)
    if unseen_fraction <= 0 or unseen_fraction * n_folds > 1 + 1e-9:
        raise ValueError(
            f"unseen_fraction must be in (0, 1/n_folds] = (0, {1 / n_folds:.4g}] so that the folds' unseen sets are "
            f"disjoint, got {unseen_fraction!r}"
        )
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")


def _draw_validation(
    members: Mapping[str, Sequence[int]], held: set[int], fraction: float, rng: np.random.Generator
) -> set[int]:
    """Per category, ``round(fraction * seen)`` of its classes not in ``held``, drawn with ``rng``."""
    validation: set[int] = set()
    for indices in members.values():
        seen = [i for i in indices if i not in held]
        validation.update(int(i) for i in rng.permutation(seen)[: round(fraction * len(seen))])
    return validation


def stratified_class_split(
    classes: Sequence[str],
    categories: Sequence[str],
    n_folds: int = 4,
    unseen_fraction: float = 0.25,
    validation_fraction: float = 0.1,
    seed: int = SPLIT_SEED,
) -> dict[str, Any]:
    """Folds with disjoint unseen sets, stratified by category, plus validation classes drawn from each fold's seen.

    Per category (in sorted order, one seeded generator for all), a permutation of its classes is cut into
    ``n_folds`` disjoint groups of ``unseen_fraction`` of the category each (sizes differ by at most one; the larger
    groups rotate over the folds). With ``unseen_fraction * n_folds == 1`` every class is unseen in exactly one fold.
    Then, per fold and category, ``round(validation_fraction * seen)`` of the category's seen classes become
    validation classes.

    Args:
        classes: class names, each once.
        categories: the category of each class.
        n_folds: number of folds.
        unseen_fraction: share of each category unseen in a fold; at most ``1 / n_folds``.
        validation_fraction: share of each category's seen classes held out for validation.
        seed: seed of the generator.

    Returns:
        ``{"folds": [{"fold", "seen", "unseen", "validation"}, ...]}``, classes in ``classes`` order.

    Raises:
        ValueError: If the arguments are inconsistent (the message names the bad value and the valid range).
    """
    _check_stratified(classes, categories, n_folds, unseen_fraction, validation_fraction)
    rng = np.random.default_rng(seed)
    members: dict[str, list[int]] = {}
    for i, category in enumerate(categories):
        members.setdefault(category, []).append(i)
    members = {c: members[c] for c in sorted(members)}
    unseen: list[set[int]] = [set() for _ in range(n_folds)]
    offset = 0
    for indices in members.values():
        total = min(len(indices), round(unseen_fraction * n_folds * len(indices)))
        for g, group in enumerate(np.array_split(rng.permutation(indices)[:total], n_folds)):
            unseen[(g + offset) % n_folds].update(int(i) for i in group)
        offset += total % n_folds
    folds = []
    for fold, held in enumerate(unseen):
        validation = _draw_validation(members, held, validation_fraction, rng)
        folds.append(
            {
                "fold": fold,
                "seen": [c for i, c in enumerate(classes) if i not in held],
                "unseen": [c for i, c in enumerate(classes) if i in held],
                "validation": [c for i, c in enumerate(classes) if i in validation],
            }
        )
    return {"folds": folds}


def generate_splits(name: str) -> dict[str, Any]:
    """The content of a packaged split file, regenerated from its generator.

    "emoji" needs the fetched emoji data and the CLDR annotations (its class names come from them).

    Raises:
        ValueError: If ``name`` has no split generator.
        FileNotFoundError: For "emoji", if its data is missing.
    """
    if name in _KFOLD:
        body = kfold_class_split(_KFOLD[name])
        generator = f"kfold_class_split(n_folds={N_FOLDS}, seed={SPLIT_SEED})"
    elif name == "shapes":
        body = compositional_split(ProceduralShapes())
        generator = (
            f"compositional_split(fraction={SHAPES_UNSEEN_FRACTION}, seed={SPLIT_SEED}, "
            f"validation_fraction={SHAPES_VALIDATION_FRACTION})"
        )
    elif name == "emoji":
        classes = emoji_classes()
        body = stratified_class_split([c.name for c in classes], [c.category for c in classes], **EMOJI_SPLIT)
        generator = f"stratified_class_split({', '.join(f'{k}={v}' for k, v in EMOJI_SPLIT.items())}) by category"
    else:
        raise ValueError(f"no split generator for {name!r}; valid: {[*_KFOLD, 'shapes', 'emoji']}")
    return {"dataset": name, "version": SPLIT_FORMAT_VERSION, "generator": generator, **body}


def _dataset_descriptions(name: str) -> dict[str, list[str]] | None:
    """The descriptions a packaged split is checked against; None for emoji when its data is not installed."""
    if name == "shapes":
        return ProceduralShapes().descriptions
    if name == "emoji":
        try:
            return emoji_descriptions(emoji_classes())
        except FileNotFoundError as exc:
            logger.debug("emoji split not checked against descriptions: %s", exc)
            return None
    return packaged_descriptions(name)


def _fold(entry: Any, index: int, path: Path) -> ClassSplit:
    if not isinstance(entry, Mapping) or not {"fold", "seen", "unseen"} <= set(entry):
        raise ValueError(f"{path}: folds[{index}] must be an object with 'fold', 'seen', 'unseen' (and 'validation')")
    return ClassSplit(int(entry["fold"]), entry["seen"], entry["unseen"], entry.get("validation", ()))


def _read_split_file(path: Path) -> tuple[ClassSplit, ...]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("folds"), list) or not data["folds"]:
        raise ValueError(f'{path}: expected {{"version": {SPLIT_FORMAT_VERSION}, "folds": [...]}} with folds')
    if data.get("version", SPLIT_FORMAT_VERSION) != SPLIT_FORMAT_VERSION:
        raise ValueError(f"{path}: split format version {data.get('version')!r}, expected {SPLIT_FORMAT_VERSION}")
    splits = tuple(_fold(entry, i, path) for i, entry in enumerate(data["folds"]))
    if [s.fold for s in splits] != list(range(len(splits))):
        raise ValueError(f"{path}: folds must be numbered 0..{len(splits) - 1}, got {[s.fold for s in splits]}")
    return splits


def load_split_file(
    path: str | os.PathLike[str], descriptions: Mapping[str, Sequence[str]] | None = None
) -> list[ClassSplit]:
    """Read a class split file from anywhere on disk, in the packaged format.

    The format: ``{"version": 1, "folds": [{"fold": 0, "seen": [...], "unseen": [...], "validation": [...]}, ...]}``
    (``validation`` and ``version`` optional; other keys such as ``dataset`` and ``generator`` are ignored).

    Args:
        path: the JSON file.
        descriptions: class name -> descriptions; when given, every seen and unseen class must have some.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not such a file, or (with ``descriptions``) names a class without descriptions.
        TypeError: If a class name is not a string.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"class split file not found: {path}")
    splits = _read_split_file(path)
    if descriptions is not None:
        for split in splits:
            validate_split(split, descriptions)
    return list(splits)


@functools.cache
def _load_splits(name: str) -> tuple[ClassSplit, ...]:
    path = _SPLITS_DIR / f"{name}.json"
    if not path.is_file():
        shipped = sorted(p.stem for p in _SPLITS_DIR.glob("*.json"))
        raise ValueError(
            f"no packaged class split for {name!r}; packaged: {shipped}. For your own data build "
            "ClassSplit(fold=0, seen=(...), unseen=(...)) yourself or pass a split file path"
        )
    splits = _read_split_file(path)
    descriptions = _dataset_descriptions(name)
    if descriptions is not None:
        for split in splits:
            validate_split(split, descriptions)
    return splits


def class_splits(name: str | os.PathLike[str]) -> list[ClassSplit]:
    """The seen/unseen folds of a packaged dataset, or of a split file given by path.

    Packaged: 5 folds of 8 seen + 2 unseen for ``fashion_mnist`` and ``digits``; one fold of held-out attribute
    combinations for ``shapes``; for ``emoji``, 4 folds stratified by category, each class unseen in exactly one fold
    (about 214 unseen, 579 train and 64 validation classes per fold). The emoji split is checked against the emoji
    descriptions only when the emoji data is installed (without it the file is still read and checked for
    consistency), because those descriptions are built from the fetched data.

    Args:
        name: a packaged dataset name, or a path (``os.PathLike``, or a str ending in ``.json``) read with
            :func:`load_split_file`.

    Raises:
        ValueError: If ``name`` has no packaged split, or a split names a class without descriptions.
        FileNotFoundError: If a split file path does not exist.
    """
    if isinstance(name, os.PathLike) or name.endswith(".json"):
        return load_split_file(name)
    return list(_load_splits(name))


def _write_packaged_splits(names: Sequence[str] = (*_KFOLD, "shapes", "emoji")) -> None:
    """Regenerate packaged split files; emoji only when its data is installed."""
    for name in names:
        try:
            content = generate_splits(name)
        except FileNotFoundError as exc:
            logger.warning("not regenerating the %s split: %s", name, exc)
            continue
        path = _SPLITS_DIR / f"{name}.json"
        path.write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":  # python -m lang2net.data.splits [name ...]: rewrite those split files (default: all)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _write_packaged_splits(sys.argv[1:] or (*_KFOLD, "shapes", "emoji"))
