"""Image augmentation for meta-training on few images per class: crops, rotations, scale, colour jitter, tints.

All in torch on a uint8 batch, drawn from an explicit ``torch.Generator`` so that a resumed run draws the same
augmentations as an uninterrupted one. One ``strength`` in [0, 1] scales every transform together.
Axis legend: n images, h/w height/width, c channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor

from ..utils.checks import check_fraction

__all__ = ["augment_batch"]

# the largest change of each kind, reached at strength 1
MAX_ROTATION_DEG = 20.0
MAX_SCALE = 0.25  # zoom in or out by up to 25 %
MAX_SHIFT = 0.12  # fraction of the side
MAX_JITTER = 0.35  # brightness / contrast / saturation factors in [1 - j, 1 + j]
MAX_TINT = 0.3  # a random colour mixed into the (white) background, up to 30 %


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _affine(x: Tensor, strength: float, gen: torch.Generator, fill: Tensor) -> Tensor:
    """Random rotation, scale and shift of x (n, c, h, w) in [0, 1]; uncovered pixels take ``fill`` (n, c)."""
    n = x.shape[0]
    angle = _uniform(n, -1, 1, gen) * math.radians(MAX_ROTATION_DEG) * strength
    scale = 1 + _uniform(n, -1, 1, gen) * MAX_SCALE * strength
    shift = _uniform(2 * n, -1, 1, gen).view(n, 2) * 2 * MAX_SHIFT * strength
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (n, h, w, 2)
    ones = torch.ones_like(x[:, :1])
    warped = F.grid_sample(torch.cat([x, ones], 1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    image, cover = warped[:, :-1], warped[:, -1:]  # cover: 1 inside the source image, 0 outside
    return image + (1 - cover) * fill[:, :, None, None]


def _jitter(x: Tensor, strength: float, gen: torch.Generator) -> Tensor:
    """Brightness, contrast and saturation factors drawn around 1 (x (n, 3, h, w) in [0, 1])."""
    n, j = x.shape[0], MAX_JITTER * strength
    brightness, contrast, saturation = (_uniform(n, 1 - j, 1 + j, gen)[:, None, None, None] for _ in range(3))
    x = x * brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean
    grey = x.mean(dim=1, keepdim=True)
    return ((x - grey) * saturation + grey).clamp(0, 1)


def augment_batch(images: Tensor, strength: float, gen: torch.Generator) -> Tensor:
    """Augmented copies of a uint8 batch, same shape and dtype.

    Args:
        images: uint8 (n, h, w) grey or (n, h, w, 3) RGB.
        strength: 0 returns the images unchanged; 1 applies the largest transforms (see the module constants).
        gen: the generator every random draw comes from.

    Returns:
        uint8, the shape of ``images``.
    """
    check_fraction("strength", strength, high_open=False)
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim not in (3, 4):
        raise ValueError(f"images must be a uint8 (n, h, w[, 3]) tensor, got {getattr(images, 'shape', images)}")
    if strength == 0 or len(images) == 0:
        return images
    grey = images.ndim == 3
    x = rearrange(images, "n h w -> n 1 h w" if grey else "n h w c -> n c h w").float() / 255
    c = x.shape[1]
    tint = _uniform(x.shape[0] * c, 1 - MAX_TINT * strength, 1.0, gen).view(-1, c)  # background colour (n, c)
    # a background tint: bright pixels (the white ground of icons) move towards the tint colour, dark ones barely
    x = x * (1 - x * (1 - tint[:, :, None, None]))
    x = _affine(x, strength, gen, fill=tint)
    if c == 3:
        x = _jitter(x, strength, gen)
    else:
        x = _jitter(repeat(x, "n 1 h w -> n 3 h w"), strength, gen).mean(1, keepdim=True)
    out = (x * 255).round().clamp(0, 255).to(torch.uint8)
    return rearrange(out, "n 1 h w -> n h w" if grey else "n c h w -> n h w c")
