"""Reproduce a benchmark recipe: train every method on every fold, then measure protocols A and B.

Every dataset runs the same benchmark (:func:`lang2net.workflows.benchmark.run_benchmark`) on two image sets: emoji's
two icon styles (``twitter``, ``google``), or for any other dataset its train split (limited to
``data.limit_per_class``) and test split (``data.test_limit_per_class``). There protocol A is the classic zero-shot
test (baselines fitted on the train split, the unseen classes' test images) and protocol B the classic generalised
one (the test images of every class, calibrated on the validation classes); the fold's split needs validation classes.

Methods (``eval.generators`` / ``eval.gzsl_generators`` in the recipe, each mapped to the folds it is trained on):

- ``head_only``: the generated head alone (no backbone deltas).
- ``full``: the recipe's deltas plus the head, warm-started from the same fold's ``head_only`` run when there is one.
- ``static``: the control that isolates language: deltas learned once and shared by every task (no text in them)
  plus the generated head, warm-started like ``full`` and trained with the same budget.

Run folders: ``<runs>/fold<k>/<method>`` (protocol A, trained on ``data.train_split``) and, for emoji,
``<runs>/fold<k>/gzsl/<method>`` (protocol B, trained on ``eval.gzsl_train_split``, the first style only; elsewhere
protocol B measures the protocol A generators, which never saw the test split). A finished run (its ``generator/``
exists) is not retrained; an interrupted one resumes from its last checkpoint. The report (``results.json``,
``results.md``, ``per_category.png`` for emoji, ``examples.png``) goes to ``<runs>/report``, one more per extra
baseline image size (``<runs>/report_<size>px``), with the wall time of every stage.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..utils.atomic import write_atomic
from .recipe import METHODS, Recipe

__all__ = ["METHODS", "benchmark_sets", "method_recipe", "publish_benchmark", "reproduce_benchmark", "train_method"]

logger = logging.getLogger(__name__)

STYLES = ("twitter", "google")


def benchmark_sets(recipe: Recipe) -> tuple[tuple[str, int | None], tuple[str, int | None]]:
    """The benchmark's two image sets as (split, images kept per class): emoji's two styles (every image), else the
    recipe's train split and test split with their limits."""
    d = recipe.data
    if d.dataset == "emoji":
        return (STYLES[0], None), (STYLES[1], None)
    if d.train_split == d.test_split:
        raise ValueError(f"data.train_split and data.test_split are both {d.train_split!r}; the benchmark needs two")
    return (d.train_split, d.limit_per_class), (d.test_split, d.test_limit_per_class)


def method_recipe(
    recipe: Recipe, method: str, *, warm_start: str | os.PathLike[str] | None = None, train_split: str | None = None
) -> Recipe:
    """The recipe a method trains with: its delta mode, optional warm start and training split."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {list(METHODS)}")
    mode = {"head_only": "none", "full": recipe.adapter.delta_mode, "static": "static"}[method]
    if method == "full" and mode in ("none", "static"):
        raise ValueError(f"method 'full' needs language-written deltas; the recipe's delta_mode is {mode!r}")
    adapter = dataclasses.replace(recipe.adapter, delta_mode=mode)
    train = recipe.train
    if warm_start is not None and method != "head_only":
        train = dataclasses.replace(train, init_from=os.fspath(warm_start))
    data = recipe.data if train_split is None else dataclasses.replace(recipe.data, train_split=train_split)
    return dataclasses.replace(recipe, adapter=adapter, train=train, data=data)


def train_method(
    recipe: Recipe,
    folder: Path,
    fold: int,
    method: str,
    *,
    warm_start: Path | None = None,
    refit_warm_start: Path | None = None,
    train_split: str | None = None,
    progress: bool = True,
    feature_store: Path | None = None,
) -> tuple[Path, Path, float]:
    """Train (or resume, or reuse) one method's generator, and its refit with ``train.refit``.

    Returns:
        The generator protocol A measures and ``--publish`` writes (the refit one with ``train.refit``; its warm start
        ``refit_warm_start``, the selection run's ``warm_start``), the one chosen
        on the validation classes (what protocol B measures: its calibration treats them as unseen), and their
        training wall time together.
    """
    from .refit import REFIT_FOLDER, fit

    selected, refit = fit(
        method_recipe(recipe, method, warm_start=warm_start, train_split=train_split),
        folder,
        fold=fold,
        head_only=method == "head_only",
        reuse=True,
        progress=progress,
        refit_init_from=refit_warm_start,
        feature_store=feature_store,
    )
    seconds = training_seconds(folder) + training_seconds(folder / REFIT_FOLDER)
    return refit or selected, selected, seconds


def generator_folder(recipe: Recipe, runs: str | os.PathLike[str], fold: int, method: str | None = None) -> Path:
    """Where ``reproduce`` leaves a fold's generator of ``method`` (default ``eval.publish``) that protocol A measured."""
    from .refit import REFIT_FOLDER

    folder = Path(runs) / f"fold{fold}" / (method or recipe.eval.publish)
    return (folder / REFIT_FOLDER if recipe.train.refit else folder) / "generator"


def training_seconds(folder: Path) -> float:
    """Wall time of a run's training steps, summed over its resumed segments (from ``metrics.jsonl``)."""
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return 0.0
    total = previous = 0.0
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if "loss" not in entry:
            continue
        if entry["seconds"] < previous:  # a resumed segment restarts its clock
            total += previous
        previous = entry["seconds"]
    return total + previous


def _train_fold(
    recipe: Recipe,
    root: Path,
    fold: int,
    methods: Sequence[str],
    train_split: str | None,
    progress: bool,
    timings: dict[str, float],
    feature_store: Path,
) -> tuple[dict[str, Path], dict[str, Path]]:
    """Each method's generator for protocol A (refit with ``train.refit``) and the one chosen on validation; the runs
    share the frozen backbone's features of training images through ``feature_store``."""
    final: dict[str, Path] = {}
    selected: dict[str, Path] = {}
    for method in sorted(methods, key=METHODS.index):  # head_only first: the others warm-start from it
        warm = (selected.get("head_only"), final.get("head_only")) if method != "head_only" else (None, None)
        final[method], selected[method], seconds = train_method(
            recipe,
            root / method,
            fold,
            method,
            warm_start=warm[0],
            refit_warm_start=warm[1],
            train_split=train_split,
            progress=progress,
            feature_store=feature_store,
        )
        timings[f"train_{root.name}_{method}" if root.name == "gzsl" else f"train_{method}"] = seconds
    return final, selected


def _methods_for(table: dict[str, list[int] | None] | None, fold: int, default: Sequence[str]) -> list[str]:
    if table is None:
        return list(default)
    return [m for m, folds in table.items() if folds is None or fold in folds]


def reproduce_benchmark(
    recipe: Recipe,
    runs: str | os.PathLike[str],
    folds: Sequence[int],
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train every configured method on every fold and write the benchmark report; returns the report payload."""
    from ..adapter import LanguageConditionedAdapter
    from ..data.emoji import split_styles
    from .benchmark import FeatureCache, run_benchmark
    from .benchmark_report import emoji_categories
    from .episode_data import load_recipe_data, load_split

    emoji = recipe.data.dataset == "emoji"
    cfg = recipe.eval
    if not emoji and cfg.gzsl_generators is not None:
        raise ValueError(
            "eval.gzsl_generators trains generators on one emoji style for protocol B; on "
            f"{recipe.data.dataset!r} protocol B measures the protocol A generators: remove it"
        )
    runs = Path(runs)
    adapter = LanguageConditionedAdapter(recipe.adapter)  # the text encoder and the frozen backbone of the baselines
    features = FeatureCache.for_adapter(
        adapter, cache_dir=runs / "features", batch_size=cfg.batch_size, device="cuda" if _cuda() else "cpu"
    )
    categories = emoji_categories(recipe.data.root) if emoji else None
    sets = benchmark_sets(recipe)
    styles = (sets[0][0], sets[1][0])
    sizes = [recipe.data.img_size, *[s for s in cfg.baseline_img_sizes if s != recipe.data.img_size]]
    per_size: dict[int, list[dict[str, Any]]] = {s: [] for s in sizes}
    images: dict[int, dict[str, Any]] = {}
    # the baselines fit on the extra drawings the generators train on (test images: the base styles only)
    fit_a = [s for s in split_styles(recipe.data.train_split) if s not in STYLES] if emoji else []
    fit_b = [s for s in split_styles(cfg.gzsl_train_split) if s not in STYLES] if emoji else []
    for size in sizes:
        sized = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, img_size=size))
        limits = {**dict.fromkeys([*fit_a, *fit_b]), **dict(sets)}
        images[size] = {s: load_recipe_data(sized, s, limit) for s, limit in limits.items()}
    for fold in folds:
        timings: dict[str, float] = {}
        log(f"fold {fold}: training {_methods_for(cfg.generators, fold, ('head_only', 'full'))}")
        gens_a, selected = _train_fold(
            recipe,
            runs / f"fold{fold}",
            fold,
            _methods_for(cfg.generators, fold, ("head_only", "full")),
            None,
            progress,
            timings,
            runs / "features",
        )
        # protocol B calibrates on validation classes as if unseen: its generators never trained on them (no refit)
        gens_b = (
            _train_fold(
                dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, refit=False)),
                runs / f"fold{fold}" / "gzsl",
                fold,
                _methods_for(cfg.gzsl_generators, fold, ()),
                cfg.gzsl_train_split,
                progress,
                timings,
                runs / "features",
            )[1]
            if emoji
            else selected
        )
        split = load_split(recipe, fold)
        for size in sizes:
            generators = (gens_a, gens_b) if size == recipe.data.img_size else ({}, {})
            log(f"fold {fold}: measuring at {size} px")
            result = run_benchmark(
                split,
                images[size][styles[0]],
                images[size][styles[1]],
                adapter,
                *generators,
                features=features,
                img_size=size,
                batch_size=cfg.batch_size,
                categories=categories,
                styles=styles,
                zsl_across_styles=not emoji,
                conse_top_k=cfg.text_similarity_top_k,
                fit_a={s: images[size][s] for s in fit_a},
                fit_b={s: images[size][s] for s in fit_b},
                few_way=tuple(cfg.few_way) if size == recipe.data.img_size else (),
                few_way_rounds=cfg.few_way_rounds,
                few_way_similar=tuple(cfg.few_way_similar) if size == recipe.data.img_size else (),
            )
            result["timings"].update(timings if size == recipe.data.img_size else {})
            result["generators"] = {  # which folder each protocol measured (refit or chosen on validation)
                protocol: {m: os.path.relpath(p, runs) for m, p in gens.items()}
                for protocol, gens in zip(("protocol_a", "protocol_b"), generators, strict=True)
            }
            per_size[size].append(result)
        payload = _write_reports(recipe, runs, per_size, images, log)  # after every fold: partial results survive
    text = json.dumps(recipe.to_dict(), indent=1)
    write_atomic(runs / "recipe.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return payload


def _write_reports(
    recipe: Recipe,
    runs: Path,
    per_size: dict[int, list[dict[str, Any]]],
    images: dict[int, Any],
    log: Callable[[str], None],
) -> dict[str, Any]:
    from .benchmark_report import write_benchmark_report

    payload: dict[str, Any] = {}
    for size, results in per_size.items():
        out = runs / ("report" if size == recipe.data.img_size else f"report_{size}px")
        title = f"{recipe.name}: zero-shot on {recipe.data.dataset} at {size} px" + (
            "" if size == recipe.data.img_size else " (baselines)"
        )
        written = write_benchmark_report(results, out, title, images=images[size])
        written["report"] = str(out)
        payload = payload or written
        log(f"wrote {out} ({', '.join(written['files'])})")
    return payload


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def publish_benchmark(
    recipe: Recipe,
    generator_dir: str | os.PathLike[str],
    payload: dict[str, Any],
    destination: str | os.PathLike[str],
    recipe_path: str | os.PathLike[str],
) -> Path:
    """Save a fold's generator (the recipe's ``eval.publish`` method) as a Hub-ready folder whose card carries that
    fold's measured table.

    The card's model-index holds this model's own results only (protocol A top-1 and top-5 on the fold's unseen
    classes); every baseline goes in the card body's table, which is the fold's benchmark markdown. The held-out
    (unseen) classes are listed, so nobody mistakes them for classes the generator was trained on.
    """
    from ..adapter import LanguageConditionedAdapter
    from .benchmark_report import markdown_report
    from .episode_data import load_split

    adapter = LanguageConditionedAdapter.from_pretrained(os.fspath(generator_dir))
    fold_no = next((int(p.name[4:]) for p in Path(generator_dir).parents if p.name.startswith("fold")), None)
    fold = next((f for f in payload["folds"] if f["fold"] == fold_no), None)
    method = recipe.eval.publish
    if fold is None or method not in fold["protocol_a"]:
        raise ValueError(f"no protocol A result of {method!r} for the fold of {generator_dir} in the report")
    split = load_split(recipe, fold_no)
    n = fold["n_unseen"]
    dataset = {
        "type": recipe.data.dataset,
        "name": f"{recipe.data.dataset} (fold {fold_no}, {n} unseen classes)",
        "split": "test (unseen classes)",
    }
    a = fold["protocol_a"][method]
    metrics = {
        "task_type": "zero-shot-image-classification",
        "dataset": dataset,
        "metrics": [
            {"type": "accuracy", "name": f"zero-shot top-1 accuracy, {n}-way unseen classes", "value": a["top1"]},
            {"type": "accuracy", "name": f"zero-shot top-5 accuracy, {n}-way unseen classes", "value": a["top5"]},
        ],
    }
    table = markdown_report([fold], f"fold {fold_no}").split("\n", 2)[2]  # drop the title line
    about = {"held_out": list(split.unseen), "results_table": table.replace("\n## ", "\n### ")}
    return adapter.save_pretrained(
        destination, metrics=metrics, recipe=recipe_path, datasets=[recipe.data.dataset], about=about
    )
