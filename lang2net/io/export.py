"""Export a TaskAdaptation for the ecosystem: a peft LoRA folder and a plain timm folder, each with a model card.

Both are checked against timm's own build of the backbone (on the meta device: nothing is allocated), so an export
for the wrong backbone or without the backbone's construction arguments fails before anything is written.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from ..engine.targets import describe_layer
from . import cards
from .folders import CARD_NAME, CONFIG_NAME, LIBRARY, WEIGHTS_NAME, card_name, check_tensors, few, save_tensors, writing
from .records import TaskData

__all__ = ["export_peft", "export_timm"]


# helpers


def _timm_model(name: str, num_classes: int, model_args: Mapping[str, Any]) -> nn.Module:
    """timm's build of ``name`` on the meta device (shapes and names, no memory); on the CPU if a model cannot."""
    try:
        with torch.device("meta"):
            return timm.create_model(name, pretrained=False, num_classes=num_classes, **model_args)
    except (RuntimeError, NotImplementedError):  # e.g. a model that reads a tensor's value while it is built
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **model_args)


def _classifier_name(model: nn.Module) -> str:
    head = model.get_classifier()
    names = [n for n, m in model.named_modules() if m is head]
    if not isinstance(head, nn.Linear) or not names:
        raise ValueError(f"{type(model).__name__}'s classifier is {type(head).__name__}, not one nn.Linear")
    return names[0]


def _check_layers(task: TaskData, model: nn.Module, where: str) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    for spec in task.target_specs:
        layer = modules.get(spec.name)
        found = describe_layer(spec.name, layer) if layer is not None else None
        if spec.name in task.deltas and (found is None or found.shape_group != spec.shape_group):
            raise ValueError(
                f"target '{spec.name}' {spec.shape_group} does not exist with that shape in {where}: a task made for "
                f"{task.backbone!r} cannot be exported for another backbone"
            )
    return modules


# peft


def write_peft(task: TaskData, folder: Path, *, name: str, model_args: Mapping[str, Any], **card: Any) -> None:
    import peft

    if not task.deltas:
        raise ValueError("this task has no deltas (a head-only generator): export it with to_timm instead")
    model = _timm_model(task.backbone, task.num_classes, model_args)  # peft's own naming, no backbone allocated
    modules = _check_layers(task, model, f"timm's {task.backbone!r}")
    for n in task.deltas:
        layer = modules[n]
        if isinstance(layer, nn.Conv2d) and (tuple(layer.dilation) != (1, 1) or layer.padding_mode != "zeros"):
            raise ValueError(
                f"target '{n}': peft's LoRA conv ignores dilation/padding_mode, so it cannot run this delta"
            )
    head = _classifier_name(model)
    clashes = [k for k in modules if k.endswith(head) and k != head]
    if clashes:  # peft matches modules_to_save by plain suffix
        raise ValueError(f"peft would also treat {few(clashes)} as the head {head!r}; cannot export this model")
    ranks = Counter(d.rank for d in task.deltas.values())
    alphas = Counter(d.scale * d.rank for d in task.deltas.values())
    r, alpha = ranks.most_common(1)[0][0], alphas.most_common(1)[0][0]
    config = peft.LoraConfig(
        r=r,
        lora_alpha=alpha,  # peft's scale is lora_alpha / r
        target_modules=sorted(task.deltas),
        rank_pattern={re.escape(n): d.rank for n, d in task.deltas.items() if d.rank != r},
        alpha_pattern={re.escape(n): d.scale * d.rank for n, d in task.deltas.items() if d.scale * d.rank != alpha},
        modules_to_save=[head],
        lora_dropout=0.0,
        init_lora_weights=False,
    )
    peft_model = peft.get_peft_model(model, config)
    inner = peft_model.base_model.model
    for n, d in task.deltas.items():
        layer = inner.get_submodule(n)
        for part, value in (("lora_A", d.A), ("lora_B", d.B)):
            module = getattr(layer, part)["default"]
            module.weight = nn.Parameter(value.detach().cpu().reshape(module.weight.shape).clone(), requires_grad=False)
    saved = inner.get_submodule(head).modules_to_save["default"]
    saved.weight = nn.Parameter(task.head_weight.detach().cpu().clone(), requires_grad=False)
    saved.bias = nn.Parameter(task.head_bias.detach().cpu().clone(), requires_grad=False)
    # base_model_name_or_path stays None, as for any timm model: a name there makes peft look it up on the Hub
    peft_model.save_pretrained(str(folder), save_embedding_layers=False)
    # peft rewrites the card's tags to its own; write ours after it, keeping library_name "peft"
    cards.export_card(task, "peft", name=name, peft_version=peft.__version__, **card).save(folder / CARD_NAME)


def export_peft(task: TaskData, directory: str | os.PathLike, *, model_args: Mapping[str, Any] | None = None) -> Path:
    """adapter_config.json + adapter_model.safetensors: ``PeftModel.from_pretrained(timm_model, directory)`` with
    ``timm.create_model(task.backbone, num_classes=C, **model_args)`` carrying the backbone's weights gives the task."""
    with writing(directory) as tmp:
        write_peft(task, tmp, name=card_name(directory, None), model_args=dict(model_args or {}))
    return Path(directory)


# timm


_SOURCE_KEYS = {"url", "file", "hf_hub_id", "hf_hub_filename", "source", "state_dict", "label_offset"}
_KEEP_NULL = {"pool_size", "first_conv", "classifier"}


def write_timm(
    task: TaskData, folder: Path, merged: nn.Module, *, name: str, model_args: Mapping[str, Any], **card: Any
) -> None:
    """The timm folder of ``merged`` (the task's deltas folded into its backbone, its head in place)."""
    cfg = dict(getattr(merged, "pretrained_cfg", None) or {})
    architecture = cfg.get("architecture") or task.backbone.split(".")[0]
    want = {k: tuple(v.shape) for k, v in _timm_model(architecture, task.num_classes, model_args).state_dict().items()}
    try:
        check_tensors(want, merged.state_dict(), "the merged model", f"timm's {architecture!r} built from config.json")
    except ValueError as e:
        raise ValueError(f"{e}; pass model_args= with the arguments the backbone was created with") from None
    descriptions = {c: " / ".join(task.descriptions.get(c, [])) for c in task.class_names}  # timm: one string each
    pretrained_cfg = {k: v for k, v in cfg.items() if k not in _SOURCE_KEYS and (v is not None or k in _KEEP_NULL)}
    pretrained_cfg.update(
        architecture=architecture, num_classes=task.num_classes, custom_load=False, label_names=list(task.class_names)
    )
    pool = getattr(merged, "global_pool", None)
    data = {
        "architecture": architecture,
        "num_classes": task.num_classes,
        "num_features": int(getattr(merged, "num_features", task.head_weight.shape[1])),
        **({"global_pool": pool} if isinstance(pool, str) and pool else {}),
        "label_names": list(task.class_names),
        "label_descriptions": descriptions,
        **({"model_args": dict(model_args)} if model_args else {}),
        "pretrained_cfg": pretrained_cfg,
        LIBRARY: {"kind": "timm-export", "generator": task.generator, "descriptions": dict(task.descriptions)},
    }
    try:
        (folder / CONFIG_NAME).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    except TypeError as e:
        raise ValueError(f"the backbone's pretrained_cfg does not serialise to JSON ({e})") from None
    save_tensors(folder / WEIGHTS_NAME, merged.state_dict())
    cards.export_card(task, "timm", name=name, **card).save(folder / CARD_NAME)


def export_timm(
    task: TaskData,
    directory: str | os.PathLike,
    merged: nn.Module,
    *,
    model_args: Mapping[str, Any] | None = None,
) -> Path:
    """A timm folder (config.json + model.safetensors) of ``merged`` (``task.merge(backbone)``):
    ``timm.create_model("local-dir:" + directory, pretrained=True)`` gives the same model, with ``label_names`` /
    ``label_descriptions`` in its pretrained_cfg."""
    with writing(directory) as tmp:
        write_timm(task, tmp, merged, name=card_name(directory, None), model_args=dict(model_args or {}))
    return Path(directory)
