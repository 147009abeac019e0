"""Which modules of a backbone to adapt: per-family presets, regex / list selection, eligibility and reports."""

from __future__ import annotations

import difflib
import importlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..utils.checks import check_positive_int
from .lowrank import DeltaKind, LowRankDelta

__all__ = ["FAMILY_PRESETS", "Target", "TargetSelection", "classifier_names", "describe_layer", "resolve_targets"]

# A preset is a fullmatch regex over module names, keyed by model class name (matched along the MRO, so subclasses
# such as VisionTransformerDistilled inherit their parent's preset). Families not listed fall back to every eligible
# Linear / groups=1 Conv2d outside the classifier.
# attention in/out projections and the block MLP; not the MLP that some models run on relative positions
_VIT_LIKE = r"(?:.*\.)?(?:attn\.(?:qkv|q|k|v|kv|proj)|(?<!rel_pos\.)mlp\.(?:fc1|fc2))"
FAMILY_PRESETS: dict[str, str] = {
    "VisionTransformer": _VIT_LIKE,
    "VisionTransformerRelPos": _VIT_LIKE,
    "SwinTransformer": _VIT_LIKE,
    "SwinTransformerV2": _VIT_LIKE,
    "SwinTransformerV2Cr": _VIT_LIKE,
    "Beit": _VIT_LIKE,
    "Eva": _VIT_LIKE,
    "MaxxVit": _VIT_LIKE,
    "Twins": _VIT_LIKE,
    "PyramidVisionTransformerV2": _VIT_LIKE,
    "ResNet": r"layer\d+\.\d+\.conv\d+",
    "RegNet": r"s\d+\.b\d+\.conv\d+\.conv",
    "ConvNeXt": r"stages\.\d+\.blocks\.\d+\.mlp\.fc[12]",
    "EfficientNet": r"blocks\.\d+\.\d+\.(?:conv_pw|conv_pwl|conv)",
    "MobileNetV3": r"blocks\.\d+\.\d+\.(?:conv_pw|conv_pwl|conv)",
}

# Layer types whose forward is exactly ``F.linear(x, weight, bias)`` / a zero- or 'same'-padded conv: for those, adding
# ``B @ A`` to the weight and adding ``B(A(x))`` to the output are the same function, which every strategy relies on.
_SUPPORTED_FORWARDS: dict[object, DeltaKind] = {nn.Linear.forward: "linear", nn.Conv2d.forward: "conv2d"}
# timm's dynamic 'same' padding conv (the module, not the function of the same name re-exported by timm.layers) and its
# torchscript-friendly Linear
_TIMM_SAME_CONV = importlib.import_module("timm.layers.conv2d_same")
_SUPPORTED_FORWARDS[_TIMM_SAME_CONV.Conv2dSame.forward] = "conv2d"
_SUPPORTED_FORWARDS[importlib.import_module("timm.layers").Linear.forward] = "linear"


@dataclass(frozen=True)
class Target:
    """One adapted layer: its name, kind and shapes. The one target type: the engine resolves them from a model, a
    generator config stores them (name, kind, in/out features, kernel) so a generator loads without its backbone."""

    name: str
    kind: DeltaKind
    in_features: int
    out_features: int
    kernel_size: tuple[int, int] = (1, 1)
    module_type: str = ""
    per_sample: bool = True  # False when the layer's input does not carry the batch (e.g. a position MLP)

    def __post_init__(self) -> None:
        # targets also come from saved configs: a bad one must fail here, not as a negative dimension deep in torch
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"target name must be a module name, got {self.name!r}")
        if self.kind not in ("linear", "conv2d"):
            raise ValueError(f"target '{self.name}': kind must be 'linear' or 'conv2d', got {self.kind!r}")
        check_positive_int(f"target '{self.name}' in_features", self.in_features)
        check_positive_int(f"target '{self.name}' out_features", self.out_features)
        kernel = self.kernel_size
        if not isinstance(kernel, (tuple, list)) or len(kernel) != 2:
            raise ValueError(f"target '{self.name}': kernel_size must be two positive ints, got {kernel!r}")
        for k in kernel:
            check_positive_int(f"target '{self.name}' kernel_size", k)
        object.__setattr__(self, "kernel_size", tuple(kernel))

    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.kind == "linear":
            return (self.out_features, self.in_features)
        return (self.out_features, self.in_features, *self.kernel_size)

    def a_shape(self, rank: int) -> tuple[int, ...]:
        """A's shape: (rank, in) for Linear, (rank, in, kh, kw) for Conv2d — the one place it is computed."""
        return (rank, *self.weight_shape[1:])

    def b_shape(self, rank: int) -> tuple[int, ...]:
        return (self.out_features, rank)

    @property
    def fan_in(self) -> int:
        return math.prod(self.a_shape(1))

    @property
    def role(self) -> str:
        """The layer's job inside its block, read from its name: qkv, proj, fc1, conv_pw, ..."""
        parts = [p for p in self.name.split(".") if not p.isdigit()]
        return parts[-1] if parts else self.name

    def to_dict(self) -> dict:
        """What a saved config stores (the shapes; module type and batch behaviour are found again when injected)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "in_features": self.in_features,
            "out_features": self.out_features,
            "kernel_size": list(self.kernel_size),
        }

    @classmethod
    def from_dict(cls, data: object) -> Target:
        if not isinstance(data, dict):
            raise ValueError(f"target_specs entries must be objects, got {data!r}")
        keys = {"name", "kind", "in_features", "out_features", "kernel_size"}
        if set(data) - keys or keys - {"kernel_size"} - set(data):
            raise ValueError(f"target spec {data!r} must have keys {sorted(keys)}")
        return cls(**data)

    @property
    def shape_group(self) -> tuple[str, int, int, tuple[int, int]]:
        """Layers with equal (kind, in, out, kernel) can share one generator head."""
        return (self.kind, self.in_features, self.out_features, self.kernel_size)

    def check(self, delta: LowRankDelta, rank: int | None = None) -> None:
        """Raise a ValueError naming this target and both shapes when ``delta`` does not fit it."""
        if not isinstance(delta, LowRankDelta):
            raise TypeError(f"delta for target '{self.name}' must be a LowRankDelta, got {type(delta).__name__}")
        r = delta.rank if rank is None else rank
        want_a, want_b = self.a_shape(r), self.b_shape(r)
        got_a, got_b = tuple(delta.A.shape[delta.batched :]), tuple(delta.B.shape[delta.batched :])
        if delta.kind != self.kind or got_a != want_a or got_b != want_b:
            lead = "(n, ...) " if delta.batched else ""
            raise ValueError(
                f"delta for target '{self.name}' ({self.kind} {self.weight_shape}) has A {got_a} and B {got_b} {lead}"
                f"but the target needs A {want_a} and B {want_b}"
            )


@dataclass(frozen=True)
class TargetSelection:
    """The outcome of resolving a selection: eligible targets in model order and excluded modules with reasons."""

    targets: dict[str, Target]
    excluded: dict[str, str]
    preset: str | None


# helpers


def classifier_names(model: nn.Module) -> set[str]:
    """Names of the classifier module(s), from timm's pretrained_cfg and get_classifier(), never a hard-coded name."""
    names: set[str] = set()
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    declared = cfg.get("classifier") if isinstance(cfg, dict) else None
    if isinstance(declared, str):
        names.add(declared)
    elif isinstance(declared, (list, tuple)):
        names.update(n for n in declared if isinstance(n, str))
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        try:
            head = get_classifier()
        except Exception:  # some models raise for unusual heads; the declared name still applies
            head = None
        heads = head if isinstance(head, (list, tuple)) else [head]
        by_id = {id(m): n for n, m in model.named_modules()}
        names.update(by_id[id(h)] for h in heads if isinstance(h, nn.Module) and id(h) in by_id and by_id[id(h)])
    return names


def _in_classifier(name: str, heads: set[str]) -> bool:
    return any(name == h or name.startswith(h + ".") for h in heads)


def _kind_or_reason(module: nn.Module) -> tuple[DeltaKind | None, str | None]:
    """The delta kind of an eligible layer, or why the layer cannot carry a delta."""
    kind = _SUPPORTED_FORWARDS.get(type(module).forward)
    if kind is None:
        return None, f"{type(module).__name__} has its own forward (transforms its weight or input); unsupported"
    if kind == "conv2d":
        if module.groups != 1:
            return None, f"grouped/depthwise conv (groups={module.groups}); only groups=1 convs take low-rank deltas"
        if getattr(module, "transposed", False):
            return None, "transposed conv; unsupported"
    return kind, None


def describe_layer(name: str, module: nn.Module) -> Target | None:
    """The target ``module`` would be (kind and shapes from its weight), or None when it has no 2-d / 4-d weight."""
    w = getattr(module, "weight", None)
    if not isinstance(w, torch.Tensor) or w.ndim not in (2, 4):
        return None
    kind: DeltaKind = "linear" if w.ndim == 2 else "conv2d"
    kernel = (1, 1) if w.ndim == 2 else (int(w.shape[2]), int(w.shape[3]))
    return Target(name, kind, int(w.shape[1]), int(w.shape[0]), kernel, type(module).__name__)


def _describe_target(name: str, module: nn.Module, kind: DeltaKind) -> Target:
    if kind == "linear":
        return Target(name, kind, module.in_features, module.out_features, (1, 1), type(module).__name__)
    kh, kw = module.kernel_size
    return Target(name, kind, module.in_channels, module.out_channels, (kh, kw), type(module).__name__)


def _preset_for(model: nn.Module) -> tuple[str | None, str | None]:
    for cls in type(model).__mro__:
        if cls.__name__ in FAMILY_PRESETS:
            return cls.__name__, FAMILY_PRESETS[cls.__name__]
    return None, None


def _close_names(query: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(query, names, n=5, cutoff=0.4)
    if not close:
        tails = sorted({n.rsplit(".", 1)[-1] for n in names})
        close = difflib.get_close_matches(query.rsplit(".", 1)[-1], tails, n=5, cutoff=0.3)
    return ", ".join(repr(c) for c in close) if close else "none similar"


def _select(model: nn.Module, targets: str | Sequence[str]) -> tuple[list[str], str | None]:
    """Names chosen by the user's selection (before eligibility), and the preset used for "auto"."""
    names = [n for n, _ in model.named_modules() if n]
    layer_names = [n for n, m in model.named_modules() if n and isinstance(m, (nn.Linear, nn.Conv2d))]
    if isinstance(targets, str) and targets == "auto":
        family, pattern = _preset_for(model)
        if pattern is not None:
            chosen = [n for n in layer_names if re.fullmatch(pattern, n)]
            if chosen:
                return chosen, family
        return layer_names, None
    if isinstance(targets, str):
        try:
            regex = re.compile(targets)
        except re.error as e:
            raise ValueError(f"targets regex {targets!r} does not compile: {e}") from None
        chosen = [n for n in layer_names if regex.fullmatch(n)]
        if not chosen:
            raise ValueError(
                f"targets regex {targets!r} fullmatches no Linear/Conv2d module; close module names: "
                f"{_close_names(targets, layer_names)}"
            )
        return chosen, None
    if not isinstance(targets, Sequence) or not all(isinstance(t, str) for t in targets) or not targets:
        raise TypeError(f"targets must be 'auto', a regex string or a non-empty list of names, got {targets!r}")
    chosen: list[str] = []
    for entry in targets:
        hits = [n for n in names if n == entry or n.endswith("." + entry)]
        if not hits:
            raise ValueError(
                f"target {entry!r} names no module of {type(model).__name__}; close names: {_close_names(entry, names)}"
            )
        chosen.extend(hits)
    order = {n: i for i, n in enumerate(names)}
    return sorted(set(chosen), key=order.__getitem__), None


def resolve_targets(model: nn.Module, targets: str | Sequence[str] = "auto") -> TargetSelection:
    """Resolve a selection ("auto", a fullmatch regex, or a list of names / name suffixes) to eligible targets.

    Grouped/depthwise convs, layers with their own forward and the classifier are excluded with the reason recorded.

    Raises:
        ValueError: the selection names no module, or leaves no eligible target.
    """
    chosen, preset = _select(model, targets)
    heads = classifier_names(model)
    modules = dict(model.named_modules())
    found: dict[str, Target] = {}
    excluded: dict[str, str] = {}
    for name in chosen:
        module = modules[name]
        if _in_classifier(name, heads):
            excluded[name] = "classifier (replaced by the generated head)"
            continue
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            excluded[name] = f"{type(module).__name__} is not a Linear or Conv2d layer"
            continue
        kind, reason = _kind_or_reason(module)
        if kind is None:
            excluded[name] = reason
            continue
        found[name] = _describe_target(name, module, kind)
    if not found:
        why = "; ".join(f"{n}: {r}" for n, r in list(excluded.items())[:5]) or "no Linear/Conv2d layers"
        raise ValueError(f"targets={targets!r} leaves no eligible layer in {type(model).__name__} ({why})")
    return TargetSelection(found, excluded, preset)


def format_table(targets: dict[str, Target], excluded: dict[str, str], rank: int | None) -> str:
    """A readable summary: one row per target with kind and shapes, then the excluded modules and why."""
    r = rank if rank is not None else "r"
    rows = [("target", "kind", "weight", "A", "B")]
    for t in targets.values():
        a = t.a_shape(rank) if rank is not None else ("r", *t.weight_shape[1:])
        rows.append((t.name, t.kind, str(t.weight_shape), str(tuple(a)), str((t.out_features, r))))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    n_params = sum(t.fan_in + t.out_features for t in targets.values())
    if rank is not None:
        lines.append(f"{len(targets)} targets, {n_params * rank:,} delta parameters at rank {rank}")
    if excluded:
        lines.append(f"excluded ({len(excluded)}):")
        lines.extend(f"  {name}: {reason}" for name, reason in excluded.items())
    return "\n".join(lines)
