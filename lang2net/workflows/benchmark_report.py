"""The zero-shot benchmark apart from running models: options, per-method entries, aggregation, markdown/PNG report."""

from __future__ import annotations

import json
import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data import LabeledImages, emoji_classes
from ..utils.atomic import write_atomic
from ..utils.checks import check_int
from .few_way import aggregate_protocol_c, markdown_protocol_c
from .metrics import bootstrap_ci, gzsl_metrics, per_class_topk
from .zsl import calibrated_stacking, choose_calibration

__all__ = [
    "DEFAULT_GRIDS",
    "BenchmarkOptions",
    "aggregate_benchmark",
    "chance_entries",
    "emoji_categories",
    "example_items",
    "example_method",
    "markdown_report",
    "protocol_a_entry",
    "protocol_b_entry",
    "write_benchmark_report",
]

A_METRICS = ("top1", "top5")
B_METRICS = ("seen", "unseen", "h", "seen_cal", "unseen_cal", "h_cal", "gamma")
B_PERCENT = B_METRICS[:-1]  # gamma is a score offset, not an accuracy
_ORDER = ("chance", "conse", "eszsl", "devise")  # baselines first in tables, then the generators as given


_POWERS = [10.0**k for k in range(-3, 4)]  # 1e-3 .. 1e3, the range of the ESZSL paper
DEFAULT_GRIDS: dict[str, dict[str, list[float]]] = {
    "eszsl": {"gamma": _POWERS, "lam": _POWERS},
    "devise": {"lam": _POWERS},
}


@dataclass(frozen=True)
class BenchmarkOptions:
    """How :func:`~lang2net.workflows.benchmark.run_benchmark` measures a fold.

    Attributes:
        img_size: backbone input side; None takes it from the backbone's data config.
        batch_size: images per forward pass (generators, and the feature cache ``run_benchmark`` builds).
        categories: class name -> category, for per-category top-1 (:func:`emoji_categories`); None skips it.
        styles: names of the two styles: feature-cache keys; protocol B trains on the first, tests on the second.
        zsl_across_styles: protocol A fits its baselines on the first style and tests on the second too (for a
            dataset whose two "styles" are its train and test splits); False: it fits and tests on both.
        conse_top_k: ImageNet labels ConSE mixes; None skips ConSE.
        grids: baseline name -> hyperparameter grid, replacing that baseline's grid in :data:`DEFAULT_GRIDS`.
        n_boot: bootstrap resamples of the confidence intervals.
        n_examples: protocol A predictions kept for the example grid.
        few_way: class counts of protocol C's tasks among the unseen classes (:mod:`.few_way`); empty skips it.
        few_way_rounds: partitions of the unseen classes into protocol C tasks, per count.
        few_way_similar: class counts of protocol C's tasks of similar classes (each class with its nearest by
            description: :func:`.few_way.similar_tasks`), reported as "<count>-similar".
    """

    img_size: int | None = None
    batch_size: int = 64
    categories: Mapping[str, str] | None = None
    styles: tuple[str, str] = ("twitter", "google")
    zsl_across_styles: bool = False
    conse_top_k: int | None = 10
    grids: Mapping[str, Mapping[str, Sequence[float]]] = field(default_factory=dict)
    n_boot: int = 1000
    n_examples: int = 24
    few_way: tuple[int, ...] = ()
    few_way_rounds: int = 10
    few_way_similar: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for ways in (*self.few_way, *self.few_way_similar):
            check_int("few_way", ways, minimum=2)
        for name in ("batch_size", "n_boot", "n_examples", "few_way_rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.img_size is not None and (
            isinstance(self.img_size, bool) or not isinstance(self.img_size, int) or self.img_size < 1
        ):
            raise ValueError(f"img_size must be a positive int or None, got {self.img_size!r}")
        if len(self.styles) != 2 or self.styles[0] == self.styles[1]:
            raise ValueError(f"styles must be two different names, got {self.styles!r}")
        unknown = sorted(set(self.grids) - set(DEFAULT_GRIDS))
        if unknown:
            raise ValueError(f"grids for unknown baselines {unknown}; valid: {sorted(DEFAULT_GRIDS)}")


# per-method entries


def _top1_correct(scores: Tensor, labels: Tensor) -> Tensor:
    """(n,) bool top-1 hits with ties counted against the true class, as in ``per_class_topk``."""
    return (scores >= scores.gather(1, labels[:, None])).sum(1) <= 1


def protocol_a_entry(
    scores: Tensor, labels: Tensor, names: Sequence[str], categories: Mapping[str, str] | None, n_boot: int = 1000
) -> dict[str, Any]:
    """Protocol A numbers of one method.

    Args:
        scores: (n, u) scores of the test images among the unseen classes.
        labels: (n,) true class of each image, 0..u-1.
        names: the u unseen class names, in column order.
        categories: class name -> category (classes missing from it count as "other"); None skips per_category.
        n_boot: bootstrap resamples of the CIs.

    Returns:
        ``top1``, ``top5`` (per-class means), ``top1_ci``, ``top5_ci`` (95% bootstrap over classes),
        ``per_class_top1`` (class -> accuracy), ``correct`` (per-image 0/1 top-1, for McNemar) and ``per_category``.
    """
    out = per_class_topk(scores, labels, k=(1, 5))
    classes = [names[i] for i in out["classes"].tolist()]
    per_class = dict(zip(classes, out["per_class_top1"].tolist(), strict=True))
    entry: dict[str, Any] = {
        "top1": out["top1"],
        "top5": out["top5"],
        "top1_ci": list(bootstrap_ci(out["per_class_top1"], n_boot=n_boot)),
        "top5_ci": list(bootstrap_ci(out["per_class_top5"], n_boot=n_boot)),
        "per_class_top1": per_class,
        "correct": _top1_correct(scores, labels).int().tolist(),
    }
    if categories is not None:
        groups: dict[str, list[float]] = {}
        for c, acc in per_class.items():
            groups.setdefault(categories.get(c, "other"), []).append(acc)
        entry["per_category"] = {g: sum(v) / len(v) for g, v in sorted(groups.items())}
    return entry


def protocol_b_entry(scores: Tensor, labels: Tensor, n_train: int, n_val: int) -> dict[str, float]:
    """Protocol B numbers of one method, raw and with calibrated stacking.

    Args:
        scores: (n, c) scores over all classes, ordered train, validation, unseen.
        labels: (n,) true classes in that order.
        n_train: number of train (seen) classes.
        n_val: number of validation classes.

    Returns:
        ``seen``, ``unseen``, ``h`` on the test images (train and unseen classes), the same after subtracting
        ``gamma`` from the train-class scores (``*_cal``), ``gamma`` (chosen on the train + validation images with
        validation as "unseen") and the harmonic mean on those calibration images before and after
        (``h_val_raw``, ``h_val_cal``).
    """
    seen_mask = torch.zeros(scores.shape[1], dtype=torch.bool)
    seen_mask[:n_train] = True
    calib = labels < n_train + n_val
    test = (labels < n_train) | (labels >= n_train + n_val)
    gamma, h_val_cal = choose_calibration(scores[calib], labels[calib], seen_mask)
    raw = gzsl_metrics(scores[test], labels[test], seen_mask)
    cal = gzsl_metrics(calibrated_stacking(scores[test], seen_mask, gamma), labels[test], seen_mask)
    return {
        **raw,
        **{f"{k}_cal": v for k, v in cal.items()},
        "gamma": gamma,
        "h_val_raw": gzsl_metrics(scores[calib], labels[calib], seen_mask)["h"],
        "h_val_cal": h_val_cal,
    }


def chance_entries(
    unseen: Sequence[str], n_all: int, categories: Mapping[str, str] | None
) -> tuple[dict[str, Any], dict[str, float]]:
    """Analytic chance rows of protocols A (1/u, min(5, u)/u) and B (1/c on every side, gamma 0)."""
    u = len(unseen)
    a: dict[str, Any] = {"top1": 1 / u, "top5": min(5, u) / u, "top1_ci": [1 / u] * 2, "top5_ci": [min(5, u) / u] * 2}
    if categories is not None:
        a["per_category"] = {g: 1 / u for g in sorted({categories.get(n, "other") for n in unseen})}
    b = {k: 1 / n_all for k in ("seen", "unseen", "h", "seen_cal", "unseen_cal", "h_cal", "h_val_raw", "h_val_cal")}
    return a, {**b, "gamma": 0.0}


def example_method(results: Mapping[str, Any]) -> str | None:
    """ "full" when measured, else the method with the best protocol A top-1 (chance excluded); None if none."""
    top1 = {name: r["top1"] for name, r in results.items() if name != "chance"}
    return "full" if "full" in top1 else max(top1, key=lambda n: top1[n], default=None)


def example_items(
    scores: Tensor,
    labels: Tensor,
    origin: Sequence[tuple[str, int]],
    names: Sequence[str],
    descriptions: Mapping[str, Sequence[str]],
    n: int = 24,
) -> list[dict[str, Any]]:
    """``n`` test images spread evenly over the rows of ``scores``, with prediction, truth and confidence.

    Args:
        scores: (m, u) protocol A scores; labels: (m,) true classes 0..u-1.
        origin: (style, index into that style's LabeledImages) of each row.
        names: the u class names; descriptions: class -> descriptions (the first is shown).
        n: number of examples.

    Returns:
        ``[{"style", "index", "predicted", "true", "confidence" (softmax of the scores), "description"}, ...]``.
    """
    probs = scores.float().softmax(1)
    picks = sorted({round(float(x)) for x in torch.linspace(0, len(origin) - 1, min(n, len(origin)))})
    out = []
    for i in picks:
        pred, true = int(scores[i].argmax()), int(labels[i])
        out.append(
            {
                "style": origin[i][0],
                "index": origin[i][1],
                "predicted": names[pred],
                "true": names[true],
                "confidence": float(probs[i, pred]),
                "description": descriptions[names[true]][0],
            }
        )
    return out


def emoji_categories(root: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Emoji class name -> its emoji-datasource category ("Animals & Nature", ...); needs the fetched emoji data."""
    return {c.name: c.category for c in emoji_classes(root)}


# aggregation


def _stats(values: Sequence[float]) -> dict[str, float]:
    """Mean, population standard deviation and count."""
    mean = sum(values) / len(values)
    return {"mean": mean, "std": math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)), "n": len(values)}


def _methods(folds: Sequence[Mapping[str, Any]], protocol: str) -> list[str]:
    seen: dict[str, None] = {}
    for fold in folds:
        seen.update(dict.fromkeys(fold[protocol]))
    return sorted(seen, key=lambda m: (_ORDER.index(m) if m in _ORDER else len(_ORDER), list(seen).index(m)))


def _aggregate_a(folds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for method in _methods(folds, "protocol_a"):
        rows = [f["protocol_a"][method] for f in folds if method in f["protocol_a"]]
        entry: dict[str, Any] = {m: _stats([r[m] for r in rows]) for m in A_METRICS}
        entry["top1_ci_low"] = _stats([r["top1_ci"][0] for r in rows])
        entry["top1_ci_high"] = _stats([r["top1_ci"][1] for r in rows])
        cats = sorted({c for r in rows for c in r.get("per_category", {})})
        entry["per_category"] = {
            c: _stats([r["per_category"][c] for r in rows if c in r.get("per_category", {})]) for c in cats
        }
        out[method] = entry
    return out


def aggregate_benchmark(results_per_fold: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and population std over folds of every number of :func:`~lang2net.workflows.benchmark.run_benchmark`.

    Returns:
        ``{"n_folds", "protocol_a": {method: {top1, top5, top1_ci_low, top1_ci_high: stats, per_category: {cat:
        stats}}}, "protocol_b": {method: {metric: stats}}, "protocol_c": (see ``few_way.aggregate_protocol_c``),
        "mcnemar_full_vs_head_only": [p per fold],
        "timings": {stage: stats}}`` with stats ``{"mean", "std", "n"}``.
    """
    folds = list(results_per_fold)
    if not folds:
        raise ValueError("results_per_fold is empty: need at least one fold's result")
    b: dict[str, Any] = {}
    for method in _methods(folds, "protocol_b"):
        rows = [f["protocol_b"][method] for f in folds if method in f["protocol_b"]]
        b[method] = {m: _stats([r[m] for r in rows]) for m in B_METRICS}
    stages = list(dict.fromkeys(s for f in folds for s in f.get("timings", {})))
    return {
        "n_folds": len(folds),
        "protocol_a": _aggregate_a(folds),
        "protocol_b": b,
        "protocol_c": aggregate_protocol_c(folds),
        "mcnemar_full_vs_head_only": [f.get("mcnemar_full_vs_head_only") for f in folds],
        "timings": {s: _stats([f["timings"][s] for f in folds if s in f.get("timings", {})]) for s in stages},
    }


# markdown


def _pct(stats: Mapping[str, float]) -> str:
    return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _markdown_a(summary: Mapping[str, Any], tested: Sequence[str]) -> list[str]:
    rows = []
    for method, s in summary["protocol_a"].items():
        ci = f"[{100 * s['top1_ci_low']['mean']:.1f}, {100 * s['top1_ci_high']['mean']:.1f}]"
        rows.append([_label(method, s["top1"], summary), _pct(s["top1"]), ci, _pct(s["top5"])])
    lines = [f"## Protocol A: zero-shot, unseen classes only ({' + '.join(tested)} images)", ""]
    lines += _table(["method", "top-1 %", "top-1 95% CI (classes)", "top-5 %"], rows)
    cats = sorted({c for s in summary["protocol_a"].values() for c in s["per_category"]})
    if cats:
        methods = list(summary["protocol_a"])
        body = [[c, *(_cell(summary["protocol_a"][m]["per_category"].get(c)) for m in methods)] for c in cats]
        lines += ["", "Per-category top-1 %:", "", *_table(["category", *methods], body)]
    return lines


def _label(method: str, stats: Mapping[str, float], summary: Mapping[str, Any]) -> str:
    """A method measured on fewer folds than the report says so (its ± is then over those folds only)."""
    n = int(stats.get("n", summary["n_folds"]))
    return method if n == summary["n_folds"] else f"{method} ({n} of {summary['n_folds']} folds)"


def _cell(stats: Mapping[str, float] | None) -> str:
    return "–" if stats is None else _pct(stats)


def _markdown_b(summary: Mapping[str, Any], styles: Sequence[str]) -> list[str]:
    rows = []
    for method, s in summary["protocol_b"].items():
        gamma = f"{s['gamma']['mean']:.3g} ± {s['gamma']['std']:.2g}"
        rows.append([_label(method, s["h"], summary), *(_pct(s[m]) for m in B_PERCENT), gamma])
    header = ["method", "seen %", "unseen %", "H %", "seen cal. %", "unseen cal. %", "H cal. %", "gamma"]
    title = f"## Protocol B: generalised zero-shot (fitted on {styles[0]}, tested on {styles[1]})"
    note = (
        f"Test images: {styles[1]} images of the train (seen) and unseen classes, scored over all classes (train + "
        f"validation + unseen). Calibrated: gamma chosen on {styles[1]} images of the train and validation classes "
        "(validation as unseen), never on test-unseen images; the seen test images are part of that choice."
    )
    return [title, "", note, "", *_table(header, rows)]


def _markdown_folds(folds: Sequence[Mapping[str, Any]]) -> list[str]:
    a_methods, b_methods = _methods(folds, "protocol_a"), _methods(folds, "protocol_b")
    header = ["fold", "unseen", *(f"A top-1 {m}" for m in a_methods), *(f"B H cal. {m}" for m in b_methods)]
    rows = []
    for f in folds:
        a = [f"{100 * f['protocol_a'][m]['top1']:.1f}" if m in f["protocol_a"] else "–" for m in a_methods]
        b = [f"{100 * f['protocol_b'][m]['h_cal']:.1f}" if m in f["protocol_b"] else "–" for m in b_methods]
        rows.append([str(f["fold"]), str(f["n_unseen"]), *a, *b])
    lines = ["## Per fold", "", *_table(header, rows)]
    p_values = [(f["fold"], f.get("mcnemar_full_vs_head_only")) for f in folds]
    if any(p is not None for _, p in p_values):
        lines += ["", "McNemar full vs head_only (protocol A, per-image top-1), p-value per fold:", ""]
        lines += [f"- fold {fold}: p = {p:.3g}" for fold, p in p_values if p is not None]
    return lines


def _fit_note(first: Mapping[str, Any]) -> str:
    """A sentence naming the baselines' fit styles when they go beyond the test styles (else empty)."""
    styles = first.get("styles", ["twitter", "google"])
    fit_a, fit_b = first.get("fit_styles_a", styles), first.get("fit_styles_b", styles[:1])
    if list(fit_a) == list(styles) and list(fit_b) == list(styles[:1]):
        return ""
    return f" Baselines fitted on {'+'.join(fit_a)} (protocol A) and {'+'.join(fit_b)} (protocol B)."


def markdown_report(results_per_fold: Sequence[Mapping[str, Any]], title: str) -> str:
    """The benchmark's markdown: protocol A and B tables, per-category, per-fold spread, McNemar and timings."""
    folds = list(results_per_fold)
    summary = aggregate_benchmark(folds)
    first = folds[0]
    styles = first.get("styles", ["twitter", "google"])
    lines = [
        f"# {title}",
        "",
        f"{len(folds)} fold(s) of {first.get('dataset', '?')}, {first.get('backbone', '?')} at "
        f"{first.get('img_size', '?')} px; mean ± std over folds; {first['n_unseen']} unseen classes in fold "
        f"{first['fold']}. Accuracies are per-class means.{_fit_note(first)}",
        "",
        *_markdown_a(summary, first.get("test_styles_a", styles)),
        "",
        *_markdown_b(summary, styles),
        "",
        *markdown_protocol_c(folds),
        *_markdown_folds(folds),
        "",
        "## Timings (s)",
        "",
        *_table(
            ["stage", "mean per fold", "total"],
            [[s, f"{t['mean']:.2f}", f"{t['mean'] * t['n']:.2f}"] for s, t in summary["timings"].items()],
        ),
    ]
    return "\n".join(lines) + "\n"


# figures


def _save(fig: Any, path: Path) -> None:
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=130))


def _category_figure(summary: Mapping[str, Any], path: Path) -> bool:
    """Grouped bars: protocol A top-1 per category (mean over folds), one bar per method; chance as a line."""
    from matplotlib.figure import Figure

    results = summary["protocol_a"]
    methods = [m for m in results if m != "chance" and results[m]["per_category"]]
    cats = sorted({c for m in methods for c in results[m]["per_category"]})
    if not methods or not cats:
        return False
    fig = Figure(figsize=(max(6.0, 1.3 * len(cats) + 2), 3.6), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        values = [100 * results[method]["per_category"].get(c, {"mean": 0.0})["mean"] for c in cats]
        ax.bar([i + (j - (len(methods) - 1) / 2) * width for i in range(len(cats))], values, width, label=method)
    if "chance" in results:
        ax.axhline(100 * results["chance"]["top1"]["mean"], color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(range(len(cats)), [textwrap.fill(c, 14) for c in cats], fontsize=7)
    ax.set_ylabel("top-1 on unseen classes (%)", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("Protocol A: per-category top-1 (mean over folds)", fontsize=9)
    fig.legend(loc="outside right upper", fontsize=7)
    _save(fig, path)
    return True


def _example_figure(fold: Mapping[str, Any], images: Mapping[str, LabeledImages], path: Path) -> bool:
    """A grid of protocol A test images titled with predicted class, true class and the true class's description."""
    from matplotlib.figure import Figure

    items = [e for e in fold.get("examples", {}).get("items", []) if e["style"] in images]
    if not items:
        return False
    cols = min(6, len(items))
    rows = math.ceil(len(items) / cols)
    fig = Figure(figsize=(2.1 * cols, 2.5 * rows), layout="constrained")
    for k, item in enumerate(items):
        ax = fig.add_subplot(rows, cols, k + 1)
        image = images[item["style"]].images[item["index"]].numpy()
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        ax.set_axis_off()
        ok = item["predicted"] == item["true"]
        text = (
            f"pred: {textwrap.shorten(item['predicted'], 40)} ({100 * item['confidence']:.0f}%)\n"
            f"true: {textwrap.shorten(item['true'], 40)}\n"
            + textwrap.fill(textwrap.shorten(f"“{item['description']}”", 80), 30)
        )
        ax.set_title(text, fontsize=5.5, color="tab:green" if ok else "tab:red", loc="left")
    method = fold["examples"]["method"]
    top1 = fold["protocol_a"].get(method, {}).get("top1")
    score = f", top-1 {100 * top1:.1f}% over all {fold['n_unseen']} unseen classes" if top1 is not None else ""
    fig.suptitle(f"{method}, fold {fold['fold']}{score} (green = correct; % = confidence)", fontsize=9)
    _save(fig, path)
    return True


def write_benchmark_report(
    results_per_fold: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    title: str,
    *,
    images: Mapping[str, LabeledImages] | None = None,
) -> dict[str, Any]:
    """Write ``results.json``, ``results.md``, ``per_category.png`` and (given ``images``) ``examples.png``.

    Args:
        results_per_fold: the dicts :func:`~lang2net.workflows.benchmark.run_benchmark` returned.
        out_dir: the report folder (created).
        title: the markdown title.
        images: style name -> the LabeledImages the examples index (e.g. ``{"twitter": tw, "google": go}``); the
            example grid is drawn for the first fold that has examples.

    Returns:
        ``{"title", "summary", "folds", "files"}`` (also the content of results.json, without ``files``).
    """
    folds = list(results_per_fold)
    out = Path(out_dir)
    summary = aggregate_benchmark(folds)
    payload = {"title": title, "summary": summary, "folds": folds}
    write_atomic(out / "results.json", lambda tmp: tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8"))
    text = markdown_report(folds, title)
    write_atomic(out / "results.md", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    files = ["results.json", "results.md"]
    if _category_figure(summary, out / "per_category.png"):
        files.append("per_category.png")
    shown = next((f for f in folds if f.get("examples", {}).get("items")), None)
    if images is not None and shown is not None and _example_figure(shown, images, out / "examples.png"):
        files.append("examples.png")
    return {**payload, "files": files}
