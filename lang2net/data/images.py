"""Any image a user has (a path, a PIL image, a uint8 array or tensor with 1-4 channels) -> backbone input.

One path for every consumer of images (predict, explain, ``TaskClassifier.predict``, image folders): each image is made
RGB (transparent pixels composited on white, as the emoji training images are), centre-cropped to a square, resized to
the generator's recorded input size and normalised with the backbone's mean and std (``to_backbone_input``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image, ImageOps

from ..utils.checks import check_int
from .transforms import to_backbone_input

__all__ = ["MAX_PIXELS", "image_list", "open_image", "prepare_images", "square_resize", "to_uint8_rgb"]

MAX_PIXELS = 64_000_000  # refuse larger images (e.g. a 12000x12000 JPEG would take ~430 MB decoded) with one line


def _on_white(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def open_image(
    path: str | os.PathLike[str], size_hint: int | None = None, *, max_pixels: int | None = None
) -> np.ndarray:
    """Read one image file as uint8 ``(H, W, 3)`` RGB (EXIF orientation applied, transparency on white).

    Args:
        size_hint: the side the image will be resized to: a JPEG is then decoded at a reduced scale (never below
            twice the hint), not at full size. The image is not resized here (see :func:`square_resize`).
        max_pixels: larger images are refused from their header, before decoding (default :data:`MAX_PIXELS`).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable image, or has more than ``max_pixels`` pixels.
    """
    check_int("size_hint", size_hint, optional=True)
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the pixel limit below says it in one line
        try:
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ValueError(
                        f"image {path} is {width}x{height} = {width * height:,} pixels, over the limit of "
                        f"{max_pixels:,}; shrink it first"
                    )
                if size_hint is not None:
                    image.draft("RGB", (2 * size_hint, 2 * size_hint))
                return np.array(_on_white(ImageOps.exif_transpose(image)), dtype=np.uint8)
        except (OSError, SyntaxError, Image.DecompressionBombError) as e:
            raise ValueError(f"cannot read image {path}: {e}") from None


def to_uint8_rgb(image: Any, size_hint: int | None = None) -> torch.Tensor:
    """One image -> uint8 ``(H, W, 3)``: a path (read by :func:`open_image` with ``size_hint``), a PIL image, or a
    uint8 array/tensor ``(H, W)`` or ``(H, W, C)`` with C in 1-4 (grey is repeated, grey+alpha and RGBA are
    composited on white)."""
    if isinstance(image, (str, os.PathLike)):
        return torch.from_numpy(open_image(image, size_hint))
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.asarray(_on_white(ImageOps.exif_transpose(image)), dtype=np.uint8).copy())
    if isinstance(image, np.ndarray):  # a read-only array (e.g. a memory-mapped or library-owned one) is copied
        image = torch.from_numpy(np.ascontiguousarray(image) if image.flags.writeable else np.array(image))
    if not isinstance(image, torch.Tensor):
        raise TypeError(
            f"an image must be a path, a PIL image, or a uint8 numpy array / tensor, got {type(image).__name__}"
        )
    if image.dtype == torch.bool:  # a binary mask or silhouette: white where True
        image = image.to(torch.uint8) * 255
    if image.dtype != torch.uint8:
        raise ValueError(
            f"image arrays must be uint8 (0..255) or bool, got {image.dtype}; prepared float input goes to the model"
        )
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or not 1 <= image.shape[-1] <= 4 or 0 in image.shape:
        raise ValueError(f"an image array must be (H, W) or (H, W, C) with C in 1..4, got shape {tuple(image.shape)}")
    channels = image.shape[-1]
    if channels in (2, 4):  # composite the colour on white using the alpha channel
        colour, alpha = image[..., :-1].float(), image[..., -1:].float() / 255.0
        image = (colour * alpha + 255.0 * (1.0 - alpha)).round().to(torch.uint8)
    return image.expand(-1, -1, 3).contiguous() if image.shape[-1] == 1 else image


def _square(image: torch.Tensor) -> torch.Tensor:
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[top : top + side, left : left + side]


def square_resize(image: Any, size: int) -> torch.Tensor:
    """One image (anything :func:`to_uint8_rgb` takes) -> uint8 ``(size, size, 3)``: the centred square, resized
    bilinearly (antialiased when shrinking), the same crop and resampling :func:`prepare_images` applies."""
    check_int("size", size)
    square = _square(to_uint8_rgb(image, size))
    if square.shape[0] == size:
        return square.contiguous()
    x = rearrange(square, "h w c -> 1 c h w").float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return rearrange(x, "1 c h w -> h w c").round().clamp(0, 255).to(torch.uint8)


def image_list(images: Any) -> list[Any]:
    """One image or many -> a list of single images: a path, PIL image, ``(H, W)`` or ``(H, W, C<=4)`` array is one
    image; a ``(N, H, W, C)`` or ``(N, H, W)`` batch (W > 4) and any other iterable are many."""
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    if isinstance(images, (torch.Tensor, np.ndarray)):
        many = images.ndim == 4 or (images.ndim == 3 and images.shape[-1] > 4)
        return list(images) if many else [images]
    if isinstance(images, Iterable):
        return list(images)
    raise TypeError(f"images must be a path, PIL image, array or a list of them, got {type(images).__name__}")


def prepare_images(
    images: Any, data_config: Mapping[str, Any], img_size: int | None = None, *, device: Any = None
) -> torch.Tensor:
    """Images -> float ``(N, 3, S, S)`` backbone input.

    Args:
        images: one image or an iterable of them (paths, PIL images, uint8 arrays/tensors, see :func:`to_uint8_rgb`),
            or a uint8 batch ``(N, H, W)`` / ``(N, H, W, C)``. A float tensor ``(N, 3, H, W)`` is taken as already
            prepared and returned unchanged.
        data_config: the backbone's data config with the generator's preprocessing (``backbones.data_config``):
            mean, std and ``input_size``.
        img_size: output side; None: ``data_config["input_size"]``.
        device: where the result goes (default CPU).
    """
    if isinstance(images, torch.Tensor) and images.is_floating_point():
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"a float image tensor must be prepared input (N, 3, H, W), got {tuple(images.shape)}")
        return images if device is None else images.to(device)
    batch = image_list(images)
    if not batch:
        raise ValueError("no images given")
    size = img_size if img_size is not None else int(data_config["input_size"][-1])
    out = [to_backbone_input(_square(to_uint8_rgb(i, size))[None], data_config, size) for i in batch]
    x = torch.cat(out)
    return x if device is None else x.to(device)
