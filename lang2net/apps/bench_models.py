"""The models the benchmark times: randomly initialised timm models with their gains re-drawn."""

from __future__ import annotations

import importlib.metadata
import platform
from typing import Any

import timm
import timm.data
import torch
from torch import nn

from .. import __version__

DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

__all__ = ["create_model", "environment", "resolve_device", "resolve_dtype"]


def _randomize_gains(model: nn.Module) -> None:
    """Re-draw 1-d parameters (norm scales and gains in [0.5, 1), small biases); timing does not depend on them.

    timm zero-initialises some residual branches (ResNet's last BN gamma, layer scale 1e-6, NFNet's skipinit gain),
    which would hide the deltas inside them from the output and make the agreement check vacuous.
    """
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim <= 1:
                gain = name.endswith(("weight", "gamma", "gain", "scale"))
                p.copy_(
                    torch.rand(p.shape, generator=gen) / 2 + 0.5 if gain else torch.randn(p.shape, generator=gen) / 20
                )


def create_model(name: str, img_size: int | None) -> tuple[nn.Module, tuple[int, int, int]]:
    """A randomly initialised timm model (gains re-drawn) in eval mode and its (C, H, W) input size."""
    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r}")
    torch.manual_seed(0)
    try:
        model = timm.create_model(name, pretrained=False, **({} if img_size is None else {"img_size": img_size}))
    except TypeError:  # the constructor takes no img_size (CNNs): create it plain, it runs at any size
        if img_size is None:
            raise
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False)
    _randomize_gains(model)
    cfg_size = tuple(int(s) for s in timm.data.resolve_model_data_config(model)["input_size"])
    size = (cfg_size[0], img_size, img_size) if img_size is not None else cfg_size
    return model.eval(), size


def environment(device: torch.device) -> dict[str, Any]:
    name = f"{platform.processor() or platform.machine() or 'cpu'} ({torch.get_num_threads()} threads)"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else name
    versions = {"torch": torch.__version__, "timm": timm.__version__, "peft": importlib.metadata.version("peft")}
    versions |= {"lang2net": __version__, "python": platform.python_version()}
    extra = {"threads": torch.get_num_threads(), "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)}
    return {"device": str(device), "device_name": name, **versions, **extra}


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False")
    return device


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    dtype = dtype or ("bf16" if device.type == "cuda" else "fp32")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]
