"""Many-class zero-shot benchmark on two image styles: feature-cached baselines and generators, protocols A and B.

Methods, all scored on the same test images of a fold: ``chance`` (analytic); ``eszsl`` and ``devise`` (closed-form
fits on cached pooled features of the frozen backbone, centred on the fit images' mean and L2-normalised,
hyperparameters chosen on the fold's validation classes; class embeddings: the L2-normalised mean of each class's
description embeddings); ``conse`` (ImageNet probabilities mapped
to classes by text similarity); one method per generator folder given (``head_only``, ``full``, ...): a generated task
run through ``task.bind(backbone)``, on images (a full generator changes the backbone, so no feature cache).

Protocol A (ZSL, the headline): both styles of the unseen classes, scored among the unseen classes; per-class mean
top-1 / top-5, bootstrap CI over classes, per-category top-1, per-image correctness for McNemar. Baselines are fitted
on both styles of the train classes, then refitted on train + validation classes.

Protocol B (GZSL across styles): baselines are fitted on the first style (``twitter``) of the train classes; test
images are the second style (``google``) of the train and unseen classes, scored over all classes of the split (seen =
train classes). Calibrated stacking picks ``gamma`` on second-style images of the train and validation classes, with
validation as "unseen", never on test-unseen images; validation classes stay candidates but are not test images.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from ..adapter import LanguageConditionedAdapter
from ..backbones import data_config as backbone_data_config
from ..backbones import pooled_features
from ..data import ClassSplit, LabeledImages, to_backbone_input
from ..utils.atomic import write_atomic
from . import benchmark_report as report
from .benchmark_report import (
    DEFAULT_GRIDS,
    BenchmarkOptions,
    aggregate_benchmark,
    emoji_categories,
    write_benchmark_report,
)
from .evaluation import text_similarity_scorer
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
CACHE_FORMAT = "1"  # bump when the stored features change meaning
Generators = Mapping[str, str | os.PathLike[str]]
Parts = list[tuple[str, Tensor]]  # (style, image indices into that style's LabeledImages)


# feature cache


def _slug(text: str) -> str:
    """A file-name-safe form of ``text``; a short hash is appended when characters were replaced or cut."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:40]
    return safe if safe == text else f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


@dataclass(eq=False)
class FeatureCache:
    """Pooled features of one frozen backbone, computed once per dataset split and image size.

    Features are memoised in the instance and, with ``cache_dir``, stored as safetensors files named by (dataset,
    split, img_size, backbone, weights). A stored file also records a fingerprint of the images, labels and
    normalisation; a file whose fingerprint differs is recomputed and overwritten.

    Attributes:
        backbone: the frozen timm model (on the device features are computed on).
        data_config: timm data config with ``mean`` and ``std``.
        backbone_name: the timm model name, part of the file key.
        weights: the weight source, part of the file key.
        cache_dir: folder of the safetensors files; None keeps features in memory only.
        batch_size: images per forward pass.
        computed: image sets run through the backbone so far (not loaded or memoised).
    """

    backbone: nn.Module = field(repr=False)
    data_config: dict[str, Any]
    backbone_name: str
    weights: str
    cache_dir: Path | None = None
    batch_size: int = 256
    computed: int = field(default=0, init=False)
    _memo: dict[tuple[str, str, int, str], Tensor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        self.data_config = dict(self.data_config)
        self.cache_dir = Path(self.cache_dir).expanduser() if self.cache_dir is not None else None

    @classmethod
    def for_adapter(
        cls,
        adapter: LanguageConditionedAdapter,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 256,
        device: str | torch.device | None = None,
    ) -> FeatureCache:
        """The cache of ``adapter``'s configured backbone (built here, frozen, on ``device``)."""
        backbone, config = adapter.create_backbone().to(device or "cpu"), adapter.config
        names = {"backbone_name": config.backbone, "weights": config.backbone_weights}
        data_config = backbone_data_config(backbone, config.preprocessing)
        return cls(backbone, data_config, **names, cache_dir=cache_dir, batch_size=batch_size)

    @property
    def device(self) -> torch.device:
        """The backbone's device."""
        return next(self.backbone.parameters()).device

    def path(self, dataset: str, split: str, img_size: int) -> Path | None:
        """The safetensors file of these features, or None without ``cache_dir``."""
        if self.cache_dir is None:
            return None
        parts = (_slug(dataset), _slug(split), f"{img_size}px", _slug(self.backbone_name), _slug(self.weights))
        return self.cache_dir / ("__".join(parts) + ".safetensors")

    @functools.cached_property
    def weights_digest(self) -> str:
        """SHA-256 of the backbone's state dict (so that two "random" backbones never share a cache file)."""
        digest = hashlib.sha256()
        for name, tensor in self.backbone.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        return digest.hexdigest()

    def fingerprint(self, data: LabeledImages, img_size: int) -> str:
        """SHA-256 of the backbone weights, images, labels, image size and normalisation."""
        digest = hashlib.sha256(self.weights_digest.encode())
        digest.update(data.images.contiguous().numpy().tobytes())
        digest.update(data.labels.contiguous().numpy().tobytes())
        stats = [self.data_config.get("mean"), self.data_config.get("std"), img_size, CACHE_FORMAT]
        digest.update(repr([list(s) if isinstance(s, (list, tuple)) else s for s in stats]).encode())
        return digest.hexdigest()

    def features(self, data: LabeledImages, split: str, img_size: int) -> Tensor:
        """(N, f) float32 CPU pooled features of ``data``'s images resized to ``img_size`` (cached).

        Args:
            data: the images.
            split: the split name ("twitter", "google", ...), part of the file key.
            img_size: backbone input side.
        """
        if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
            raise ValueError(f"img_size must be a positive int, got {img_size!r}")
        fingerprint = self.fingerprint(data, img_size)
        key = (data.name, split, img_size, fingerprint)
        if key in self._memo:
            return self._memo[key]
        path = self.path(data.name, split, img_size)
        features = self._load(path, fingerprint, len(data)) if path is not None else None
        if features is None:
            features = self._compute(data, img_size)
            if path is not None:
                meta = {"fingerprint": fingerprint, "dataset": data.name, "split": split, "img_size": str(img_size)}
                tensors = {"features": features.contiguous(), "labels": data.labels.contiguous()}
                write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
                logger.info("stored %s features %s in %s", split, tuple(features.shape), path)
        self._memo[key] = features
        return features

    def _load(self, path: Path, fingerprint: str, n: int) -> Tensor | None:
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                stored = (f.metadata() or {}).get("fingerprint")
                features = f.get_tensor("features") if stored == fingerprint else None
        except (OSError, SafetensorError) as exc:
            logger.warning("recomputing features: unreadable cache file %s (%s)", path, exc)
            return None
        if features is None or features.ndim != 2 or features.shape[0] != n:
            logger.info("recomputing features: %s was made from other images or settings", path)
            return None
        return features

    def _compute(self, data: LabeledImages, img_size: int) -> Tensor:
        out = []
        with torch.no_grad():
            for images in data.images.split(self.batch_size):
                x = to_backbone_input(images.to(self.device), self.data_config, img_size)
                out.append(pooled_features(self.backbone, x).float().cpu())
        self.computed += 1
        return torch.cat(out) if out else torch.zeros(0, 0)


# one fold's data


@dataclass
class _Fold:
    """The classes of a split in one local order (train, validation, unseen) and both styles' images and features."""

    names: list[str]
    n_train: int
    n_val: int
    descriptions: dict[str, list[str]]
    emb: Tensor  # (c, e) unit-norm class embeddings, local order
    styles: tuple[str, str]
    data: dict[str, LabeledImages]
    feats: dict[str, Tensor]  # style -> (N, f)
    labels: dict[str, Tensor]  # style -> (N,) local class index, -1 outside the split

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
    split: ClassSplit, data: dict[str, LabeledImages], cache: FeatureCache, encoder: Any, img_size: int
) -> _Fold:
    styles = tuple(data)
    first, second = (data[s] for s in styles)
    if first.class_names != second.class_names:
        raise ValueError(f"the {styles[0]} and {styles[1]} data must list the same classes in the same order")
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
    return _Fold(names, n_train, n_val, descriptions, emb, styles, dict(data), feats, labels)


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


def _generator_scores(folder: str | os.PathLike[str], run: _Run, names: list[str], parts: Parts) -> Tensor:
    """Logits (n, len(names)) of the task a generator writes for ``names``, on the images of ``parts``."""
    fold, device, img_size, batch_size = run.fold, run.device, run.img_size, run.options.batch_size
    generator = LanguageConditionedAdapter.from_pretrained(os.fspath(folder)).to(device).eval()
    backbone = generator.create_backbone().to(device)
    config = backbone_data_config(backbone, generator.config.preprocessing)
    descriptions = {c: fold.descriptions[c] for c in names}
    same_encoder = generator.config.text_encoder == run.encoder.name  # reuse the loaded encoder and its cache
    embeddings = run.encoder.encode_classes(descriptions) if same_encoder else None
    classifier = generator.generate(descriptions, embeddings=embeddings).bind(backbone)
    out = []
    with torch.no_grad():
        for style, index in parts:
            for images in fold.data[style].images[index].split(batch_size):
                out.append(classifier(to_backbone_input(images.to(device), config, img_size)).float().cpu())
    return torch.cat(out)


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
    """ZSL on both styles of the unseen classes; returns the results and the examples of the grid."""
    fold, categories = run.fold, run.options.categories
    offset = fold.n_train + fold.n_val
    unseen, test = fold.names[offset:], fold.parts("unseen")
    train = (fold.parts("train"), fold.parts("validation"), True)
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
    return results, {"method": shown, "items": items}


def _protocol_b(run: _Run, generators: Generators) -> dict[str, Any]:
    """GZSL across styles: fit on the first style of the train classes, test on the second style of all classes."""
    fold = run.fold
    first, second = fold.styles
    test = [(second, fold.rows(second, 0, len(fold.names)))]
    train = (fold.parts("train", [first]), fold.parts("validation", [first]), False)
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
) -> _Run:
    """The fold's classes, embeddings and features, and the ConSE scorer (None when skipped or impossible)."""
    size = options.img_size or int(features.data_config["input_size"][-1])
    with _timed(timings, "features_and_text"):
        fold = _build_fold(split, data, features, adapter.text_encoder, size)
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
    **options: Any,
) -> dict[str, Any]:
    """All methods of one fold under protocols A (ZSL) and B (GZSL across styles); see the module docstring.

    Args:
        split: the fold's classes (``validation`` must be non-empty).
        twitter, google: the two styles' images, same class order (the names are ``options["styles"]``).
        adapter: gives the text encoder and, without ``features``, the frozen backbone.
        generators_a, generators_b: method name -> generator folder for protocol A / for B (trained on the first
            style only), e.g. ``{"head_only": d1, "full": d2}``; B without generators measures the baselines only.
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
    run = _start(split, dict(zip(opts.styles, (twitter, google), strict=True)), adapter, features, opts, timings)
    a, examples = _protocol_a(run, gens_a)
    b = _protocol_b(run, gens_b)
    p = mcnemar(a["full"]["correct"], a["head_only"]["correct"]) if {"full", "head_only"} <= set(a) else None
    fold = run.fold
    n_test = sum(len(index) for _, index in fold.parts("unseen"))
    unseen = len(fold.names) - fold.n_train - fold.n_val
    head = {"fold": split.fold, "n_train": fold.n_train, "n_validation": fold.n_val, "n_unseen": unseen}
    setup = {"dataset": twitter.name, "styles": list(opts.styles), "img_size": run.img_size, "n_test_a": n_test}
    model = {"backbone": features.backbone_name, "weights": features.weights}
    out = {"protocol_a": a, "protocol_b": b, "mcnemar_full_vs_head_only": p, "examples": examples, "timings": timings}
    return {**head, **setup, **model, **out}
