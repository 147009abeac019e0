"""lang2net: natural-language class descriptions to task-specific networks for any timm backbone."""

from .injection import Injection, Strategy, inject
from .lowrank import LowRankDelta, delta_weight, fold_weight
from .targets import FAMILY_PRESETS, Target, resolve_targets

__version__ = "0.1.0"

__all__ = [
    "FAMILY_PRESETS",
    "Injection",
    "LowRankDelta",
    "Strategy",
    "Target",
    "__version__",
    "delta_weight",
    "fold_weight",
    "inject",
    "resolve_targets",
]
