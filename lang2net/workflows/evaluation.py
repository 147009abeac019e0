"""Zero-shot and generalised zero-shot evaluation of generators, with the baselines measured in the same run.

Methods compared on the same test images of one fold:
    chance           uniform guessing (analytic)
    text_similarity  no training: the backbone's ImageNet probabilities mapped to the classes by text similarity of the
                     ImageNet label names and definitions timm ships (ConSE: a probability-weighted mix of label
                     embeddings, then the nearest class description)
    head_only        a generator trained with no backbone deltas (the baseline N3 improves on)
    full             deltas + head
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..adapter import LanguageConditionedAdapter
from ..backbones import imagenet_classifier
from ..utils.atomic import write_atomic
from .metrics import per_class_topk, seen_unseen_curve

__all__ = [
    "aggregate_folds",
    "class_metrics",
    "evaluate_fold",
    "text_similarity_scorer",
    "write_report",
]

logger = logging.getLogger(__name__)

Scorer = Callable[[Tensor, Sequence[str]], Tensor]  # (images (b, 3, H, W), class names) -> logits (b, c)


# metrics


def class_metrics(predictions: Tensor, labels: Tensor, num_classes: int) -> dict:
    """Per-class top-1 accuracy, its mean over classes that have images, and the confusion matrix (true x predicted)."""
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((labels, predictions), torch.ones_like(labels), accumulate=True)
    counts = confusion.sum(1)
    per_class = (confusion.diag().float() / counts.clamp(min=1)).tolist()
    present = [i for i in range(num_classes) if counts[i] > 0]
    mean = sum(per_class[i] for i in present) / max(1, len(present))
    return {"per_class": per_class, "mean_per_class": mean, "confusion": confusion.tolist()}


def harmonic_mean(a: float, b: float) -> float:
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def _scores(scorer: Scorer, images: Tensor, class_names: Sequence[str], prepare, batch_size: int) -> Tensor:
    out = []
    for start in range(0, len(images), batch_size):
        with torch.no_grad():
            out.append(scorer(prepare(images[start : start + batch_size]), class_names).float().cpu())
    return torch.cat(out)


def _zsl_gzsl(scorer: Scorer, test, seen: Sequence[str], unseen: Sequence[str], prepare, batch_size: int) -> dict:
    """ZSL: unseen images among unseen classes. GZSL: all images among seen + unseen classes."""
    index = {c: i for i, c in enumerate(test.class_names)}
    pos_unseen = torch.tensor([index[c] for c in unseen])
    keep = torch.isin(test.labels, pos_unseen)
    relabel = torch.full((len(test.class_names),), -1, dtype=torch.long)
    relabel[pos_unseen] = torch.arange(len(unseen))
    zsl_scores, zsl_labels = _scores(scorer, test.images[keep], unseen, prepare, batch_size), relabel[test.labels[keep]]
    zsl = class_metrics(zsl_scores.argmax(-1), zsl_labels, len(unseen))
    top5 = float(per_class_topk(zsl_scores, zsl_labels, 5)["top5"])  # 1.0 when there are 5 unseen classes or fewer
    both = list(seen) + list(unseen)
    pos_both = torch.tensor([index[c] for c in both])
    keep = torch.isin(test.labels, pos_both)
    relabel[pos_both] = torch.arange(len(both))
    gzsl_scores = _scores(scorer, test.images[keep], both, prepare, batch_size)
    gzsl_labels = relabel[test.labels[keep]]
    gzsl = class_metrics(gzsl_scores.argmax(-1), gzsl_labels, len(both))
    acc_seen = sum(gzsl["per_class"][: len(seen)]) / max(1, len(seen))
    acc_unseen = sum(gzsl["per_class"][len(seen) :]) / max(1, len(unseen))
    seen_mask = torch.arange(len(both)) < len(seen)
    return {
        "zsl": zsl["mean_per_class"],
        "zsl_top5": top5,
        "gzsl_seen": acc_seen,
        "gzsl_unseen": acc_unseen,
        "gzsl_h": harmonic_mean(acc_seen, acc_unseen),
        "gzsl_ausuc": seen_unseen_curve(gzsl_scores, gzsl_labels, seen_mask)["ausuc"],
        "zsl_per_class": dict(zip(unseen, zsl["per_class"], strict=True)),
        "zsl_confusion": zsl["confusion"],
    }


def _chance(seen: Sequence[str], unseen: Sequence[str]) -> dict:
    g = 1 / (len(seen) + len(unseen))
    return {
        "zsl": 1 / len(unseen),
        "zsl_top5": min(1.0, 5 / len(unseen)),
        "gzsl_seen": g,
        "gzsl_unseen": g,
        "gzsl_h": g,
        # random scores: a share p of images called seen gives seen p / |S| and unseen (1 - p) / |U|, a straight line
        "gzsl_ausuc": 1 / (2 * len(seen) * len(unseen)),
    }


# scorers


def generator_scorer(
    adapter: LanguageConditionedAdapter, backbone: nn.Module, descriptions: dict[str, list[str]]
) -> Scorer:
    """Logits of the classifier the generator writes for the requested classes (generated once per class list)."""
    cache: dict[tuple[str, ...], nn.Module] = {}

    def score(images: Tensor, class_names: Sequence[str]) -> Tensor:
        key = tuple(class_names)
        if key not in cache:
            cache[key] = adapter.generate({c: descriptions[c] for c in class_names}).bind(backbone)
        return cache[key](images)

    return score


def text_similarity_scorer(backbone: nn.Module, encoder, descriptions: dict[str, list[str]], top_k: int = 10) -> Scorer:
    """ConSE zero-shot: ImageNet probabilities of the pretrained backbone, mixed over the top-k label embeddings."""
    _, label_texts = imagenet_classifier(backbone)
    labels = encoder.encode(label_texts)  # (1000, e), unit norm
    class_emb = {c: encoder.encode_classes({c: descriptions[c]})[0] for c in descriptions}

    def score(images: Tensor, class_names: Sequence[str]) -> Tensor:
        probs = backbone(images).float().softmax(-1)  # (b, 1000); the backbone's own head, no deltas
        top, idx = probs.topk(top_k, dim=-1)
        mixed = F.normalize(torch.einsum("bk,bke->be", top, labels.to(probs.device)[idx]), dim=-1)  # (b, e)
        targets = torch.stack([class_emb[c] for c in class_names]).to(probs.device)  # (c, e)
        return mixed @ targets.T

    return score


# one fold


def evaluate_fold(
    recipe,
    fold: int,
    generators: dict[str, str | os.PathLike | LanguageConditionedAdapter],
    *,
    test=None,
    baselines: bool = True,
) -> dict:
    """All methods of one fold on the same test images.

    Args:
        recipe: the Recipe (data, image size, eval settings).
        fold: the class split to evaluate.
        generators: method name -> a trained generator (folder or object), e.g. {"head_only": ..., "full": ...}.
        test: the test LabeledImages (loaded from the recipe when None).
        baselines: also measure chance and text similarity.
    """
    from ..backbones import data_config as backbone_data_config
    from ..data import to_backbone_input
    from .episode_data import load_recipe_data, load_split

    d = recipe.data
    if test is None:  # the recipe's test split, decoded once at its image size (image folders, split files included)
        test = load_recipe_data(recipe, d.test_split, d.test_limit_per_class)
    split = load_split(recipe, fold)
    adapters = {
        name: g
        if isinstance(g, LanguageConditionedAdapter)
        else LanguageConditionedAdapter.from_pretrained(os.fspath(g))
        for name, g in generators.items()
    }
    first = next(iter(adapters.values())) if adapters else LanguageConditionedAdapter(recipe.adapter)
    backbone = first.create_backbone()
    device = next(first.parameters()).device
    backbone.to(device)
    data_config = backbone_data_config(backbone, first.config.preprocessing)  # what the generator was trained with

    def prepare(images: Tensor) -> Tensor:
        return to_backbone_input(images, data_config, d.img_size).to(device)

    batch = recipe.eval.batch_size
    methods: dict[str, dict] = {}
    if baselines:
        methods["chance"] = _chance(split.seen, split.unseen)
        scorer = text_similarity_scorer(
            backbone, first.text_encoder, test.descriptions, recipe.eval.text_similarity_top_k
        )
        methods["text_similarity"] = _zsl_gzsl(scorer, test, split.seen, split.unseen, prepare, batch)
    for name, adapter in adapters.items():
        adapter.to(device).eval()
        scorer = generator_scorer(adapter, backbone, test.descriptions)
        methods[name] = _zsl_gzsl(scorer, test, split.seen, split.unseen, prepare, batch)
    return {
        "dataset": d.dataset,
        "fold": fold,
        "seen": list(split.seen),
        "unseen": list(split.unseen),
        "methods": methods,
    }


# across folds and reports

_METRICS = ("zsl", "zsl_top5", "gzsl_seen", "gzsl_unseen", "gzsl_h", "gzsl_ausuc")


def aggregate_folds(folds: list[dict]) -> dict:
    """Mean and (population) standard deviation of every method's metrics over folds."""
    names = list(folds[0]["methods"])
    out = {}
    for name in names:
        out[name] = {}
        for metric in _METRICS:
            values = [f["methods"][name][metric] for f in folds if name in f["methods"]]
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
            out[name][metric] = {"mean": mean, "std": std, "n": len(values)}
    return out


def markdown_table(summary: dict) -> str:
    rows = [
        "| method | ZSL top-1 (per class) | ZSL top-5 | GZSL seen | GZSL unseen | GZSL H | GZSL AUSUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, metrics in summary.items():
        cells = [f"{100 * metrics[m]['mean']:.1f} ± {100 * metrics[m]['std']:.1f}" for m in _METRICS]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def write_report(folds: list[dict], out_dir: str | os.PathLike, title: str, plot_method: str = "full") -> dict:
    """results.json, results.md and PNG plots (per-class ZSL accuracy and confusion matrix of ``plot_method``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = aggregate_folds(folds)
    payload = {"title": title, "summary": summary, "folds": folds}
    write_atomic(out / "results.json", lambda tmp: tmp.write_text(json.dumps(payload, indent=2)))
    text = f"# {title}\n\nmean ± std over {len(folds)} fold(s), in %\n\n" + markdown_table(summary)
    write_atomic(out / "results.md", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    _plots(folds, out, plot_method)
    return payload


MAX_SHOWN = 40  # classes drawn per plot: beyond this a plot is unreadable, so the best and worst are shown


def _plots(folds: list[dict], out: Path, method: str) -> None:
    """Per-class accuracy (all classes up to MAX_SHOWN, else the 20 best and 20 worst, sorted) and the confusion
    matrix of the fold's most-confused classes (at most 30), sized so labels stay readable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_class: dict[str, list[float]] = {}
    for f in folds:
        for c, acc in f["methods"].get(method, {}).get("zsl_per_class", {}).items():
            per_class.setdefault(c, []).append(acc)
    if not per_class:
        return
    means = sorted(((100 * sum(v) / len(v), c) for c, v in per_class.items()), reverse=True)
    half = MAX_SHOWN // 2
    shown = means if len(means) <= MAX_SHOWN else [*means[:half], *means[-half:]]
    fig, ax = plt.subplots(figsize=(6, 0.6 + 0.22 * len(shown)))
    ax.barh(range(len(shown)), [m for m, _ in shown], color="tab:blue")
    ax.set_yticks(range(len(shown)), [c for _, c in shown], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ZSL top-1 (%)")
    note = "" if len(means) <= MAX_SHOWN else f" ({half} best and {half} worst of {len(means)})"
    ax.set_title(f"{method}: per-class accuracy on unseen classes{note}", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"per_class_{method}.png", dpi=120)
    plt.close(fig)
    f0 = next(f for f in folds if method in f["methods"])
    confusion = torch.tensor(f0["methods"][method]["zsl_confusion"], dtype=torch.float)
    rates = confusion / confusion.sum(1, keepdim=True).clamp(min=1)
    names = list(f0["unseen"])
    if len(names) > 30:  # the classes most often mistaken for another
        keep = torch.argsort(1 - rates.diagonal())[-30:].sort().values
        rates, names = rates[keep][:, keep], [names[i] for i in keep.tolist()]
    side = 2.5 + 0.18 * len(names)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=6)
    ax.set_yticks(range(len(names)), names, fontsize=6)
    shown_note = "" if len(names) == len(f0["unseen"]) else f" ({len(names)} most-confused of {len(f0['unseen'])})"
    ax.set_title(f"{method}, fold {f0['fold']}: unseen confusion{shown_note}", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"confusion_{method}_fold{f0['fold']}.png", dpi=120)
    plt.close(fig)
