"""A user's image folder (``root/<class>/*.png``) read with PIL into fixed-size RGB tensors, with its descriptions."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..utils.checks import check_int
from .descriptions import load_descriptions
from .images import square_resize
from .labeled import LabeledImages

__all__ = ["DEFAULT_IMG_SIZE", "DESCRIPTION_FILES", "IMAGE_EXTENSIONS", "match_descriptions", "read_image_folder"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
DEFAULT_IMG_SIZE = 224  # timm's most common input side; to_backbone_input resizes again for the backbone
DESCRIPTION_FILES = ("descriptions.yaml", "descriptions.yml", "descriptions.json")


# helpers


def _find_descriptions(folders: Sequence[Path]) -> Path:
    for folder in folders:
        for name in DESCRIPTION_FILES:
            if (folder / name).is_file():
                return folder / name
    raise FileNotFoundError(
        f"no descriptions file given and none of {list(DESCRIPTION_FILES)} in {[str(f) for f in folders]}; "
        "pass descriptions=<YAML or JSON file mapping each class folder name to a list of descriptions>"
    )


def _class_files(folder: Path, classes: Sequence[str]) -> list[list[Path]]:
    files = []
    for name in classes:
        found = sorted(p for p in (folder / name).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            raise ValueError(f"class folder {folder / name} has no images with extensions {list(IMAGE_EXTENSIONS)}")
        files.append(found)
    return files


def _read_images(files_by_class: list[list[Path]], size: int, skip_bad: bool) -> tuple[list[np.ndarray], list[int]]:
    """Read every file; an unreadable one raises, or with ``skip_bad`` is left out and reported in one warning."""
    images, labels, skipped = [], [], []
    for label, files in enumerate(files_by_class):
        for file in files:
            try:
                images.append(square_resize(file, size).numpy())
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                if not skip_bad:
                    raise ValueError(f"unreadable image {file}: {exc} (pass skip_bad=True to skip it)") from None
                skipped.append(f"{file} ({exc})")
                continue
            labels.append(label)
    if skipped:
        # stacklevel 5 points at the caller of load_dataset (through _imagefolder and read_image_folder)
        warnings.warn(f"skipped {len(skipped)} unreadable images: {'; '.join(skipped)}", stacklevel=5)
    return images, labels


# public


def match_descriptions(
    class_names: Sequence[str], descriptions: Mapping[str, Sequence[str]], source: str
) -> dict[str, list[str]]:
    """Descriptions in class order, requiring that the classes and the described names are the same set.

    Raises:
        ValueError: Listing the classes without descriptions and the described names that are not classes.
    """
    no_text = [c for c in class_names if c not in descriptions]
    no_class = [c for c in descriptions if c not in class_names]
    if no_text or no_class:
        raise ValueError(
            f"{source}: classes and descriptions differ. Classes without descriptions: {no_text}; "
            f"descriptions without a class: {no_class}"
        )
    return {c: list(descriptions[c]) for c in class_names}


def read_image_folder(
    root: str | os.PathLike[str] | None,
    split: str = "train",
    *,
    descriptions: str | os.PathLike[str] | None = None,
    img_size: int | None = None,
    skip_bad: bool = False,
) -> LabeledImages:
    """Read ``root/<class>/*.{png,jpg,jpeg,bmp,webp}`` (or ``root/<split>/<class>/...`` when that folder exists).

    Class names are the sorted folder names; folders starting with "." are ignored. Images are converted to RGB,
    their shorter side resized to ``img_size`` (bilinear, aspect kept) and centre-cropped to a square.

    Args:
        root: the folder.
        split: used only when ``root/<split>`` exists.
        descriptions: YAML/JSON file of class -> descriptions; None looks for ``descriptions.{yaml,yml,json}`` in
            the split folder, then in ``root``.
        img_size: side of the stored images (default 224).
        skip_bad: warn about and skip unreadable images instead of raising.

    Raises:
        FileNotFoundError: If ``root`` or the descriptions file does not exist.
        ValueError: If there are no class folders, a folder has no images, an image is unreadable (without
            ``skip_bad``), or class folders and described classes differ (the message lists both sides).
    """
    if root is None:
        raise ValueError("imagefolder needs root=<folder with one subfolder of images per class>")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"imagefolder root {root} is not a folder")
    size = DEFAULT_IMG_SIZE if img_size is None else img_size
    check_int("img_size", img_size, optional=True)
    folder = root / split if (root / split).is_dir() else root
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{folder} has no class subfolders; expected {folder}/<class>/<image files>")
    path = Path(descriptions) if descriptions is not None else _find_descriptions([folder, root])
    texts = match_descriptions(classes, load_descriptions(path), f"{folder} vs {path}")

    images, labels = _read_images(_class_files(folder, classes), size, skip_bad)
    present = set(labels)
    empty = [c for i, c in enumerate(classes) if i not in present]
    if empty:
        raise ValueError(f"{folder}: no readable images left for classes {empty}")
    stacked = torch.from_numpy(np.stack(images))  # (N, S, S, 3)
    return LabeledImages(stacked, torch.tensor(labels, dtype=torch.int64), classes, texts, "imagefolder")
