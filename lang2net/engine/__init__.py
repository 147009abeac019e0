"""The injection engine: low-rank delta maths, target selection and the hooks that apply deltas. No language here."""

from .injection import Injection, Strategy, inject, injection_of, plain_copy, shared_injection
from .lowrank import LowRankDelta, delta_weight, fold_weight
from .targets import FAMILY_PRESETS, Target, TargetSelection, describe_layer, resolve_targets

__all__ = [
    "FAMILY_PRESETS",
    "Injection",
    "LowRankDelta",
    "Strategy",
    "Target",
    "TargetSelection",
    "delta_weight",
    "describe_layer",
    "fold_weight",
    "inject",
    "injection_of",
    "plain_copy",
    "resolve_targets",
    "shared_injection",
]
