"""TaskData: what a generated classifier is, as plain data (names, descriptions, tensors); what task folders hold."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..engine.lowrank import LowRankDelta
from ..engine.targets import Target

__all__ = ["TaskData", "first_non_finite"]


def first_non_finite(deltas: dict[str, LowRankDelta], head_weight: Tensor, head_bias: Tensor) -> str | None:
    """The first of the head and the deltas that holds inf or nan, by name; None when all are finite."""
    if not torch.isfinite(head_weight).all() or not torch.isfinite(head_bias).all():
        return "the head"
    return next((f"the delta for '{n}'" for n, d in deltas.items() if not d.is_finite()), None)


@dataclass(eq=False)
class TaskData:
    """A generated classifier as data: class names and descriptions, backbone deltas and a linear head.

    Attributes:
        class_names: the classes, in logit order.
        descriptions: class -> the descriptions it was generated from.
        deltas: target name -> shared LowRankDelta.
        head_weight: (c, f) head weights in the backbone's pooled-feature space.
        head_bias: (c,).
        backbone: the timm model name the task was made for.
        target_specs: the adapted layers with their shapes (checked when the task is bound or merged).
        generator: where the generator came from (a folder, a Hub id, or None).
        backbone_weights: the weight source of the backbone it was made for ("packaged:...", "timm", ...).
        preprocessing: how images are prepared for it (input size, channels, mean/std), inherited from the generator;
            empty for tasks saved before it was recorded.
    """

    class_names: list[str]
    descriptions: dict[str, list[str]]
    deltas: dict[str, LowRankDelta]
    head_weight: Tensor
    head_bias: Tensor
    backbone: str
    target_specs: list[Target] = field(default_factory=list)
    generator: str | None = None
    backbone_weights: str | None = None
    preprocessing: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        c = len(self.class_names)
        if self.head_weight.ndim != 2 or self.head_weight.shape[0] != c or self.head_bias.shape != (c,):
            raise ValueError(
                f"head must be ({c}, f) and ({c},) for {c} classes, got {tuple(self.head_weight.shape)} and "
                f"{tuple(self.head_bias.shape)}"
            )
        if any(d.batched for d in self.deltas.values()):
            raise ValueError("a task holds shared deltas; select() one task of a batched generation")
        if not self.head_weight.is_floating_point() or not self.head_bias.is_floating_point():
            raise TypeError(f"head must be floating-point, got {self.head_weight.dtype} and {self.head_bias.dtype}")
        bad = first_non_finite(self.deltas, self.head_weight, self.head_bias)
        if bad:
            raise ValueError(f"non-finite values (inf/nan) in {bad}: such a task would poison any model it runs in")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def feature_dim(self) -> int:
        return int(self.head_weight.shape[1])

    def to(self, device: torch.device | str):
        """The same task with its tensors on ``device`` (same class)."""
        return dataclasses.replace(
            self,
            class_names=list(self.class_names),
            descriptions=dict(self.descriptions),
            deltas={n: d.to(device) for n, d in self.deltas.items()},
            head_weight=self.head_weight.to(device),
            head_bias=self.head_bias.to(device),
            target_specs=list(self.target_specs),
            preprocessing=dict(self.preprocessing),
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.num_classes} classes, {len(self.deltas)} deltas, backbone={self.backbone!r})"
        )
