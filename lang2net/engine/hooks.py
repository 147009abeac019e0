"""The hook a target runs: its own forward outside ``apply``, the call's weight- or activation-space delta inside."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .lowrank import LowRankDelta, conv2d_delta, fold_weight, linear_delta

__all__ = ["CallState", "HookedForward"]

_same = importlib.import_module("timm.layers.conv2d_same")
_padding = importlib.import_module("timm.layers.padding")


# helpers


def _conv_input(module: nn.Conv2d, x: Tensor) -> tuple[Tensor, tuple[int, int] | str]:
    """The input as the conv itself pads it, and the padding left for F.conv2d (the delta must see the same pixels)."""
    if isinstance(module, _same.Conv2dSame):
        return _padding.pad_same(x, module.kernel_size, module.stride, module.dilation), (0, 0)
    if module.padding_mode != "zeros":
        return F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode), (0, 0)
    return x, module.padding


def _forward_with_weight(module: nn.Module, kind: str, x: Tensor, weight: Tensor) -> Tensor:
    """The layer's own function with ``weight`` in place of ``module.weight``; the module is not modified."""
    if kind == "linear":
        return F.linear(x, weight, module.bias)
    if isinstance(module, _same.Conv2dSame):
        return _same.conv2d_same(x, weight, module.bias, module.stride, module.padding, module.dilation, module.groups)
    return module._conv_forward(x, weight, module.bias)


def _activation_delta(module: nn.Module, kind: str, x: Tensor, delta: LowRankDelta) -> Tensor:
    if kind == "linear":
        return linear_delta(x, delta)
    x, padding = _conv_input(module, x)
    return conv2d_delta(x, delta, module.stride, padding, module.dilation)


# classes


@dataclass(eq=False)
class CallState:
    """What one ``apply`` call (or the probe) asks the hooks to do; lives in a ContextVar, never on the model."""

    deltas: Mapping[str, LowRankDelta]
    weight_space: bool
    fired: dict[str, int] | None = None  # probe only: target name -> leading axis of its input

    def run(self, name: str, module: nn.Module, kind: str, original, args: tuple, kwargs: dict) -> Any:
        if self.fired is not None:
            x = args[0] if args else kwargs["input"]
            self.fired[name] = x.shape[0] if x.ndim else 0
        delta = self.deltas.get(name)
        if delta is None:
            return original(*args, **kwargs)
        x = args[0] if args else kwargs["input"]
        if delta.batched and x.shape[0] % delta.B.shape[0]:
            raise ValueError(
                f"target '{name}': input's leading axis {x.shape[0]} is not a multiple of the {delta.B.shape[0]} "
                "per-sample deltas (the batch must be the outer factor of any folded axis)"
            )
        if self.weight_space:
            return _forward_with_weight(module, kind, x, fold_weight(module.weight, delta))
        y = original(*args, **kwargs)
        return y + _activation_delta(module, kind, x, delta).to(y.dtype)


class HookedForward:
    """The hook on one target: the layer's own forward outside ``apply``, the call's strategy inside.

    It replaces the instance's ``forward`` attribute (the class, parameters and state_dict stay as they are). A deep
    copy of an injected model gets the layer's plain forward instead of a hook bound to the original layer.
    """

    def __init__(self, var: ContextVar, name: str, kind: str, module: nn.Module, original) -> None:
        self.var, self.name, self.kind, self.module, self.original = var, name, kind, module, original

    def __call__(self, *args, **kwargs):
        state = self.var.get()
        if state is None:
            return self.original(*args, **kwargs)
        return state.run(self.name, self.module, self.kind, self.original, args, kwargs)

    def __deepcopy__(self, memo: dict):
        clone = memo.get(id(self.module))
        if clone is None:  # copied on its own, not as part of its module
            raise TypeError("a lang2net hook cannot be copied without its module")
        return type(clone).forward.__get__(clone)
