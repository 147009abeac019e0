"""lang2net: natural-language class descriptions to task-specific networks for any timm backbone."""

from . import cards, explain, export, hub
from .adapter import LanguageConditionedAdapter, TaskAdaptation, TaskClassifier, mixed_task_logits
from .backbones import create_backbone, feature_dim, pooled_features
from .cards import read_metrics
from .config import AdapterConfig, TargetSpec
from .generator import DeltaGenerator, SetEncoder, TaskGenerator
from .heads import HeadGenerator
from .injection import Injection, Strategy, inject
from .lowrank import LowRankDelta, delta_weight, fold_weight
from .targets import FAMILY_PRESETS, Target, resolve_targets
from .text import PACKAGED_MINILM, TextEncoder, normalize_descriptions

__version__ = "0.1.0"

__all__ = [
    "FAMILY_PRESETS",
    "PACKAGED_MINILM",
    "AdapterConfig",
    "DeltaGenerator",
    "HeadGenerator",
    "Injection",
    "LanguageConditionedAdapter",
    "LowRankDelta",
    "SetEncoder",
    "Strategy",
    "Target",
    "TargetSpec",
    "TaskAdaptation",
    "TaskClassifier",
    "TaskGenerator",
    "TextEncoder",
    "__version__",
    "cards",
    "create_backbone",
    "delta_weight",
    "explain",
    "export",
    "feature_dim",
    "fold_weight",
    "hub",
    "inject",
    "mixed_task_logits",
    "normalize_descriptions",
    "pooled_features",
    "read_metrics",
    "resolve_targets",
]
