"""The demo behind ``lang2net demo``: a published generator writes classifiers for classes it never saw, from words."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .demo_emoji import recorded_fold
from .grids import prediction_grid

__all__ = ["DEFAULT_ADAPTER", "DemoResult", "format_result", "parse_describe", "prediction_grid", "run_demo"]

DEFAULT_ADAPTER = "adapters/emoji-effnet-lite0"
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

    source: str  # "emoji", "fashion_mnist" or "photos"
    classes: list[str]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> zsl / gzsl_* (fractions)
    recorded: dict[str, float] = field(default_factory=dict)  # results stored with the published generator
    grid: Path | None = None
    predictions: list[tuple[str, str | None]] = field(default_factory=list)  # (predicted, true)
    fold: int = 0
    matched: dict[str, str] = field(default_factory=dict)  # --describe name -> dataset class it was matched to
    accuracy: float | None = None  # on the images of the matched described classes
    n_images: int = 0


def parse_describe(items: Sequence[str]) -> dict[str, list[str]]:
    """``["name: text", ...]`` -> {name: [texts]}; a name given twice collects paraphrases."""
    out: dict[str, list[str]] = {}
    for item in items:
        name, sep, text = item.partition(":")
        if not sep or not name.strip() or not text.strip():
            raise ValueError(f"--describe {item!r}: expected 'class name: description'")
        out.setdefault(name.strip(), []).append(text.strip())
    return out


def _published_recipe(adapter_path: str):
    """The recipe that built a published folder (``hub_configs/<name>.yaml`` beside ``adapters/<name>``), or None."""
    from ..io.cards import find_recipe
    from ..workflows.recipe import load_recipe

    path = find_recipe(adapter_path) if Path(adapter_path).is_dir() else None
    return load_recipe(path) if path is not None else None


def _emoji(adapter_path: str, recipe, describe, out: Path, fold: int, grid_size: int) -> DemoResult:
    from .demo_emoji import run_emoji_demo

    got = run_emoji_demo(adapter_path, recipe, describe=describe, output=out, fold=fold, grid_size=grid_size)
    if describe:
        return DemoResult(
            "emoji",
            list(describe),
            grid=got["files"][0],
            matched=got["matched"],
            accuracy=got["accuracy"],
            n_images=got["n_images"],
        )
    result = got["result"]
    unseen = list(load_split_names(recipe, fold))
    metrics = {m: {"top1": r["top1"], "top5": r["top5"]} for m, r in result["protocol_a"].items()}
    grid = next((f for f in got["files"] if f.name == "examples.png"), None)
    return DemoResult("emoji", unseen, metrics, got["recorded"], grid, fold=fold)


def load_split_names(recipe, fold: int) -> list[str]:
    from ..workflows.episode_data import load_split

    return list(load_split(recipe, fold).unseen)


def _recipe_for(adapter_path: str, adapter_config, img_size: int | None, limit: int):
    from ..workflows.recipe import DataConfig, Recipe

    recipe = _published_recipe(adapter_path)
    name = Path(adapter_path).name
    data = recipe.data if recipe is not None else DataConfig(dataset="fashion_mnist")
    data = DataConfig(dataset="fashion_mnist", img_size=img_size or data.img_size, test_limit_per_class=limit)
    return Recipe(name=name if recipe is None else recipe.name, adapter=adapter_config, data=data)


def _photos(img_size: int) -> tuple[torch.Tensor, list[str]]:
    import skimage.data

    from ..data.images import square_resize

    images = [square_resize(getattr(skimage.data, fn)(), img_size) for fn in _PHOTOS]  # the one image path
    return torch.stack(images), list(_PHOTOS.values())


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
    from ..adapter import LanguageConditionedAdapter
    from ..backbones import data_config as backbone_data_config
    from ..data import class_splits, load_dataset
    from ..workflows.evaluation import evaluate_fold

    out = Path(output)
    published = _published_recipe(adapter_path)
    if published is not None and published.data.dataset == "emoji":
        return _emoji(adapter_path, published, describe, out, fold, grid_size)
    adapter = LanguageConditionedAdapter.from_pretrained(adapter_path)
    recipe = _recipe_for(adapter_path, adapter.config, img_size, limit_per_class)
    size = recipe.data.img_size
    try:
        test = load_dataset("fashion_mnist", "test", limit_per_class=limit_per_class)
    except FileNotFoundError:
        test = None
    backbone = adapter.create_backbone()
    data_config = backbone_data_config(backbone, adapter.config.preprocessing)  # as the generator was trained
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
        recorded_fold(adapter_path),
        grid,
        list(zip(predicted, truth, strict=True)),
    )


def format_result(result: DemoResult) -> str:
    """The demo's terminal report."""
    lines = [f"classes written from descriptions ({result.source}): " + _few(result.classes)]
    if result.metrics:
        keys = list(next(iter(result.metrics.values())))
        names = {
            "zsl": "ZSL unseen top-1",
            "zsl_top5": "ZSL top-5",
            "gzsl_seen": "GZSL seen",
            "gzsl_unseen": "GZSL unseen",
            "gzsl_h": "GZSL H",
            "gzsl_ausuc": "GZSL AUSUC",
            "top1": "unseen top-1",
            "top5": "unseen top-5",
        }
        lines += ["", "| method | " + " | ".join(names.get(k, k) for k in keys) + " |", "|---|" + "---:|" * len(keys)]
        for method, m in result.metrics.items():
            lines.append(f"| {method} | " + " | ".join(f"{100 * m[k]:.1f}" for k in keys) + " |")
    if result.recorded:
        lines += ["", f"recorded when this generator was published (fold {result.fold}, the same unseen classes):"]
        lines += [f"  {k}: {100 * v:.1f}" for k, v in result.recorded.items()]
    if result.source == "emoji" and result.matched is not None and not result.metrics:
        lines += ["", f"matched to emoji classes: {result.matched or 'none'}"]
        if result.accuracy is not None:
            lines.append(
                f"top-1 accuracy on the {result.n_images} images of those classes: {100 * result.accuracy:.1f}%"
            )
        else:
            lines.append("no images of the described classes here: the grid shows other icons, scored among yours")
    elif result.predictions and not result.metrics:
        lines += ["", *(f"  predicted {p!r}" + (f" (true {t!r})" if t else "") for p, t in result.predictions[:12])]
    if result.source == "photos":
        lines += [
            "",
            "note: photos are outside the domain of a generator trained on icons or greyscale items; expect "
            "low confidence and errors",
        ]
    if result.grid is not None:
        lines += ["", f"sample predictions: {result.grid}"]
    return "\n".join(lines)


def _few(names: Sequence[str], n: int = 12) -> str:
    return ", ".join(names[:n]) + (f" ... ({len(names)} classes)" if len(names) > n else "")
