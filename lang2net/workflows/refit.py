"""Refit: after model choice on the validation classes, train once more on the training + validation classes.

A run with validation classes spends them on choices: the checkpoint (``train.select_on_validation``) and a head
memory's mix. The closed-form baselines then refit on training + validation classes; ``train.refit`` does the same
for a generator. The selection run stays in its folder; the refit run, in ``<folder>/refit``, starts from the same
initialisation (or warm start), draws episodes from every seen class, trains for the chosen number of steps (its
learning-rate schedule spans those steps) and takes the chosen memory mix, whose memory now holds the validation
classes' prototypes too. Nothing is chosen in the refit run: it has no held-out classes left.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from ..utils.atomic import write_atomic
from .episode_data import load_split
from .recipe import Recipe
from .training import train

__all__ = ["REFIT_FOLDER", "chosen_settings", "fit", "refit_recipe"]

logger = logging.getLogger(__name__)

REFIT_FOLDER = "refit"


def chosen_settings(recipe: Recipe, run_dir: str | Path) -> tuple[int, list[float] | None]:
    """What a finished selection run chose: its saved step (the best validation checkpoint's, else the last) and its
    head-memory mix ``[gate, beta]`` (``[gate, beta, classifier_gate]`` with a classifier memory; None without a memory), read from ``best/best.json`` and ``metrics.jsonl``."""
    run_dir = Path(run_dir)
    if not (run_dir / "generator" / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} holds no finished run (generator/config.json): train it first")
    steps = recipe.train.steps
    best = run_dir / "best" / "best.json"
    if recipe.train.select_on_validation and best.is_file():
        steps = int(json.loads(best.read_text(encoding="utf-8"))["step"])
    mix = None
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            if "memory_beta" in entry:
                mix = [float(entry["memory_gate"]), float(entry["memory_beta"])]
                mix += [float(entry["classifier_gate"])] if "classifier_gate" in entry else []
    if (recipe.adapter.memory or recipe.adapter.classifier_memory) and mix is None:
        raise ValueError(f"{run_dir} trained a head memory but logged no mix in metrics.jsonl")
    return steps, mix


def refit_recipe(recipe: Recipe, run_dir: str | Path, fold: int, init_from: str | Path | None = None) -> Recipe:
    """The recipe of the refit run of ``run_dir`` (a finished selection run of ``fold``): the fold's validation classes
    join its training classes (a split file written to ``run_dir/refit/split.json``), for the chosen steps and mix;
    the recipe is recorded as ``run_dir/refit/recipe.json``.
    ``init_from`` replaces the warm start (a delta run's refit starts from the refit head-only generator, its
    selection run from the selected one)."""
    run_dir = Path(run_dir)
    split = load_split(recipe, fold)
    if not split.validation:
        raise ValueError(f"train.refit needs validation classes to fold back in; fold {fold} has none")
    steps, mix = chosen_settings(recipe, run_dir)
    path = run_dir / REFIT_FOLDER / "split.json"
    entry = {"fold": fold, "seen": list(split.seen), "unseen": list(split.unseen), "validation": []}
    # load_split indexes folds by position: only this fold is filled, the others repeat it (never read)
    text = json.dumps({"version": 1, "folds": [dict(entry, fold=k) for k in range(fold + 1)]}, indent=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
    train_cfg = dataclasses.replace(
        recipe.train,
        steps=steps,
        warmup_steps=min(recipe.train.warmup_steps, steps - 1),
        checkpoint_every=min(recipe.train.checkpoint_every, steps),
        select_on_validation=False,
        refit=False,
        memory_mix=mix,
        init_from=recipe.train.init_from if init_from is None else str(init_from),
    )
    data = dataclasses.replace(recipe.data, split_file=str(path))
    refit = dataclasses.replace(recipe, data=data, train=train_cfg)
    recorded = json.dumps(refit.to_dict(), indent=1)  # what the refit run trains with, beside it
    write_atomic(path.parent / "recipe.json", lambda tmp: tmp.write_text(recorded + "\n", encoding="utf-8"))
    return refit


def fit(
    recipe: Recipe,
    output_dir: str | Path,
    *,
    fold: int = 0,
    head_only: bool = False,
    resume: bool = True,
    reuse: bool = False,
    progress: bool = True,
    refit_init_from: str | Path | None = None,
    feature_store: str | Path | None = None,
) -> tuple[Path, Path | None]:
    """Train a run, then its refit run when ``recipe.train.refit``; returns both generator folders (the refit's None
    without ``train.refit``). ``resume``: continue each run from its newest checkpoint (see :func:`train`);
    ``reuse``: a folder that already holds a finished generator is taken as it is. ``refit_init_from``: the refit run's
    warm start (default the recipe's ``train.init_from``); ``feature_store``: see :func:`train`."""
    output_dir = Path(output_dir)

    def run(r: Recipe, folder: Path) -> Path:
        generator = folder / "generator"
        if reuse and (generator / "config.json").is_file():
            logger.info("reusing %s", generator)
            return generator
        result = train(
            r, folder, fold=fold, head_only=head_only, resume=resume, progress=progress, feature_store=feature_store
        )
        assert result.generator_dir is not None  # train() ran every step
        return result.generator_dir

    selected = run(recipe, output_dir)
    if not recipe.train.refit:
        return selected, None
    return selected, run(refit_recipe(recipe, output_dir, fold, refit_init_from), output_dir / REFIT_FOLDER)
