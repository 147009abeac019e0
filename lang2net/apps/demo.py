"""The demo behind ``lang2net demo``: a published generator writes classifiers for classes it never saw, from words."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..utils.atomic import write_atomic

__all__ = ["DEFAULT_ADAPTER", "DemoResult", "format_result", "parse_describe", "prediction_grid", "run_demo"]

DEFAULT_ADAPTER = "adapters/fashion-mnist-effnet-lite0"
_PHOTOS = {  # scikit-image's bundled photos, used when Fashion-MNIST cannot be had
    "chelsea": "cat",
    "coffee": "coffee cup",
    "astronaut": "astronaut",
    "rocket": "rocket",
    "horse": "horse",
    "camera": "photographer",
}


@dataclass
class DemoResult:
    """What the demo measured and wrote."""

    source: str  # "fashion_mnist" or "photos"
    classes: list[str]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> zsl / gzsl_* (fractions)
    recorded: dict[str, float] = field(default_factory=dict)  # results stored with the published generator
    grid: Path | None = None
    predictions: list[tuple[str, str | None]] = field(default_factory=list)  # (predicted, true)


def parse_describe(items: Sequence[str]) -> dict[str, list[str]]:
    """``["name: text", ...]`` -> {name: [texts]}; a name given twice collects paraphrases."""
    out: dict[str, list[str]] = {}
    for item in items:
        name, sep, text = item.partition(":")
        if not sep or not name.strip() or not text.strip():
            raise ValueError(f"--describe {item!r}: expected 'class name: description'")
        out.setdefault(name.strip(), []).append(text.strip())
    return out


def _recipe_for(adapter_path: str, adapter_config, img_size: int | None, limit: int):
    from ..workflows.recipe import DataConfig, Recipe, load_recipe

    name = Path(adapter_path).name
    candidates = [
        Path("hub_configs") / f"{name}.yaml",
        Path(__file__).resolve().parents[1] / "hub_configs" / f"{name}.yaml",
    ]
    recipe = next((load_recipe(p) for p in candidates if p.is_file()), None)
    data = recipe.data if recipe is not None else DataConfig(dataset="fashion_mnist")
    data = DataConfig(dataset="fashion_mnist", img_size=img_size or data.img_size, test_limit_per_class=limit)
    return Recipe(name=name if recipe is None else recipe.name, adapter=adapter_config, data=data)


def _recorded(adapter_path: str) -> dict[str, float]:
    path = Path(adapter_path) / "metrics.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    rows = data if isinstance(data, list) else data.get("results", [data])
    out = {}
    for row in rows:
        if isinstance(row, Mapping) and "metric_type" in row:
            out[str(row.get("metric_name") or row["metric_type"])] = float(row["metric_value"])
        elif isinstance(row, Mapping) and isinstance(row.get("metrics"), Mapping):
            out.update({str(k): float(v) for k, v in row["metrics"].items()})
    return out


def prediction_grid(images: torch.Tensor, predicted: Sequence[str], truth: Sequence[str | None], path: Path) -> Path:
    """A PNG grid of images titled with the prediction (green when right, red when wrong, black when unknown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    cols = min(6, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, pred, true in zip(axes.flat, images, predicted, truth, strict=False):
        ax.imshow(image.numpy(), cmap="gray" if image.ndim == 2 else None)
        color = "black" if true is None else ("green" if pred == true else "red")
        ax.set_title(pred if true is None or pred == true else f"{pred}\n(is {true})", fontsize=8, color=color)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def _photos(img_size: int) -> tuple[torch.Tensor, list[str]]:
    import skimage.data
    from PIL import Image, ImageOps

    images, names = [], []
    for fn, label in _PHOTOS.items():
        array = getattr(skimage.data, fn)()
        img = Image.fromarray(array).convert("RGB")
        images.append(torch.from_numpy(np.asarray(ImageOps.fit(img, (img_size, img_size)))))
        names.append(label)
    return torch.stack(images), names


def _classify(adapter, backbone, descriptions, images, data_config, img_size) -> list[str]:
    from ..data import to_backbone_input

    model = adapter.generate(descriptions).bind(backbone)
    with torch.no_grad():
        logits = model(to_backbone_input(images, data_config, img_size).to(next(backbone.parameters()).device))
    return [model.class_names[i] for i in logits.argmax(-1).tolist()]


def run_demo(
    adapter_path: str = DEFAULT_ADAPTER,
    *,
    describe: Mapping[str, Sequence[str]] | None = None,
    output: str | os.PathLike = "demo-output",
    limit_per_class: int = 100,
    fold: int = 0,
    img_size: int | None = None,
    grid_size: int = 24,
) -> DemoResult:
    """Generate classifiers from descriptions and measure them on real images.

    Without ``describe``: the fold's unseen Fashion-MNIST classes (never seen in training) get a classifier written from
    their descriptions, measured on the test images next to chance and text-similarity zero-shot. With ``describe``:
    the user's classes, shown on test images. Without Fashion-MNIST: scikit-image's photos.
    """
    import timm.data

    from ..adapter import LanguageConditionedAdapter
    from ..data import class_splits, load_dataset
    from ..workflows.evaluation import evaluate_fold

    adapter = LanguageConditionedAdapter.from_pretrained(adapter_path)
    recipe = _recipe_for(adapter_path, adapter.config, img_size, limit_per_class)
    size = recipe.data.img_size
    out = Path(output)
    try:
        test = load_dataset("fashion_mnist", "test", limit_per_class=limit_per_class)
    except FileNotFoundError:
        test = None
    backbone = adapter.create_backbone()
    data_config = timm.data.resolve_data_config({}, model=backbone)
    if test is None:  # no Fashion-MNIST here: show the flow on photos
        images, truth = _photos(size)
        descriptions = dict(describe or {label: [f"A photo of a {label}."] for label in truth})
        predicted = _classify(adapter, backbone, descriptions, images, data_config, size)
        grid = prediction_grid(
            images, predicted, [t if t in descriptions else None for t in truth], out / "predictions.png"
        )
        return DemoResult("photos", list(descriptions), grid=grid, predictions=list(zip(predicted, truth, strict=True)))
    pick = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:grid_size]
    if describe:
        descriptions = {k: list(v) for k, v in describe.items()}
        predicted = _classify(adapter, backbone, descriptions, test.images[pick], data_config, size)
        truth = [
            test.class_names[i] if test.class_names[i] in descriptions else None for i in test.labels[pick].tolist()
        ]
        grid = prediction_grid(test.images[pick], predicted, truth, out / "predictions.png")
        return DemoResult(
            "fashion_mnist", list(descriptions), grid=grid, predictions=list(zip(predicted, truth, strict=True))
        )
    split = class_splits("fashion_mnist")[fold]
    result = evaluate_fold(recipe, fold, {"generated": adapter}, test=test)
    unseen = test.subset(list(split.unseen))
    pick = torch.randperm(len(unseen), generator=torch.Generator().manual_seed(0))[:grid_size]
    descriptions = {c: test.descriptions[c] for c in split.unseen}
    predicted = _classify(adapter, backbone, descriptions, unseen.images[pick], data_config, size)
    truth = [unseen.class_names[i] for i in unseen.labels[pick].tolist()]
    grid = prediction_grid(unseen.images[pick], predicted, truth, out / "predictions.png")
    metrics = {m: {k: v for k, v in r.items() if isinstance(v, float)} for m, r in result["methods"].items()}
    return DemoResult(
        "fashion_mnist",
        list(split.unseen),
        metrics,
        _recorded(adapter_path),
        grid,
        list(zip(predicted, truth, strict=True)),
    )


def format_result(result: DemoResult) -> str:
    """The demo's terminal report."""
    lines = [f"classes written from descriptions ({result.source}): {', '.join(result.classes)}"]
    if result.metrics:
        lines += ["", "| method | ZSL unseen top-1 | GZSL seen | GZSL unseen | GZSL H |", "|---|---:|---:|---:|---:|"]
        for method, m in result.metrics.items():
            cells = " | ".join(f"{100 * m[k]:.1f}" for k in ("zsl", "gzsl_seen", "gzsl_unseen", "gzsl_h"))
            lines.append(f"| {method} | {cells} |")
    if result.recorded:
        lines += ["", "recorded with the published generator (mean over folds):"]
        lines += [f"  {k}: {100 * v:.1f}" for k, v in result.recorded.items() if " zsl " in f" {k} "]
    elif result.predictions:
        lines += ["", *(f"  predicted {p!r}" + (f" (true {t!r})" if t else "") for p, t in result.predictions[:12])]
    if result.grid is not None:
        lines += ["", f"sample predictions: {result.grid}"]
    return "\n".join(lines)
