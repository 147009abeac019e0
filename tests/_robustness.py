"""Shared pieces of the robustness suite (tests/test_robustness_*.py): tiny generators, tasks and comparisons.

Everything here is small enough for a busy 2-core CPU: test_vit at 32 px, a 32-wide generator with one set-encoder
layer, and text embeddings given directly (no text model is loaded unless a test asks for one).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch
from conftest import TEXT_DIM, make_model
from conftest import tiny_adapter as _tiny_adapter
from torch import nn

from lang2net import LanguageConditionedAdapter, TaskAdaptation

IMG = 32  # test_vit at 32 px: 4 patches, a forward in milliseconds


def one_torch_thread() -> Iterator[None]:
    """Run a module's tests with one intra-op thread: the tensors here are tiny, and on a loaded 2-core machine two
    OpenMP threads spin against each other (500 inject/apply/remove cycles: 0.3 s on one thread, 20 s on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def tiny_adapter(backbone: str = "test_vit", seed: int = 0, text_encoder=None, **kw) -> LanguageConditionedAdapter:
    """The suite's tiny generator (conftest), at the robustness suite's smaller width."""
    kw = {"d_model": 32, "n_heads": 2, "n_layers": 1, **kw}
    return _tiny_adapter(backbone, seed, text_encoder=text_encoder, **kw)


def embeddings(c: int, seed: int = 0) -> torch.Tensor:
    e = torch.randn(c, TEXT_DIM, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(e, dim=-1)


def descriptions(c: int) -> dict[str, list[str]]:
    return {f"class {i}": [f"a thing of kind {i}"] for i in range(c)}


def make_task(adapter: LanguageConditionedAdapter, c: int = 3, seed: int = 0, names=None) -> TaskAdaptation:
    desc = {n: [f"about {n}"] for n in names} if names is not None else descriptions(c)
    return adapter.generate(desc, embeddings=embeddings(len(desc), seed))


def backbone(name: str = "test_vit") -> nn.Module:
    return make_model(name, img_size=IMG) if name.startswith("test_vit") else make_model(name)


def images(model: nn.Module, n: int = 2, seed: int = 0) -> torch.Tensor:
    shape = (3, IMG, IMG) if hasattr(model, "patch_embed") else model.pretrained_cfg["input_size"]
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def same_task(a: TaskAdaptation, b: TaskAdaptation) -> bool:
    """Bit-identical classes, heads and deltas."""
    if a.class_names != b.class_names or a.deltas.keys() != b.deltas.keys():
        return False
    if not (torch.equal(a.head_weight, b.head_weight) and torch.equal(a.head_bias, b.head_bias)):
        return False
    return all(
        torch.equal(d.A, b.deltas[n].A) and torch.equal(d.B, b.deltas[n].B) and d.scale == b.deltas[n].scale
        for n, d in a.deltas.items()
    )


def state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes): what 'left intact' is compared against."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def listing(folder: Path) -> list[str]:
    """Every entry under ``folder``, hidden ones included (temporary folders start with a dot)."""
    return sorted(os.path.relpath(os.path.join(d, n), folder) for d, ds, fs in os.walk(folder) for n in ds + fs)


def no_hooks_left(model: nn.Module) -> list[str]:
    """Modules that still carry an instance-level forward (a hook or its leftover bound method)."""
    return [name or "<root>" for name, m in model.named_modules() if "forward" in m.__dict__]
