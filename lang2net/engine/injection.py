"""The hook engine: low-rank deltas into any timm backbone, applied per call, merged, unmerged and removed exactly.

Each target layer gets a forward hook (the instance's ``forward`` is wrapped; the class, the parameters and the
``state_dict`` are untouched). Outside ``Injection.apply`` the hook calls the layer's own forward. Inside, it reads the
deltas of the current call from a ``ContextVar``, so two threads applying different deltas to one backbone each see
their own, and it runs one of two exact strategies:

- activation space: ``y = layer(x) + scale * (x @ A^T) @ B^T`` (differentiable, one delta per sample possible);
- weight space: ``y = layer_fn(x, W + scale * B @ A)`` with the folded weight living only for that call.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import threading
import types
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..utils.checks import check_positive_int
from .hooks import CallState, HookedForward
from .lowrank import LowRankDelta, fold_weight
from .targets import Target, _close_names, format_table, resolve_targets

__all__ = ["Injection", "Strategy", "inject", "injection_of", "plain_copy", "shared_injection"]

logger = logging.getLogger(__name__)

Strategy = Literal["auto", "activation", "weight"]
_STRATEGIES = ("auto", "activation", "weight")

_BYPASSED = "bypassed: the model reads its weight without calling the module (e.g. F.linear(x, self.qkv.weight, ...))"
_BATCH_FREE = "its input does not carry the batch axis (shared by all samples), so it cannot take per-sample deltas"

# models currently injected: a second injection on the same model would stack hooks in an order nobody chose
_INJECTED: weakref.WeakKeyDictionary[nn.Module, Injection] = weakref.WeakKeyDictionary()
# guards check-then-register on _INJECTED: two threads binding tasks to a fresh backbone must not both inject it
_INJECTED_LOCK = threading.RLock()


# helpers


def _example_input(model: nn.Module, example: Tensor | Sequence[int] | None) -> Tensor:
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    if isinstance(example, Tensor):
        return example
    if example is None:
        cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
        example = cfg.get("input_size") if isinstance(cfg, dict) else None
        img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)  # ViTs built with img_size=...
        if example is not None and isinstance(img_size, (tuple, list)) and len(img_size) == 2:
            example = (example[0], *img_size)
        if example is None:
            raise ValueError(
                f"cannot probe {type(model).__name__}: it has no pretrained_cfg['input_size']; pass probe_input= "
                "(a tensor or a (C, H, W) shape), or probe=False to skip proving that every target runs"
            )
    gen = torch.Generator().manual_seed(0)
    return torch.randn(2, *example, generator=gen).to(device=device, dtype=dtype)


# classes


class Injection:
    """Low-rank deltas injected into a model's target layers. Create with :func:`inject`.

    Attributes:
        model: the injected model (never copied).
        targets: target name -> :class:`Target` (kind and shapes), in model order.
        excluded: module name -> why it was left out (classifier, grouped conv, bypassed by the model, ...).
        rank: the rank deltas must have, or None for any.
        preset: the family preset used by ``targets="auto"``, or None.
    """

    def __init__(
        self,
        model: nn.Module,
        targets: str | Sequence[str] = "auto",
        rank: int | None = 8,
        *,
        probe: bool = True,
        probe_input: Tensor | Sequence[int] | None = None,
        freeze: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"inject() needs an nn.Module, got {type(model).__name__}")
        check_positive_int("rank", rank, optional=True)
        already = f"{type(model).__name__} is already injected; call .remove() on that Injection first"
        if model in _INJECTED:
            raise RuntimeError(already)
        selection = resolve_targets(model, targets)
        self.model = model
        self.rank = rank
        self.preset = selection.preset
        self.targets: dict[str, Target] = dict(selection.targets)
        self.excluded: dict[str, str] = dict(selection.excluded)
        self._var: ContextVar[CallState | None] = ContextVar(f"lang2net_injection_{id(self)}", default=None)
        self._modules: dict[str, nn.Module] = {}
        self._saved_forward: dict[str, Any] = {}
        self._merged: dict[str, Tensor] = {}
        self._merged_deltas: dict[str, LowRankDelta] = {}
        self._requires_grad: dict[str, bool] = {}
        self._removed = False
        self._active = 0  # apply() blocks running now, in any thread: remove/merge/unmerge wait for none
        self._active_lock = threading.Lock()
        modules = dict(model.named_modules())
        with _INJECTED_LOCK:  # check again and register in one step (another thread may have injected meanwhile)
            if model in _INJECTED:
                raise RuntimeError(already)
            _INJECTED[model] = self
        try:
            for name in self.targets:
                self._install(name, modules[name])
            if freeze:
                self._requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
                model.requires_grad_(False)
            if probe:
                self._settle_probe(self.probe(probe_input), explicit=targets != "auto")
        except BaseException:
            self.remove()
            raise

    # hook lifecycle

    def _install(self, name: str, module: nn.Module) -> None:
        if isinstance(module.__dict__.get("forward"), HookedForward):
            raise RuntimeError(
                f"module '{name}' already carries a lang2net hook from another Injection; remove it first"
            )
        self._saved_forward[name] = module.__dict__.get("forward")  # an instance-level forward someone else set
        module.forward = HookedForward(self._var, name, self.targets[name].kind, module, module.forward)
        self._modules[name] = module

    def _uninstall(self, name: str) -> None:
        module = self._modules.pop(name)
        saved = self._saved_forward.pop(name)
        if saved is None:
            del module.forward
        else:
            module.forward = saved

    def _check_alive(self) -> None:
        if self._removed:
            raise RuntimeError("this Injection was removed; call lang2net.inject(model, ...) again to adapt the model")

    def remove(self) -> nn.Module:
        """Remove every hook, undo any merge and restore requires_grad: the model is bit-identical to before.

        Returns:
            The original model, for chaining.
        """
        if self._removed:
            return self.model
        if self._var.get() is not None:
            raise RuntimeError("remove() inside inj.apply(...): leave the with-block first")
        self._check_idle("remove()")
        if self._merged:
            self._restore_merged()
        for name in list(self._modules):
            self._uninstall(name)
        params = dict(self.model.named_parameters())
        for name, flag in self._requires_grad.items():
            params[name].requires_grad_(flag)
        self._removed = True
        with _INJECTED_LOCK:
            if _INJECTED.get(self.model) is self:  # never unregister another Injection of the same model
                del _INJECTED[self.model]
        return self.model

    # probing

    def probe(self, example: Tensor | Sequence[int] | None = None) -> dict[str, str]:
        """Run small forwards (batch 1 and 2) and return the targets that cannot work as hooks, with the reason.

        Two kinds are found: layers the model bypasses (it reads ``module.weight`` without calling the module, as in
        ``F.linear(x, self.qkv.weight, ...)``; a hook there would silently do nothing) and layers whose input does not
        carry the batch (its leading axis does not grow with the batch, e.g. an MLP over relative positions), which
        cannot take one delta per sample.
        """
        self._check_alive()
        x = _example_input(self.model, example)
        x = x if x.shape[0] >= 2 else torch.cat([x, x])
        leading = [self._probe_once(x[:1]), self._probe_once(x[:2])]
        problems = {}
        for name in self.targets:
            if name not in leading[1]:
                problems[name] = _BYPASSED
            elif leading[1][name] != 2 * leading[0].get(name, -1):
                problems[name] = _BATCH_FREE
        return problems

    def _probe_once(self, x: Tensor) -> dict[str, int]:
        state = CallState({}, weight_space=False, fired={})
        was_training = self.model.training
        token = self._var.set(state)
        try:
            self.model.eval()
            with torch.no_grad():
                self.model(x)
        finally:
            self._var.reset(token)
            self.model.train(was_training)
        return state.fired

    def _settle_probe(self, problems: dict[str, str], explicit: bool) -> None:
        bypassed = [n for n, why in problems.items() if why == _BYPASSED]
        if bypassed and explicit:
            raise ValueError(
                f"targets {bypassed} never run as modules in {type(self.model).__name__}: {_BYPASSED}; a hook there would do nothing"
            )
        if explicit:  # named on purpose: keep them for shared deltas, refuse per-sample ones at apply()
            for name in problems:
                self.targets[name] = dataclasses.replace(self.targets[name], per_sample=False)
            return
        if problems:
            warnings.warn(
                f"leaving out {len(problems)} layers of {type(self.model).__name__}: "
                + "; ".join(f"{n}: {why}" for n, why in list(problems.items())[:4])
                + (" ..." if len(problems) > 4 else ""),
                stacklevel=4,
            )
        for name, why in problems.items():
            self._uninstall(name)
            del self.targets[name]
            self.excluded[name] = why
        if not self.targets:
            raise ValueError(f"no target of {type(self.model).__name__} can take deltas: {problems}")

    # deltas

    def _validate(self, deltas: Mapping[str, LowRankDelta]) -> int | None:
        """Check names, shapes, devices and the per-sample batch; return the per-sample batch size (None if shared)."""
        if not isinstance(deltas, Mapping):
            raise TypeError(f"deltas must be a mapping of target name -> LowRankDelta, got {type(deltas).__name__}")
        batch = None
        for name, delta in deltas.items():
            target = self.targets.get(name)
            if target is None:
                raise ValueError(
                    f"{name!r} is not a target of this injection; close targets: {_close_names(str(name), list(self.targets))}"
                )
            target.check(delta, self.rank)
            weight = self._modules[name].weight
            if delta.A.device != weight.device:
                raise ValueError(
                    f"delta for target '{name}' is on {delta.A.device}, the layer's weight on {weight.device}"
                )
            if delta.batched:
                if not target.per_sample:
                    raise ValueError(f"target '{name}': {_BATCH_FREE}; give it a shared delta")
                if batch is not None and delta.batch_size != batch:
                    raise ValueError(
                        f"per-sample deltas disagree on the batch: '{name}' has {delta.batch_size}, others {batch}"
                    )
                batch = delta.batch_size
        return batch

    def _resolve_strategy(self, deltas: Mapping[str, LowRankDelta], strategy: str, batch: int | None) -> bool:
        """True for weight space. Auto: activation space for per-sample deltas and for training, else weight space."""
        if strategy not in _STRATEGIES:
            raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")
        if strategy == "weight" and batch is not None:
            raise ValueError("strategy='weight' cannot run per-sample deltas (one weight per call); use 'activation'")
        if strategy != "auto":
            return strategy == "weight"
        if batch is not None:
            return False
        training = torch.is_grad_enabled() and any(d.A.requires_grad or d.B.requires_grad for d in deltas.values())
        return not training

    @contextlib.contextmanager
    def apply(self, deltas: Mapping[str, LowRankDelta], strategy: Strategy = "auto") -> Iterator[Injection]:
        """Run the model under ``deltas`` for the duration of the with-block (this thread / task only).

        Args:
            deltas: target name -> LowRankDelta; targets left out run unchanged. A delta with a leading batch axis
                applies one delta per sample (the input's leading axis must be a multiple of that batch).
            strategy: "activation", "weight", or "auto" (activation space when deltas are per sample or need
                gradients, weight space otherwise).
        """
        self._check_alive()
        if self._var.get() is not None:
            raise RuntimeError("nested inj.apply() on one injection: combine the deltas into one mapping instead")
        batch = self._validate(deltas)
        state = CallState(dict(deltas), weight_space=self._resolve_strategy(deltas, strategy, batch))
        token = self._var.set(state)
        with self._active_lock:
            self._active += 1
        try:
            yield self
        finally:
            with self._active_lock:
                self._active -= 1
            self._var.reset(token)

    def _check_idle(self, what: str) -> None:
        """Changing the weights or the hooks while another thread runs apply() would change that thread's results."""
        with self._active_lock:
            busy = self._active
        if busy:
            raise RuntimeError(
                f"{what} while {busy} inj.apply() call(s) run in other threads would change their results; "
                "call it when they are done"
            )

    def merge(self, deltas: Mapping[str, LowRankDelta]) -> None:
        """Fold shared deltas into the weights in place; :meth:`unmerge` or :meth:`remove` restore them bit for bit.

        While merged, ``apply`` adds its deltas on top of the merged weights (applying the merged deltas again would
        count them twice).

        All folded weights are computed and checked for non-finite values before any weight is written.
        """
        self._check_alive()
        self._check_idle("merge()")
        if self._merged:
            raise RuntimeError("deltas are already merged; unmerge() before merging others")
        if self._validate(deltas) is not None:
            raise ValueError("merge() needs shared deltas; per-sample deltas cannot be folded into one weight")
        folded: dict[str, Tensor] = {}
        with torch.no_grad():
            for name, delta in deltas.items():
                w = fold_weight(self._modules[name].weight, delta.detach())
                if not torch.isfinite(w).all():
                    raise ValueError(f"merging the delta for '{name}' gives non-finite weights; nothing was merged")
                folded[name] = w
            for name, w in folded.items():
                weight = self._modules[name].weight
                self._merged[name] = weight.detach().clone()
                weight.copy_(w)
        self._merged_deltas = dict(deltas)

    def unmerge(self, deltas: Mapping[str, LowRankDelta] | None = None) -> None:
        """Restore the weights saved by :meth:`merge` (bit for bit). If ``deltas`` is given it must be the merged set."""
        self._check_alive()
        self._check_idle("unmerge()")
        if not self._merged:
            raise RuntimeError("nothing is merged")
        if deltas is not None and (
            set(deltas) != set(self._merged_deltas) or any(deltas[n] is not d for n, d in self._merged_deltas.items())
        ):
            raise ValueError("unmerge() got deltas other than the merged ones; call unmerge() with no argument")
        self._restore_merged()

    def _restore_merged(self) -> None:
        with torch.no_grad():
            for name, original in self._merged.items():
                self._modules[name].weight.copy_(original)
        self._merged, self._merged_deltas = {}, {}

    @property
    def merged(self) -> bool:
        return bool(self._merged)

    def init_deltas(
        self,
        mode: Literal["zeros", "random"] = "zeros",
        *,
        batch_size: int | None = None,
        std: float = 0.1,
        seed: int | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> dict[str, LowRankDelta]:
        """Deltas of the right shapes for every target: zeros, or random (A ~ N(0, 1/fan_in), B ~ N(0, std)).

        With ``batch_size`` the deltas are per sample, except on targets whose input does not carry the batch
        (``Target.per_sample`` is False), which get one shared delta.
        """
        if self.rank is None:
            raise ValueError("init_deltas() needs a fixed rank; inject(..., rank=r)")
        if mode not in ("zeros", "random"):
            raise ValueError(f"mode must be 'zeros' or 'random', got {mode!r}")
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        out = {}
        for name, t in self.targets.items():
            lead = () if batch_size is None or not t.per_sample else (batch_size,)  # batch-free layers: shared
            weight = self._modules[name].weight
            kw = {"dtype": dtype or weight.dtype, "device": device or weight.device}
            a_shape, b_shape = (*lead, *t.a_shape(self.rank)), (*lead, *t.b_shape(self.rank))
            if mode == "zeros":
                out[name] = LowRankDelta(torch.zeros(a_shape, **kw), torch.zeros(b_shape, **kw))
                continue
            fan_in = math.prod(t.a_shape(self.rank)[1:])
            A = torch.randn(a_shape, generator=gen) / math.sqrt(fan_in)
            B = torch.randn(b_shape, generator=gen) * std
            out[name] = LowRankDelta(A.to(**kw), B.to(**kw))
        return out

    # reports

    def summary(self) -> str:
        """A table of targets (kind, weight, A and B shapes) and of the excluded modules with reasons."""
        head = f"Injection into {type(self.model).__name__}" + (f" (preset: {self.preset})" if self.preset else "")
        return head + "\n" + format_table(self.targets, self.excluded, self.rank)

    def __repr__(self) -> str:
        state = "removed" if self._removed else ("merged" if self._merged else "active")
        return f"Injection({type(self.model).__name__}, {len(self.targets)} targets, rank={self.rank}, {state})"


def plain_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with no lang2net hooks, whether or not ``model`` is injected."""
    clone = copy.deepcopy(model)
    for module in clone.modules():
        forward = module.__dict__.get("forward")
        # what HookedForward.__deepcopy__ leaves: the class's own forward bound to the copy
        if (
            isinstance(forward, types.MethodType)
            and forward.__self__ is module
            and forward.__func__ is type(module).forward
        ):
            del module.forward
    return clone


def injection_of(model: nn.Module) -> Injection | None:
    """The live Injection of ``model``, or None when it has none."""
    with _INJECTED_LOCK:
        return _INJECTED.get(model)


def shared_injection(model: nn.Module, names: Sequence[str]) -> Injection:
    """The model's Injection, injecting exactly ``names`` (any rank) when it has none yet.

    Get-or-inject runs in one step under the registry lock, so threads binding tasks to one fresh backbone share one
    injection and several tasks / generators reuse one set of hooks.

    Raises:
        ValueError: naming the layers the model lacks when it has no injection yet.
    """
    with _INJECTED_LOCK:
        inj = _INJECTED.get(model)
        if inj is None:
            modules = dict(model.named_modules())
            missing = [n for n in names if n not in modules]
            if missing:
                raise ValueError(
                    f"this task/generator was made for a backbone with layers {missing[:3]}..., which "
                    f"{type(model).__name__} does not have; use the backbone named in its config"
                )
            inj = inject(model, targets=list(names), rank=None)
    return inj


def inject(
    model: nn.Module,
    targets: str | Sequence[str] = "auto",
    rank: int | None = 8,
    *,
    probe: bool = True,
    probe_input: Tensor | Sequence[int] | None = None,
    freeze: bool = True,
) -> Injection:
    """Prepare ``model`` to run under low-rank deltas.

    Args:
        model: any timm model (or nn.Module; non-timm models need ``probe_input``).
        targets: "auto" (a per-family preset, else every eligible layer outside the classifier), a regex that must
            fullmatch module names, or a list of module names / name suffixes.
        rank: the rank deltas must have (None accepts any).
        probe: run one small forward to prove each target's hook fires; bypassed layers are an error when named
            explicitly and left out with a warning under "auto".
        probe_input: the probe's input tensor or (C, H, W); defaults to ``pretrained_cfg["input_size"]``.
        freeze: set ``requires_grad=False`` on the model's parameters (restored by ``remove()``).

    Returns:
        An :class:`Injection`; use ``with inj.apply(deltas): model(x)``.
    """
    return Injection(model, targets, rank, probe=probe, probe_input=probe_input, freeze=freeze)
