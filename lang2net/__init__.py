"""lang2net: natural-language class descriptions to task-specific networks for any timm backbone.

The public names load on first use (PEP 562), so ``import lang2net`` and the command line start fast; internals stay
in their modules (``lang2net.engine``, ``lang2net.generator``, ``lang2net.io``, ...).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "AdapterConfig": "lang2net.config",
    "Injection": "lang2net.engine.injection",
    "LanguageConditionedAdapter": "lang2net.adapter",
    "LowRankDelta": "lang2net.engine.lowrank",
    "Target": "lang2net.engine.targets",
    "TaskAdaptation": "lang2net.task",
    "TaskClassifier": "lang2net.task",
    "TextEncoder": "lang2net.text",
    "create_backbone": "lang2net.backbones",
    "feature_dim": "lang2net.backbones",
    "inject": "lang2net.engine.injection",
    "mixed_task_logits": "lang2net.task",
    "pooled_features": "lang2net.backbones",
}
# names kept importable for existing code, not advertised in __all__
_COMPAT = {
    "TargetSpec": "lang2net.config",
    "PACKAGED_MINILM": "lang2net.text",
    "normalize_descriptions": "lang2net.text",
    "fold_weight": "lang2net.engine.lowrank",
    "delta_weight": "lang2net.engine.lowrank",
    "resolve_targets": "lang2net.engine.targets",
}
_SUBMODULES = {"explain", "data", "engine", "io", "config", "task", "adapter", "text", "backbones"}

__all__ = [
    "AdapterConfig",
    "Injection",
    "LanguageConditionedAdapter",
    "LowRankDelta",
    "Target",
    "TaskAdaptation",
    "TaskClassifier",
    "TextEncoder",
    "__version__",
    "create_backbone",
    "feature_dim",
    "inject",
    "mixed_task_logits",
    "pooled_features",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name) or _COMPAT.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"lang2net.{name}")
    raise AttributeError(f"module 'lang2net' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .adapter import LanguageConditionedAdapter
    from .backbones import create_backbone, feature_dim, pooled_features
    from .config import AdapterConfig
    from .engine.injection import Injection, inject
    from .engine.lowrank import LowRankDelta
    from .engine.targets import Target
    from .task import TaskAdaptation, TaskClassifier, mixed_task_logits
    from .text import TextEncoder
