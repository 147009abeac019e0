"""Many-class zero-shot benchmark on two image styles (or a train and a test split): feature-cached baselines and
generators, protocols A and B.

Methods, all scored on the same test images of a fold: ``chance`` (analytic); ``eszsl`` and ``devise`` (closed-form
fits on cached pooled features of the frozen backbone, centred on the fit images' mean and L2-normalised,
hyperparameters chosen on the fold's validation classes; class embeddings: the L2-normalised mean of each class's
description embeddings); ``conse`` (ImageNet probabilities mapped
to classes by text similarity); one method per generator folder given (``head_only``, ``full``, ...): a generated task
run through ``task.bind(backbone)``, on images (a full generator changes the backbone, so no feature cache).

Protocol A (ZSL, the headline): both styles of the unseen classes, scored among the unseen classes; per-class mean
top-1 / top-5, bootstrap CI over classes, per-category top-1, per-image correctness for McNemar. Baselines are fitted
on both styles of the train classes, then refitted on train + validation classes. With
``BenchmarkOptions.zsl_across_styles`` (datasets whose two "styles" are a train and a test split) the baselines fit
on the first style only and the test images are the second style's.

Protocol B (GZSL across styles): baselines are fitted on the first style (``twitter``) of the train classes; test
images are the second style (``google``) of the train and unseen classes, scored over all classes of the split (seen =
train classes). Calibrated stacking picks ``gamma`` on second-style images of the train and validation classes, with
validation as "unseen", never on test-unseen images; validation classes stay candidates but are not test images.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..adapter import LanguageConditionedAdapter
from ..backbones import data_config as backbone_data_config
from ..backbones import pooled_features
from ..data import ClassSplit, LabeledImages, to_backbone_input
from ..heads import head_logits
from ..task import TaskAdaptation
from . import benchmark_report as report
from . import few_way
from .benchmark_report import (
    DEFAULT_GRIDS,
    BenchmarkOptions,
    aggregate_benchmark,
    emoji_categories,
    write_benchmark_report,
)
from .evaluation import text_similarity_scorer
from .feature_cache import FeatureCache
from .metrics import mcnemar
from .zsl import center_normalize, devise_fit, devise_scores, eszsl_fit, eszsl_scores, select_by_validation

__all__ = [
    "DEFAULT_GRIDS",
    "BenchmarkOptions",
    "FeatureCache",
    "aggregate_benchmark",
    "emoji_categories",
    "run_benchmark",
    "write_benchmark_report",
]

logger = logging.getLogger(__name__)

_FITS: dict[str, tuple[Callable[..., Any], Callable[[Tensor, Any, Tensor], Tensor]]] = {
    "eszsl": (eszsl_fit, eszsl_scores),
    "devise": (devise_fit, devise_scores),
}
BASELINES = ("chance", "eszsl", "devise", "conse")
Generators = Mapping[str, str | os.PathLike[str]]
Parts = list[tuple[str, Tensor]]  # (style, image indices into that style's LabeledImages)


# one fold's data


@dataclass
class _Fold:
    """The classes of a split in one local order (train, validation, unseen) and both styles' images and features."""

    names: list[str]
    n_train: int
    n_val: int
    descriptions: dict[str, list[str]]
    emb: Tensor  # (c, e) unit-norm class embeddings, local order
    styles: tuple[str, str]  # the test styles
    data: dict[str, LabeledImages]  # the test styles', then the fit-only styles'
    feats: dict[str, Tensor]  # style -> (N, f)
    labels: dict[str, Tensor]  # style -> (N,) local class index, -1 outside the split
    fit_a: tuple[str, ...] = ()  # fit-only styles of protocol A's baselines (train and validation classes)
    fit_b: tuple[str, ...] = ()  # ... and of protocol B's

    def rows(self, style: str, lo: int, hi: int) -> Tensor:
        """Indices of ``style``'s images whose local class lies in [lo, hi)."""
        labels = self.labels[style]
        return torch.nonzero((labels >= lo) & (labels < hi)).flatten()

    def group(self, which: str) -> tuple[int, int]:
        """Local class range of "train", "validation" or "unseen"."""
        t, v = self.n_train, self.n_train + self.n_val
        return {"train": (0, t), "validation": (t, v), "unseen": (v, len(self.names))}[which]

    def parts(self, which: str, styles: Sequence[str] | None = None) -> Parts:
        """(style, image indices) of a class group in the given styles (default both)."""
        return [(s, self.rows(s, *self.group(which))) for s in (styles or self.styles)]

    def gather(self, parts: Parts) -> tuple[Tensor, Tensor]:
        """Features (n, f) and local labels (n,) of the images in ``parts``, in order."""
        return torch.cat([self.feats[s][i] for s, i in parts]), torch.cat([self.labels[s][i] for s, i in parts])


def _build_fold(
    split: ClassSplit,
    data: dict[str, LabeledImages],
    cache: FeatureCache,
    encoder: Any,
    img_size: int,
    fit: tuple[Mapping[str, LabeledImages], Mapping[str, LabeledImages]] = ({}, {}),
) -> _Fold:
    styles = tuple(data)
    first = data[styles[0]]
    if clash := sorted({*fit[0], *fit[1]} & set(styles)):
        raise ValueError(f"fit-only styles {clash} must differ from the test styles {list(styles)}")
    if differ := sorted(s for s, d in fit[0].items() if s in fit[1] and d is not fit[1][s]):
        raise ValueError(f"fit-only styles {differ} name different data for protocols A and B")
    data = {**data, **fit[0], **fit[1]}
    for style, other in data.items():
        if other.class_names != first.class_names:
            raise ValueError(f"the {styles[0]} and {style} data must list the same classes in the same order")
    names = [*split.train_classes, *split.validation, *split.unseen]
    missing = [c for c in names if c not in set(first.class_names)]
    if missing:
        raise ValueError(f"fold {split.fold} names classes that the data lacks: {missing[:10]}")
    if not split.validation:
        raise ValueError(f"fold {split.fold} has no validation classes; the benchmark needs them (hyperparameters)")
    local = torch.full((len(first.class_names),), -1, dtype=torch.long)
    local[torch.tensor([first.class_names.index(c) for c in names])] = torch.arange(len(names))
    descriptions = {c: list(first.descriptions[c]) for c in names}
    emb = F.normalize(encoder.encode_classes(descriptions).float().cpu(), dim=1)
    feats = {s: cache.features(d, s, img_size) for s, d in data.items()}
    labels = {s: local[d.labels] for s, d in data.items()}
    n_train, n_val = len(split.train_classes), len(split.validation)
    return _Fold(names, n_train, n_val, descriptions, emb, styles, data, feats, labels, tuple(fit[0]), tuple(fit[1]))


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


# scorers


def _fit_baseline(
    kind: str, fold: _Fold, fit: Parts, val: Parts, refit: bool, grid: Any
) -> tuple[Any, dict[str, float]]:
    """Hyperparameters by validation top-1, then the fit on ``fit`` (plus ``val`` when ``refit``)."""
    fit_fn, score_fn = _FITS[kind]
    (xf, yf), (xv, yv) = fold.gather(fit), fold.gather(val)
    mean = xf.mean(0)  # features are centred on the fit images and L2-normalised: see zsl.center_normalize
    xf, xv = center_normalize(xf, mean), center_normalize(xv, mean)
    params, _ = select_by_validation(fit_fn, score_fn, grid, xf, yf, xv, yv, fold.emb)
    if edge := {k: v for k, v in params.items() if len(grid[k]) > 1 and v in (min(grid[k]), max(grid[k]))}:
        logger.info("%s: %s chosen at the edge of its grid; consider widening it", kind, edge)
    if refit:
        xf, yf = torch.cat([xf, xv]), torch.cat([yf, yv])
    return (fit_fn(xf, yf, fold.emb, **params), mean), params


class _ClassifierOnFeatures(nn.Sequential):
    """The backbone's own classifier on cached pooled features: ConSE runs on the feature cache, not on images."""

    def get_classifier(self) -> nn.Module:
        return self[0]


def _conse_scorer(cache: FeatureCache, encoder: Any, fold: _Fold, top_k: int) -> Callable[[Tensor, list[str]], Tensor]:
    head = _ClassifierOnFeatures(cache.backbone.get_classifier())
    scorer = text_similarity_scorer(head, encoder, fold.descriptions, top_k)

    def score(features: Tensor, names: list[str]) -> Tensor:
        with torch.no_grad():
            chunks = features.split(cache.batch_size)
            return torch.cat([scorer(c.to(cache.device), names).float().cpu() for c in chunks])

    return score


@dataclass
class _Generator:
    """A generator folder loaded once for a fold: its backbone and input settings, and the fold's text embeddings."""

    adapter: LanguageConditionedAdapter
    backbone: nn.Module
    config: dict[str, Any]
    run: _Run

    @classmethod
    def load(cls, folder: str | os.PathLike[str], run: _Run) -> _Generator:
        adapter = LanguageConditionedAdapter.from_pretrained(os.fspath(folder)).to(run.device).eval()
        backbone = adapter.create_backbone().to(run.device)
        return cls(adapter, backbone, backbone_data_config(backbone, adapter.config.preprocessing), run)

    def task(self, names: Sequence[str]) -> TaskAdaptation:
        descriptions = {c: self.run.fold.descriptions[c] for c in names}
        same_encoder = self.adapter.config.text_encoder == self.run.encoder.name  # reuse the loaded encoder's cache
        embeddings = self.run.encoder.encode_classes(descriptions) if same_encoder else None
        return self.adapter.generate(descriptions, embeddings=embeddings)

    def logits(self, task: TaskAdaptation, images: Tensor) -> Tensor:
        """Logits of ``task`` bound to the backbone, on uint8 ``images`` (n, C, h, w), in batches."""
        classifier, size = task.bind(self.backbone), self.run.img_size
        out = []
        with torch.no_grad():
            for batch in images.split(self.run.options.batch_size):
                out.append(classifier(to_backbone_input(batch.to(self.run.device), self.config, size)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, task.num_classes)

    def task_scorer(self, names: Sequence[str], images: Tensor) -> few_way.TaskScorer:
        """Protocol C's scorer over the test ``images`` of the classes ``names``: one task written per call. A task
        without deltas reads the backbone's plain features, computed once (the same numbers as its bound forward)."""
        plain: list[Tensor] = []

        def score(classes: Tensor, rows: Tensor) -> Tensor:
            task = self.task([names[i] for i in classes])
            if task.deltas:
                return self.logits(task, images[rows])
            if not plain:
                plain.append(self.features(images))
            return head_logits(plain[0][rows], task.head_weight.float().cpu(), task.head_bias.float().cpu())

        return score

    def features(self, images: Tensor) -> Tensor:
        """Plain pooled features (n, f) of the backbone, float32 on the CPU."""
        out = []
        with torch.no_grad():
            for batch in images.split(self.run.options.batch_size):
                x = to_backbone_input(batch.to(self.run.device), self.config, self.run.img_size)
                out.append(pooled_features(self.backbone, x).float().cpu())
        return torch.cat(out)


def _generator_scores(folder: str | os.PathLike[str], run: _Run, names: list[str], parts: Parts) -> Tensor:
    """Logits (n, len(names)) of the task a generator writes for ``names``, on the images of ``parts``."""
    generator = _Generator.load(folder, run)
    return generator.logits(generator.task(names), _images(run.fold, parts))


def _images(fold: _Fold, parts: Parts) -> Tensor:
    return torch.cat([fold.data[style].images[index] for style, index in parts])


# protocols


@dataclass
class _Run:
    fold: _Fold
    options: BenchmarkOptions
    img_size: int
    device: torch.device
    encoder: Any  # the adapter's TextEncoder
    timings: dict[str, float]
    conse: Callable[[Tensor, list[str]], Tensor] | None = None


def _method_scores(
    run: _Run, key: str, train: tuple[Parts, Parts, bool], test: Parts, names: list[str], generators: Generators
) -> tuple[dict[str, Tensor], dict[str, dict[str, float]]]:
    """Scores (n, len(names)) of every method on the images of ``test``; ``train`` = (fit, validation, refit).

    ``names`` is a contiguous run of ``fold.names`` (the unseen classes, or all of them).
    """
    fold, timings = run.fold, run.timings
    x, _ = fold.gather(test)
    start = fold.names.index(names[0])
    scores: dict[str, Tensor] = {}
    params: dict[str, dict[str, float]] = {}
    for kind, grid in DEFAULT_GRIDS.items():
        with _timed(timings, f"{key}:{kind}"):
            (model, mean), params[kind] = _fit_baseline(kind, fold, *train, run.options.grids.get(kind, grid))
            scores[kind] = _FITS[kind][1](center_normalize(x, mean), model, fold.emb[start : start + len(names)])
    if run.conse is not None:
        with _timed(timings, f"{key}:conse"):
            scores["conse"] = run.conse(x, names)
    for name, folder in generators.items():
        with _timed(timings, f"{key}:{name}"):
            scores[name] = _generator_scores(folder, run, names, test)
    return scores, params


def _protocol_a(run: _Run, generators: Generators) -> tuple[dict[str, Any], dict[str, Any]]:
    """ZSL on the unseen classes (both styles, or the second with ``zsl_across_styles``); returns the results and
    the examples of the grid."""
    fold, categories = run.fold, run.options.categories
    offset = fold.n_train + fold.n_val
    fit, tested = _protocol_a_styles(fold, run.options)
    unseen, test = fold.names[offset:], fold.parts("unseen", tested)
    train = (fold.parts("train", fit), fold.parts("validation", fit), True)
    scores, params = _method_scores(run, "protocol_a", train, test, unseen, generators)
    labels = fold.gather(test)[1] - offset
    results: dict[str, Any] = {"chance": report.chance_entries(unseen, len(fold.names), categories)[0]}
    for name, method_scores in scores.items():
        results[name] = report.protocol_a_entry(method_scores, labels, unseen, categories, run.options.n_boot)
        results[name].update({"params": params[name]} if name in params else {})
    shown = report.example_method(results)
    origin = [(style, int(i)) for style, index in test for i in index]
    n = run.options.n_examples
    items = report.example_items(scores[shown], labels, origin, unseen, fold.descriptions, n) if shown else []
    return results, {"method": shown, "items": items}, scores


def _protocol_c(run: _Run, generators: Generators, scores: Mapping[str, Tensor]) -> dict[str, Any]:
    """Few-way tasks among the unseen classes (see :mod:`.few_way`): baselines from their protocol A scores' columns,
    generators written per task on protocol A's test images."""
    fold, options = run.fold, run.options
    offset = fold.n_train + fold.n_val
    unseen, test = fold.names[offset:], fold.parts("unseen", _protocol_a_styles(fold, options)[1])
    labels = fold.gather(test)[1] - offset
    images = _images(fold, test) if generators else None
    out: dict[str, Any] = {}
    emb = fold.emb[offset:]
    kinds = [(str(w), w, None) for w in options.few_way]
    kinds += [(f"{w}{few_way.SIMILAR}", w, emb @ emb.T) for w in options.few_way_similar]
    for key, ways, similarity in kinds:
        if similarity is None:
            tasks = few_way.sample_tasks(len(unseen), ways, options.few_way_rounds)
        else:
            tasks = few_way.similar_tasks(similarity, ways, options.few_way_rounds)
        per_class: dict[str, Tensor] = {}
        for name, method_scores in scores.items():
            if name not in generators:
                scorer = lambda classes, rows, s=method_scores: s[rows][:, classes]  # noqa: E731
                per_class[name] = few_way.per_class_accuracy(scorer, tasks, labels, len(unseen))
        for name, folder in generators.items():
            with _timed(run.timings, f"protocol_c_{key}:{name}"):
                scorer = _Generator.load(folder, run).task_scorer(unseen, images)
                per_class[name] = few_way.per_class_accuracy(scorer, tasks, labels, len(unseen))
        out[key] = few_way.protocol_c_entry(per_class, unseen, ways, len(tasks), options.n_boot)
    return out


def _protocol_a_styles(fold: _Fold, options: BenchmarkOptions) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Protocol A's fit styles (its baselines') and test styles."""
    first, second = fold.styles
    if options.zsl_across_styles:
        return (first, *fold.fit_a), (second,)
    return (first, second, *fold.fit_a), (first, second)


def _protocol_b(run: _Run, generators: Generators) -> dict[str, Any]:
    """GZSL across styles: fit on the first style of the train classes, test on the second style of all classes."""
    fold = run.fold
    first, second = fold.styles
    test = [(second, fold.rows(second, 0, len(fold.names)))]
    fit = (first, *fold.fit_b)
    train = (fold.parts("train", fit), fold.parts("validation", fit), False)
    scores, params = _method_scores(run, "protocol_b", train, test, fold.names, generators)
    labels = fold.gather(test)[1]
    unseen = fold.names[fold.n_train + fold.n_val :]
    results: dict[str, Any] = {"chance": report.chance_entries(unseen, len(fold.names), run.options.categories)[1]}
    for name, method_scores in scores.items():
        results[name] = report.protocol_b_entry(method_scores, labels, fold.n_train, fold.n_val)
        results[name].update({"params": params[name]} if name in params else {})
    return results


def _start(
    split: ClassSplit,
    data: dict[str, LabeledImages],
    adapter: LanguageConditionedAdapter,
    features: FeatureCache,
    options: BenchmarkOptions,
    timings: dict[str, float],
    fit: tuple[Mapping[str, LabeledImages], Mapping[str, LabeledImages]],
) -> _Run:
    """The fold's classes, embeddings and features, and the ConSE scorer (None when skipped or impossible)."""
    size = options.img_size or int(features.data_config["input_size"][-1])
    with _timed(timings, "features_and_text"):
        fold = _build_fold(split, data, features, adapter.text_encoder, size, fit)
    run = _Run(fold, options, size, features.device, adapter.text_encoder, timings)
    classifier = getattr(features.backbone, "get_classifier", lambda: None)()
    if options.conse_top_k and not (isinstance(classifier, nn.Linear) and classifier.out_features == 1000):
        logger.warning("no ConSE: the backbone has no 1000-class ImageNet classifier")
    elif options.conse_top_k:
        with _timed(timings, "conse_setup"):
            run.conse = _conse_scorer(features, adapter.text_encoder, fold, options.conse_top_k)
    return run


def run_benchmark(
    split: ClassSplit,
    twitter: LabeledImages,
    google: LabeledImages,
    adapter: LanguageConditionedAdapter,
    generators_a: Generators | None = None,
    generators_b: Generators | None = None,
    *,
    features: FeatureCache | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    fit_a: Mapping[str, LabeledImages] | None = None,
    fit_b: Mapping[str, LabeledImages] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """All methods of one fold under protocols A (ZSL) and B (GZSL across styles); see the module docstring.

    Args:
        split: the fold's classes (``validation`` must be non-empty).
        twitter, google: the two styles' images, same class order (the names are ``options["styles"]``).
        adapter: gives the text encoder and, without ``features``, the frozen backbone.
        generators_a, generators_b: method name -> generator folder for protocol A / for B (trained on the first
            style only), e.g. ``{"head_only": d1, "full": d2}``; B without generators measures the baselines only.
        fit_a, fit_b: more styles of the same classes (style -> images) that protocol A's / B's baselines also fit
            on, never test on: the extra drawings the generators were trained with (e.g. ``{"openmoji": om}``).
        features: a FeatureCache shared across folds; default: one built from ``adapter`` on ``device`` (default
            CUDA when available), storing to ``cache_dir``.
        **options: fields of :class:`BenchmarkOptions` (img_size, batch_size, categories, styles, ...).

    Returns:
        JSON-able: ``fold``, ``n_unseen``, ``protocol_a`` (method -> top1, top5, top1_ci, top5_ci, per_category,
        per_class_top1, correct, params), ``protocol_b`` (method -> seen, unseen, h, seen_cal, unseen_cal, h_cal,
        gamma, h_val_raw, h_val_cal, params), ``mcnemar_full_vs_head_only`` (p or None), ``examples``, ``timings``.

    Raises:
        ValueError: on inconsistent data, a split without validation classes, or a generator named like a baseline.
    """
    opts = BenchmarkOptions(**options)
    gens_a, gens_b = dict(generators_a or {}), dict(generators_b or {})
    if clash := sorted((set(gens_a) | set(gens_b)) & set(BASELINES)):
        raise ValueError(f"generator names {clash} clash with the baselines {list(BASELINES)}; rename them")
    timings: dict[str, float] = {}
    with _timed(timings, "backbone"):
        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        features = features or FeatureCache.for_adapter(
            adapter, cache_dir=cache_dir, batch_size=opts.batch_size, device=dev
        )
    data = dict(zip(opts.styles, (twitter, google), strict=True))
    run = _start(split, data, adapter, features, opts, timings, (dict(fit_a or {}), dict(fit_b or {})))
    a, examples, scores_a = _protocol_a(run, gens_a)
    c = _protocol_c(run, gens_a, scores_a)
    b = _protocol_b(run, gens_b)
    p = mcnemar(a["full"]["correct"], a["head_only"]["correct"]) if {"full", "head_only"} <= set(a) else None
    fold = run.fold
    fit_a, test_a = _protocol_a_styles(fold, opts)
    n_test = sum(len(index) for _, index in fold.parts("unseen", test_a))
    unseen = len(fold.names) - fold.n_train - fold.n_val
    head = {"fold": split.fold, "n_train": fold.n_train, "n_validation": fold.n_val, "n_unseen": unseen}
    setup = {"dataset": twitter.name, "styles": list(opts.styles), "img_size": run.img_size, "n_test_a": n_test}
    setup |= {"fit_styles_a": list(fit_a), "test_styles_a": list(test_a), "fit_styles_b": [fold.styles[0], *fold.fit_b]}
    model = {"backbone": features.backbone_name, "weights": features.weights}
    out = {"protocol_a": a, "protocol_b": b, "mcnemar_full_vs_head_only": p, "examples": examples, "timings": timings}
    out |= {"protocol_c": c} if c else {}
    return {**head, **setup, **model, **out}
