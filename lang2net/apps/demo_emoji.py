"""``lang2net demo`` on a generator trained on the emoji benchmark: its fold's unseen classes, every baseline, a grid."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["recorded_fold", "run_emoji_demo"]


def recorded_fold(adapter_path: str | os.PathLike[str]) -> dict[str, float]:
    """The published folder's own model-index results (its fold's numbers), metric name -> value."""
    path = Path(adapter_path) / "metrics.json"
    if not path.is_file():
        return {}
    rows = json.loads(path.read_text(encoding="utf-8"))
    return {
        str(r.get("metric_name") or r["metric_type"]): float(r["metric_value"]) for r in rows if "metric_value" in r
    }


def _match(describe: Mapping[str, Sequence[str]], names: Sequence[str]) -> dict[str, str]:
    """User class name -> dataset class name, case- and space-insensitively."""
    index = {" ".join(n.split()).casefold(): n for n in names}
    return {c: index[k] for c in describe if (k := " ".join(c.split()).casefold()) in index}


def run_emoji_demo(
    adapter_path: str,
    recipe: Any,
    *,
    describe: Mapping[str, Sequence[str]] | None,
    output: Path,
    fold: int,
    grid_size: int = 24,
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Without ``describe``: the fold's unseen classes through the benchmark's protocol A (chance, ConSE, ESZSL,
    DeViSE and this generator on the same images), a grid with descriptions and confidences, and the numbers recorded
    when the generator was published for the same fold. With ``describe``: the user's classes, scored on the images
    of those of them the dataset has (names matched ignoring case), with an accuracy when there are such images."""
    from ..adapter import LanguageConditionedAdapter
    from ..workflows.benchmark import FeatureCache, run_benchmark
    from ..workflows.benchmark_report import emoji_categories, write_benchmark_report
    from ..workflows.episode_data import load_recipe_data, load_split

    styles = {s: load_recipe_data(recipe, s, None) for s in ("twitter", "google")}
    adapter = LanguageConditionedAdapter.from_pretrained(adapter_path)
    if describe:
        return _described(adapter, describe, styles, output, grid_size)
    cache = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "lang2net" / "features"
    features = FeatureCache.for_adapter(adapter, cache_dir=cache, batch_size=recipe.eval.batch_size, device="cpu")
    result = run_benchmark(
        load_split(recipe, fold),
        styles["twitter"],
        styles["google"],
        adapter,
        {"generated": adapter_path},
        features=features,
        img_size=recipe.data.img_size,
        categories=emoji_categories(recipe.data.root),
        n_examples=grid_size,
        n_boot=200,
    )
    title = f"lang2net demo: {Path(adapter_path).name} on emoji fold {fold}"
    written = write_benchmark_report([result], output, title, images=styles)
    return {"result": result, "files": [output / f for f in written["files"]], "recorded": recorded_fold(adapter_path)}


def _described(adapter, describe, styles, output: Path, grid_size: int) -> dict[str, Any]:
    from .grids import prediction_grid

    first = styles["twitter"]
    matched = _match(describe, first.class_names)
    task = adapter.generate({c: list(v) for c, v in describe.items()})
    model = task.bind(adapter.create_backbone()).eval()
    picks = [
        (s, i)
        for s, d in styles.items()
        for i, label in enumerate(d.labels.tolist())
        if first.class_names[label] in matched.values()
    ]
    if not picks:  # none of the described classes has images here: show a sample of icons instead
        picks = [("twitter", int(i)) for i in torch.randperm(len(first), generator=torch.Generator().manual_seed(0))]
    picks = picks[: max(grid_size, len(matched) * 2)]
    images = torch.stack([styles[s].images[i] for s, i in picks])
    prediction = model.predict(images)
    back = {v: k for k, v in matched.items()}
    truth = [back.get(first.class_names[int(styles[s].labels[i])]) for s, i in picks]
    confidence = prediction.probabilities.max(-1).values.tolist()
    known = [(p, t) for p, t in zip(prediction.labels, truth, strict=True) if t is not None]
    accuracy = sum(p == t for p, t in known) / len(known) if known else None
    heading = f"top-1 {100 * accuracy:.0f}% on {len(known)} images" if accuracy is not None else "no images of them"
    grid = prediction_grid(
        images, prediction.labels, truth, output / "predictions.png", confidences=confidence, title=heading
    )
    return {"matched": matched, "accuracy": accuracy, "n_images": len(known), "files": [grid]}
