"""The "emoji" dataset: 857 animal, food, place, activity and object classes, each drawn as a Twemoji and a Noto emoji.

Each class is one emoji of the categories in :data:`CATEGORIES` that has a 64 px image in both styles; skin-tone
variants are left out. Its name is the CLDR English spoken ("tts") name, and its descriptions are built from CLDR
keywords and the emoji-datasource metadata by a few generic templates (:func:`emoji_descriptions`). The images come
from the npm packages ``emoji-datasource-twitter`` and ``emoji-datasource-google`` (version
:data:`EMOJI_DATASOURCE_VERSION`), installed once with ``python -m lang2net.data.emoji fetch`` (``make venv`` runs it).

Cache layout (default ``$LANG2NET_DATA/emoji``, else ``~/.cache/lang2net/emoji``): ``<cache>/<style>/emoji.json``
(the package's metadata, the same file in both packages) and ``<cache>/<style>/img/<image>.png`` (64 px RGBA), for
style ``twitter`` and ``google``. Each style folder appears atomically, so a present folder is a complete one.

Credits and licences:
    * Twemoji graphics: Copyright Twitter, Inc. (X Corp.) and other contributors, CC-BY 4.0.
    * Noto Emoji graphics: Copyright Google Inc., Apache License 2.0.
    * emoji-datasource metadata (emoji.json): Copyright Cal Henderson (iamcal), MIT licence.
    * Unicode CLDR annotations (names, keywords): Copyright © Unicode, Inc., Unicode licence.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..utils.atomic import atomic_folder
from ..utils.checks import check_int
from .cldr import CldrAnnotation, lookup_annotation, read_cldr_annotations
from .descriptions import _parse, check_descriptions
from .labeled import LabeledImages

__all__ = [
    "CATEGORIES",
    "EMOJI_DATASOURCE_VERSION",
    "EMOJI_SPLITS",
    "FETCH_COMMAND",
    "STYLES",
    "EmojiClass",
    "default_cache_dir",
    "emoji_classes",
    "emoji_descriptions",
    "emoji_root",
    "fetch_emoji",
    "load_emoji",
    "read_description_overrides",
    "read_emoji_image",
    "select_emoji_classes",
]

logger = logging.getLogger(__name__)

EMOJI_DATASOURCE_VERSION = "16.0.0"
STYLES = ("twitter", "google")  # image order of the "train"/"test" splits
EMOJI_SPLITS = ("train", "test", "twitter", "google")
CATEGORIES = ("Animals & Nature", "Food & Drink", "Travel & Places", "Activities", "Objects")
_GROUPS = ("Smileys & Emotion", "People & Body", "Component", *CATEGORIES, "Symbols", "Flags")  # Unicode emoji groups
NATIVE_SIZE = 64
FETCH_COMMAND = "python -m lang2net.data.emoji fetch"
MAX_KEYWORDS = 6  # keywords per "name: keywords" description, so that each stays well under 40 tokens
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


@dataclasses.dataclass(frozen=True)
class EmojiClass:
    """One emoji class and the source facts its descriptions are built from.

    Attributes:
        name: the class name: the CLDR tts name, else the lower-cased Unicode name (made unique).
        unified: code points as in emoji-datasource, e.g. ``"1F436"`` or ``"2601-FE0F"``.
        image: the PNG file name in each style's ``img`` folder.
        category: emoji-datasource category, e.g. ``"Animals & Nature"``.
        subcategory: e.g. ``"animal-mammal"``.
        emoji_name: the Unicode name, lower-cased ("dog face").
        short_names: emoji-datasource short names ("dog").
        tts: the CLDR spoken name, or None.
        keywords: CLDR keywords.
    """

    name: str
    unified: str
    image: str
    category: str
    subcategory: str
    emoji_name: str
    short_names: tuple[str, ...] = ()
    tts: str | None = None
    keywords: tuple[str, ...] = ()


# fetch


def default_cache_dir() -> Path:
    """``$LANG2NET_DATA/emoji`` when that variable is set, else ``~/.cache/lang2net/emoji``."""
    base = os.environ.get("LANG2NET_DATA")
    return Path(base).expanduser() / "emoji" if base else Path.home() / ".cache" / "lang2net" / "emoji"


def _cache(cache_dir: str | os.PathLike[str] | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _is_complete(folder: Path) -> bool:
    return (folder / "emoji.json").is_file() and (folder / "img").is_dir()


def _npm_pack(spec: str, workdir: Path, npm: str) -> Path:
    """Download one npm package tarball into ``workdir`` with ``npm pack``; returns the tarball."""
    workdir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([npm, "pack", "--silent", spec], cwd=workdir, capture_output=True, text=True, check=False)
    tarballs = sorted(workdir.glob("*.tgz"))
    if result.returncode or len(tarballs) != 1:
        tail = (result.stderr or result.stdout).strip()[-2000:]
        raise RuntimeError(f"`npm pack {spec}` failed (exit {result.returncode}, tarballs {tarballs}): {tail}")
    return tarballs[0]


def _extract_style(tarball: Path, style: str, dest: Path) -> int:
    """Copy ``package/emoji.json`` and ``package/img/<style>/64/*.png`` into ``dest``; returns the PNG count."""
    prefix = f"package/img/{style}/{NATIVE_SIZE}/"
    (dest / "img").mkdir(parents=True, exist_ok=True)
    n_images, has_json = 0, False
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            rest = member.name[len(prefix) :] if member.name.startswith(prefix) else ""
            if not member.isfile():
                continue
            if member.name == "package/emoji.json":
                target, has_json = dest / "emoji.json", True
            elif rest.endswith(".png") and "/" not in rest and not rest.startswith("."):
                target, n_images = dest / "img" / rest, n_images + 1
            else:
                continue
            source = tar.extractfile(member)
            if source is not None:
                target.write_bytes(source.read())
    if not has_json or not n_images:
        raise ValueError(f"{tarball} lacks package/emoji.json or {prefix}*.png ({n_images} images found)")
    return n_images


def fetch_emoji(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Download the emoji images and metadata with ``npm pack``, once; a style already in the cache is skipped.

    Each style is extracted into a temporary sibling folder that is then renamed into place, so an
    interrupted fetch leaves no half-written style folder.

    Args:
        cache_dir: the cache folder (default: :func:`default_cache_dir`).

    Returns:
        The cache folder.

    Raises:
        FileNotFoundError: If a style is missing and ``npm`` is not on PATH.
        RuntimeError: If ``npm pack`` fails (no registry access, unknown version).
    """
    root = _cache(cache_dir)
    todo = [style for style in STYLES if not _is_complete(root / style)]
    if not todo:
        logger.info("emoji data already in %s", root)
        return root
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError(
            f"`npm` is not on PATH, and the emoji data ({todo}) is not in {root}; install Node.js and npm "
            "(Debian: apt-get install npm), then rerun `python -m lang2net.data.emoji fetch`"
        )
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lang2net-emoji-") as work:
        for style in todo:
            spec = f"emoji-datasource-{style}@{EMOJI_DATASOURCE_VERSION}"
            logger.info("downloading %s", spec)
            tarball = _npm_pack(spec, Path(work) / style, npm)
            with atomic_folder(root / style) as staging:  # an incomplete folder left by hand is replaced
                n_images = _extract_style(tarball, style, staging)
            tarball.unlink()
            logger.info("wrote %d %s images to %s", n_images, style, root / style)
    return root


def emoji_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The emoji cache folder, checked to hold both styles; FileNotFoundError naming the install command if not."""
    root = _cache(cache_dir)
    missing = [style for style in STYLES if not _is_complete(root / style)]
    if missing:
        option = "" if cache_dir is None else f" --cache-dir {root}"
        raise FileNotFoundError(
            f"emoji data {missing} not found in {root}; install it with `{FETCH_COMMAND}{option}` "
            "(needs npm; `make venv` runs it)"
        )
    return root


# classes


def _emoji_class(entry: Mapping[str, Any], annotation: CldrAnnotation) -> EmojiClass:
    emoji_name = str(entry["name"]).lower()
    return EmojiClass(
        name=annotation.tts or emoji_name,
        unified=str(entry["unified"]),
        image=str(entry["image"]),
        category=str(entry["category"]),
        subcategory=str(entry.get("subcategory") or ""),
        emoji_name=emoji_name,
        short_names=tuple(entry.get("short_names") or ()),
        tts=annotation.tts,
        keywords=annotation.keywords,
    )


def _unique_names(classes: list[EmojiClass]) -> list[EmojiClass]:
    """Disambiguate repeated names: append the first short name, then the code points if still repeated."""
    for suffix in (lambda c: f" ({(c.short_names or (c.unified,))[0].replace('_', ' ')})", lambda c: f" {c.unified}"):
        counts = Counter(c.name for c in classes)
        classes = [dataclasses.replace(c, name=c.name + suffix(c)) if counts[c.name] > 1 else c for c in classes]
    return classes


def select_emoji_classes(
    entries: Sequence[Mapping[str, Any]],
    annotations: Mapping[str, CldrAnnotation],
    *,
    categories: Sequence[str] = CATEGORIES,
    image_dirs: Mapping[str, Path] | None = None,
) -> list[EmojiClass]:
    """The emoji classes of an emoji-datasource ``emoji.json``, in Unicode order (``sort_order``).

    Keeps top-level entries (skin-tone variants nest under ``skin_variations`` and are ignored) of ``categories``
    with an image in every style, and drops entries whose name mentions a skin tone.

    Args:
        entries: the parsed ``emoji.json``.
        annotations: CLDR annotations (:func:`~lang2net.data.cldr.read_cldr_annotations`).
        categories: the categories to keep.
        image_dirs: style -> image folder; when given, entries whose PNG is missing in a style are left out (with
            one warning).

    Raises:
        ValueError: If a category is neither a Unicode emoji group nor in ``entries`` (the message lists both).
    """
    valid = sorted({*_GROUPS, *(str(e.get("category")) for e in entries)})
    unknown = [c for c in categories if c not in valid]
    if unknown:
        raise ValueError(f"unknown emoji categories {unknown}; valid: {valid}")
    order = sorted(range(len(entries)), key=lambda i: (entries[i].get("sort_order", i), i))
    classes, no_file = [], []
    for entry in (entries[i] for i in order):
        if entry.get("category") not in categories or "skin tone" in str(entry.get("name", "")).lower():
            continue
        if not all(entry.get(f"has_img_{style}") for style in STYLES):
            continue
        if image_dirs is not None and not all((image_dirs[s] / entry["image"]).is_file() for s in STYLES):
            no_file.append(str(entry["image"]))
            continue
        codes = [str(code) for code in (entry.get("unified"), entry.get("non_qualified")) if code]
        classes.append(_emoji_class(entry, lookup_annotation(annotations, codes)))
    if no_file:
        warnings.warn(f"left out {len(no_file)} emoji whose image is missing in a style: {no_file}", stacklevel=2)
    return _unique_names(classes)


def emoji_classes(
    root: str | os.PathLike[str] | None = None, cldr: str | os.PathLike[str] | None = None
) -> list[EmojiClass]:
    """The emoji classes of the fetched data, named and annotated from CLDR.

    Args:
        root: the emoji cache folder (default: :func:`default_cache_dir`).
        cldr: the CLDR ``common`` folder (default: see :func:`~lang2net.data.cldr.cldr_dir`).

    Raises:
        FileNotFoundError: If the emoji data or the CLDR files are missing.
        ValueError: If ``emoji.json`` is not a list of emoji entries.
    """
    folder = emoji_root(root)
    path = folder / STYLES[0] / "emoji.json"
    entries = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "unified" in e for e in entries):
        raise ValueError(f"{path}: expected a list of emoji entries with a 'unified' key")
    dirs = {style: folder / style / "img" for style in STYLES}
    return select_emoji_classes(entries, read_cldr_annotations(cldr), image_dirs=dirs)


# descriptions


def _templates(c: EmojiClass) -> list[str]:
    title = c.tts or c.emoji_name
    shorts = [s.replace("_", " ") for s in c.short_names if s.replace("_", " ") != c.emoji_name]
    words = {title.lower(), *title.lower().split()}  # keywords that only repeat the name say nothing new
    keywords = [k for k in c.keywords if k.lower() not in words][:MAX_KEYWORDS]
    texts = [f"an emoji of {title}"]
    if keywords:
        texts.append(f"{title}: {', '.join(keywords)}")
    texts.append(f"an icon of {c.emoji_name}" + (f" ({', '.join(shorts[:3])})" if shorts else ""))
    if c.subcategory:
        texts.append(f"{c.subcategory.replace('-', ' ')} emoji: {title}")
    texts.append(f"a small picture of {title}, from the {c.category.lower()} emoji group")
    return list(dict.fromkeys(texts))


def _unknown_names(names: Sequence[str], valid: Sequence[str], source: str) -> ValueError:
    close = {n: difflib.get_close_matches(n, valid, n=5) for n in names}
    hints = "; ".join(f"{n!r} (close: {m})" for n, m in close.items())
    return ValueError(f"{source}: unknown emoji classes {hints}; {len(valid)} valid classes (see emoji_classes())")


def emoji_descriptions(
    classes: Sequence[EmojiClass],
    overrides: Mapping[str, str | Sequence[str]] | None = None,
    *,
    extend: bool = False,
    source: str = "description overrides",
) -> dict[str, list[str]]:
    """Paraphrases of each class, from its CLDR name and keywords and its emoji-datasource metadata only.

    Templates: "an emoji of {tts}", "{tts}: {keywords not in tts}", "an icon of {unicode name} ({short names})",
    "{subcategory} emoji: {tts}", "a small picture of {tts}, from the {category} emoji group"; repeats are dropped.

    Args:
        classes: the classes (:func:`select_emoji_classes`).
        overrides: class name -> a description or a list of them; they replace the generated ones of that class, or
            with ``extend`` are appended to them.
        extend: append the overrides instead of replacing.
        source: what to call ``overrides`` in error messages (a file path).

    Returns:
        class name -> descriptions, in class order.

    Raises:
        ValueError: If ``overrides`` names a class that is not in ``classes`` (the message gives close names).
    """
    out = {c.name: _templates(c) for c in classes}
    if overrides:
        unknown = [name for name in overrides if name not in out]
        if unknown:
            raise _unknown_names(unknown, list(out), source)
        extra = check_descriptions({k: [v] if isinstance(v, str) else v for k, v in overrides.items()}, source)
        for name, texts in extra.items():
            out[name] = list(dict.fromkeys([*out[name], *texts])) if extend else list(dict.fromkeys(texts))
    return out


def read_description_overrides(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Read a YAML/JSON file of class name -> description(s); FileNotFoundError, ValueError or TypeError if bad."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"descriptions file not found: {path}")
    data = _parse(path.read_text(encoding="utf-8"), path)
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping of class name to descriptions, got {type(data).__name__}")
    return check_descriptions({k: [v] if isinstance(v, str) else v for k, v in data.items()}, str(path))


# images


def read_emoji_image(path: str | os.PathLike[str], img_size: int = NATIVE_SIZE) -> np.ndarray:
    """One emoji PNG as uint8 RGB ``(img_size, img_size, 3)``: composited on white, then resized (OSError if bad)."""
    with Image.open(path) as image:
        rgba = image.convert("RGBA")
    rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    if rgb.size != (img_size, img_size):
        shrink = img_size < max(rgb.size)
        rgb = rgb.resize((img_size, img_size), Image.Resampling.LANCZOS if shrink else Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8)


def _read_style(
    folder: Path, classes: Sequence[EmojiClass], size: int, skip_bad: bool
) -> tuple[list[np.ndarray], list[int], list[str]]:
    images, labels, skipped = [], [], []
    for label, c in enumerate(classes):
        path = folder / c.image
        try:
            images.append(read_emoji_image(path, size))
        except _IMAGE_ERRORS as exc:
            if not skip_bad:
                raise ValueError(f"unreadable emoji image {path}: {exc} (pass skip_bad=True to skip it)") from None
            skipped.append(f"{path} ({exc})")
            continue
        labels.append(label)
    return images, labels, skipped


def load_emoji(
    split: str = "train",
    *,
    root: str | os.PathLike[str] | None = None,
    img_size: int | None = None,
    skip_bad: bool = False,
    descriptions: str | os.PathLike[str] | None = None,
    cldr: str | os.PathLike[str] | None = None,
) -> LabeledImages:
    """Load the emoji dataset: one image per class and style, labels in class order.

    Args:
        split: "train" and "test" (the same images: Twemoji first, then Noto; the held-out classes of a
            :class:`~lang2net.data.splits.ClassSplit` are what separates training from evaluation), "twitter" or
            "google" (one style).
        root: the emoji cache folder (default: :func:`default_cache_dir`).
        img_size: stored image side (default 64, the files' size; other sizes are resampled, Lanczos when shrinking).
        skip_bad: warn once about and skip unreadable images instead of raising.
        descriptions: a YAML/JSON file of class name -> description(s) replacing the generated ones of those classes.
        cldr: the CLDR ``common`` folder.

    Raises:
        ValueError: If the split, size or descriptions are invalid, or an image is unreadable (without ``skip_bad``).
        FileNotFoundError: If the emoji data, the CLDR files or the descriptions file are missing.
    """
    if split not in EMOJI_SPLITS:
        raise ValueError(f"emoji has no split {split!r}; valid: {list(EMOJI_SPLITS)}")
    size = NATIVE_SIZE if img_size is None else img_size
    check_int("img_size", img_size, optional=True)
    folder = emoji_root(root)
    classes = emoji_classes(folder, cldr)
    overrides = read_description_overrides(descriptions) if descriptions is not None else None
    texts = emoji_descriptions(classes, overrides, source=str(descriptions))
    images, labels, skipped = [], [], []
    for style in STYLES if split in ("train", "test") else (split,):
        style_images, style_labels, style_skipped = _read_style(folder / style / "img", classes, size, skip_bad)
        images += style_images
        labels += style_labels
        skipped += style_skipped
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable emoji images: {'; '.join(skipped)}", stacklevel=2)
    if not images:
        raise ValueError(f"no readable emoji images in {folder} for split {split!r}")
    stacked = torch.from_numpy(np.stack(images))  # (N, S, S, 3)
    return LabeledImages(stacked, torch.tensor(labels, dtype=torch.int64), [c.name for c in classes], texts, "emoji")


# command line


def _info(cache_dir: str | None, show: int) -> None:
    start = time.perf_counter()
    data = load_emoji("train", root=cache_dir)
    seconds = time.perf_counter() - start
    counts = Counter(c.category for c in emoji_classes(cache_dir))
    print(f"{len(data.class_names)} classes, {len(data)} images {tuple(data.images.shape)} in {seconds:.2f} s")
    print("per category:", dict(counts))
    step = max(1, len(data.class_names) // max(show, 1))
    for name in data.class_names[::step][:show]:
        print(f"{name}:")
        for text in data.descriptions[name]:
            print(f"  - {text}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lang2net.data.emoji fetch|info [--cache-dir D]``."""
    parser = argparse.ArgumentParser(prog="python -m lang2net.data.emoji", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="download the images and metadata with npm (once)")
    info = commands.add_parser("info", help="load the dataset; print class count, load time, sample descriptions")
    info.add_argument("--show", type=int, default=3, help="classes whose descriptions are printed")
    for sub in (fetch, info):
        sub.add_argument("--cache-dir", default=None, help="cache folder (default: $LANG2NET_DATA/emoji or ~/.cache)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "fetch":
            print(fetch_emoji(args.cache_dir))
        else:
            _info(args.cache_dir, args.show)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
