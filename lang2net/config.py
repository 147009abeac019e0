"""AdapterConfig: what a generator is built for and how wide it is; validated, JSON round trip with a version stamp."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from .engine.targets import Target
from .utils.checks import check_int, check_positive_int, reject_unknown_keys

__all__ = ["CONFIG_VERSION", "DELTA_MODES", "FEATURE_NORMS", "AdapterConfig", "TargetSpec"]

CONFIG_VERSION = "1.4"  # major bumps break loading; minor bumps only add fields with defaults (1.1: preprocessing,
# 1.2: feature_norm, 1.3: memory, 1.4: classifier_memory)
DELTA_MODES = ("core", "factors", "static", "none")
FEATURE_NORMS = ("none", "center")  # what a generated head scores: see heads.HeadGenerator


# A saved generator stores its targets as the engine's Target (one type; the old name stays for existing code).
TargetSpec = Target


@dataclass
class AdapterConfig:
    """Everything that defines a LanguageConditionedAdapter.

    Attributes:
        backbone: timm model name the generator writes deltas and heads for.
        backbone_weights: weight source for ``create_backbone()`` ("random", "timm", "packaged:...", a .safetensors).
        backbone_kwargs: extra ``timm.create_model`` arguments (e.g. img_size).
        text_encoder: transformers model id or folder, or "packaged:all-MiniLM-L6-v2".
        targets: "auto", a regex or a list of module names (see ``lang2net.inject``).
        rank: rank of the generated deltas (8: LoRA's usual trade-off between capacity and size).
        delta_mode: "core" (learned per-target bases, generated r x r core: few parameters), "factors" (A and B
            generated directly from the task), "static" (deltas learned once, the same for every task: no text in
            them; a control) or "none" (head only: the N3 baseline without deltas).
        delta_norm: layer-normalise each target query's state before the layer that writes its deltas, and bound a
            "core" by its norm instead of entry by entry (``generator.DeltaGenerator``). Without it, a delta run on
            the emoji head with memories drove the state's norm to about 250, every core entry's tanh saturated at
            its bound, and the deltas no longer depended on the task ("full" was "static" in all but name). False
            keeps the behaviour of generators saved before it existed.
        d_model: width of the set encoder and of the target queries.
        n_layers: set-encoder layers (self-attention over classes, no positions: permutation equivariant); 0: per-class
            codes, each class encoded on its own.
        n_heads: attention heads in the set encoder and the target cross-attention.
        dropout: dropout inside the generator during meta-training.
        feature_norm: what the generated head scores: "none" (the raw pooled features) or "center" (features centred
            and rescaled by statistics of the training images, recorded when training starts and folded into the
            emitted weight and bias, so a generated head stays an exact linear layer on raw features).
        memory: the head also recalls what the training classes look like: their mean feature directions, keyed by
            their text embeddings, mixed into each described class by text similarity (``heads.HeadGenerator``;
            needs ``feature_norm="center"``). Filled when training starts; the emitted head is still one linear layer.
        memory_size: prototypes in the memory, filled when training builds it (0 before).
        classifier_memory: the head also recalls the backbone's own pretrained classifier (e.g. ImageNet's 1000
            classes): each row's direction keyed by the text embedding of its label description, mixed in like the
            memory (needs ``feature_norm="center"`` and a backbone with a 1000-class ImageNet classifier). Filled when
            training starts.
        classifier_memory_size: rows in that memory, filled when training builds it (0 before).
        text_dim, feature_dim, target_specs: filled from the text encoder and backbone when the adapter is built,
            so a saved generator can be rebuilt without loading either.
        preprocessing: how images are prepared for the backbone: ``input_size`` (3, H, W) the generator was trained
            at, ``mean``, ``std``, ``interpolation`` (timm's data config keys). Given keys override the backbone's
            defaults when the adapter is built; tasks inherit it and every image consumer reads it.
    """

    backbone: str = "tf_efficientnet_lite0"
    backbone_weights: str = "packaged:efficientnet_lite0"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    text_encoder: str = "packaged:all-MiniLM-L6-v2"
    targets: str | list[str] = "auto"
    rank: int = 8
    delta_mode: str = "core"
    delta_norm: bool = False
    d_model: int = 256
    n_layers: int = 2
    n_heads: int = 4
    dropout: float = 0.0
    feature_norm: str = "none"
    memory: bool = False
    memory_size: int = 0
    classifier_memory: bool = False
    classifier_memory_size: int = 0
    text_dim: int | None = None
    feature_dim: int | None = None
    target_specs: list[TargetSpec] | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    version: str = CONFIG_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, str) or not self.backbone:
            raise ValueError(f"backbone must be a timm model name, got {self.backbone!r}")
        if not isinstance(self.backbone_weights, str) or not self.backbone_weights:
            raise ValueError(f"backbone_weights must be a weight source name or path, got {self.backbone_weights!r}")
        if not isinstance(self.backbone_kwargs, dict) or not all(isinstance(k, str) for k in self.backbone_kwargs):
            raise ValueError(
                f"backbone_kwargs must be a dict of timm.create_model arguments, got {self.backbone_kwargs!r}"
            )
        if not isinstance(self.text_encoder, str) or not self.text_encoder:
            raise ValueError(f"text_encoder must be a model id or folder, got {self.text_encoder!r}")
        if self.delta_mode not in DELTA_MODES:
            raise ValueError(f"delta_mode must be one of {DELTA_MODES}, got {self.delta_mode!r}")
        if self.feature_norm not in FEATURE_NORMS:
            raise ValueError(f"feature_norm must be one of {FEATURE_NORMS}, got {self.feature_norm!r}")
        if not isinstance(self.delta_norm, bool):
            raise ValueError(f"delta_norm must be true or false, got {self.delta_norm!r}")
        for flag in ("memory", "classifier_memory"):
            on, size = getattr(self, flag), getattr(self, f"{flag}_size")
            if not isinstance(on, bool):
                raise ValueError(f"{flag} must be true or false, got {on!r}")
            if on and self.feature_norm != "center":
                raise ValueError(
                    f"{flag}=True needs feature_norm='center' (the prototypes live in the centred feature space), got "
                    f"feature_norm={self.feature_norm!r}"
                )
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise ValueError(f"{flag}_size must be an int >= 0, got {size!r}")
            if size and not on:
                raise ValueError(f"{flag}_size={size} without {flag}=True")
        for name in ("rank", "d_model", "n_heads"):
            check_positive_int(name, getattr(self, name))
        check_int("n_layers", self.n_layers, minimum=0)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if (
            isinstance(self.dropout, bool)
            or not isinstance(self.dropout, (int, float))
            or not 0.0 <= self.dropout < 1.0
        ):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not (
            isinstance(self.targets, str)
            or (isinstance(self.targets, list) and all(isinstance(t, str) for t in self.targets))
        ):
            raise ValueError(f"targets must be 'auto', a regex or a list of names, got {self.targets!r}")
        for name in ("text_dim", "feature_dim"):
            value = getattr(self, name)
            if value is not None:
                check_positive_int(name, value)
        if self.target_specs is not None:
            if not isinstance(self.target_specs, (list, tuple)):
                raise ValueError(f"target_specs must be a list of target specs, got {self.target_specs!r}")
            self.target_specs = [t if isinstance(t, Target) else Target.from_dict(t) for t in self.target_specs]
        if not isinstance(self.preprocessing, dict):
            raise ValueError(f"preprocessing must be a dict of timm data-config keys, got {self.preprocessing!r}")
        size = self.preprocessing.get("input_size")
        if size is not None and (
            not isinstance(size, (list, tuple)) or len(size) != 3 or not all(isinstance(v, int) and v > 0 for v in size)
        ):
            raise ValueError(f"preprocessing['input_size'] must be (channels, height, width), got {size!r}")
        major = str(self.version).split(".")[0]
        if major != CONFIG_VERSION.split(".")[0]:
            raise ValueError(
                f"config version {self.version!r} is not readable by this lang2net (reads {CONFIG_VERSION.split('.')[0]}.x); "
                "upgrade lang2net to load it"
            )

    @property
    def resolved(self) -> bool:
        """True once text_dim, feature_dim and target_specs are known (the generator can be built)."""
        return self.text_dim is not None and self.feature_dim is not None and self.target_specs is not None

    # JSON round trip

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if self.target_specs is not None:
            out["target_specs"] = [t.to_dict() for t in self.target_specs]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterConfig:
        if not isinstance(data, dict):
            raise TypeError(f"an AdapterConfig is read from a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        reject_unknown_keys(data, known, "unknown AdapterConfig keys {unknown}; valid keys: {known}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, path_or_text: str | os.PathLike) -> AdapterConfig:
        text = str(path_or_text)
        if os.path.isfile(text):
            with open(text, encoding="utf-8") as f:
                text = f.read()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"AdapterConfig JSON does not parse: {e}") from None
        return cls.from_dict(data)
