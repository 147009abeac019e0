"""Batched uint8 images to normalised backbone input: channels, resize and timm's mean/std, all in torch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange, repeat

from ..utils.checks import check_int

__all__ = ["to_backbone_input"]


def _target_size(data_config: Mapping[str, Any], img_size: int | None) -> tuple[int, int]:
    if img_size is not None:
        check_int("img_size", img_size, optional=True)
        return img_size, img_size
    input_size = data_config.get("input_size")
    if not isinstance(input_size, (tuple, list)) or len(input_size) != 3:
        raise ValueError(f"data_config['input_size'] must be (channels, height, width), got {input_size!r}")
    return int(input_size[1]), int(input_size[2])


def _channel_stats(data_config: Mapping[str, Any], key: str) -> torch.Tensor:
    value = data_config.get(key)
    if value is None:
        raise ValueError(f"data_config has no {key!r}; pass timm.data.resolve_data_config({{}}, model=model)")
    stats = torch.as_tensor(value, dtype=torch.float32).flatten()
    if stats.numel() == 1:
        stats = stats.expand(3)
    if stats.numel() != 3:
        raise ValueError(f"data_config[{key!r}] must have 1 or 3 values, got {value!r}")
    if key == "std" and bool((stats <= 0).any()):
        raise ValueError(f"data_config['std'] must be positive, got {value!r}")
    return stats


def to_backbone_input(
    images: torch.Tensor, data_config: Mapping[str, Any], img_size: int | None = None
) -> torch.Tensor:
    """Turn a batch of uint8 images into the float input a timm backbone expects.

    Grayscale is repeated to three channels, images are resized with bilinear interpolation (antialiased when
    shrinking) and normalised with the backbone's mean and std. Runs on the images' device; no PIL.

    Args:
        images: uint8 ``(N, H, W)`` grayscale or ``(N, H, W, 3)`` RGB.
        data_config: timm's ``resolve_data_config({}, model=model)`` dict; uses ``mean``, ``std`` and, when
            ``img_size`` is None, ``input_size``.
        img_size: output side; None takes ``(H, W)`` from ``data_config["input_size"]``.

    Returns:
        float32 ``(N, 3, S, S)``.

    Raises:
        TypeError: If ``images`` is not a tensor.
        ValueError: If ``images`` has another dtype or shape, or ``data_config`` lacks a valid mean, std or size.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (0..255), got {images.dtype}")
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
        raise ValueError(f"images must be (N, H, W) grayscale or (N, H, W, 3) RGB, got shape {tuple(images.shape)}")
    if 0 in images.shape[1:]:
        raise ValueError(f"images have an empty side: {tuple(images.shape)}")
    size = _target_size(data_config, img_size)
    mean = _channel_stats(data_config, "mean").to(images.device)
    std = _channel_stats(data_config, "std").to(images.device)
    pattern = "n h w -> n 1 h w" if images.ndim == 3 else "n h w c -> n c h w"
    x = rearrange(images, pattern)
    x = x.float() / 255.0
    if tuple(x.shape[-2:]) != size:
        # resize before repeating grayscale channels: a third of the work
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    if x.shape[1] == 1:
        x = repeat(x, "n 1 h w -> n c h w", c=3)
    return (x - mean[:, None, None]) / std[:, None, None]  # (N, 3, S, S)
