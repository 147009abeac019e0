"""Shared test helpers: tiny timm models with informative random weights, and tolerance checks."""

from __future__ import annotations

import copy
import warnings

import pytest
import timm
import torch
from torch import nn

torch.set_num_threads(max(1, torch.get_num_threads()))


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give norm scales, layer scales and gains random non-trivial values.

    timm initialises many residual branches to zero (ResNet's last BN gamma, NFNet's skipinit gain, ConvNeXt/ViT layer
    scale 1e-6), which would hide a wrong delta inside the branch behind an output that does not change.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                continue
            if name.endswith(("weight", "gamma", "gain", "scale")):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.5 + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_var is not None:
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
    return model


def make_model(name: str, **kwargs) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = timm.create_model(name, pretrained=False, **kwargs)
    return randomize_(model).eval()


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str) -> None:
    """Max abs difference relative to the reference's scale: robust across models whose outputs differ in magnitude."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = expected.abs().max().item() + 1e-6
    err = (actual.float() - expected.float()).abs().max().item()
    assert err <= rel * scale, f"{what}: max abs diff {err:.3g} > {rel:g} x output scale {scale:.3g}"


TEXT_DIM = 384  # the packaged MiniLM's width: tiny adapters are built without loading a text model


def tiny_adapter(backbone: str = "test_vit", seed: int = 0, *, text_encoder=None, trained: bool = True, **config):
    """A small generator on a timm test model (random backbone weights); ``config``: AdapterConfig fields.

    With ``trained`` its zero-initialised delta outputs are moved away from zero, as meta-training would, so that
    tests of the deltas are not vacuous.
    """
    from lang2net import AdapterConfig, LanguageConditionedAdapter

    torch.manual_seed(seed)
    cfg = AdapterConfig(backbone=backbone, backbone_weights="random", text_dim=TEXT_DIM, **config)
    adapter = LanguageConditionedAdapter(cfg, text_encoder=text_encoder)
    if trained:
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, p in adapter.generator.named_parameters():
                if name.startswith(("deltas.core", "deltas.heads")):
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return adapter.eval()


@pytest.fixture(name="tiny_adapter")
def tiny_adapter_fixture():
    """The :func:`tiny_adapter` factory, for tests that take it as a fixture."""
    return tiny_adapter


@pytest.fixture
def copy_model():
    return copy.deepcopy
