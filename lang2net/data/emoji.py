"""The "emoji" dataset: 857 animal, food, place, activity and object classes, each drawn as a Twemoji and a Noto emoji.

Each class is one emoji of the categories in :data:`CATEGORIES` that has a 64 px image in both styles; skin-tone
variants are left out. Its name is the CLDR English spoken ("tts") name, and its descriptions are built from CLDR
keywords and the emoji-datasource metadata by a few generic templates (:func:`emoji_descriptions`). The images come
from the npm packages ``emoji-datasource-twitter`` and ``emoji-datasource-google`` (version
:data:`EMOJI_DATASOURCE_VERSION`), installed once with ``python -m lang2net.data.emoji fetch`` (``make venv`` runs it).

Cache layout (default ``$LANG2NET_DATA/emoji``, else ``~/.cache/lang2net/emoji``): ``<cache>/<style>/emoji.json``
(the package's metadata, the same file in both packages) and ``<cache>/<style>/img/<image>.png`` (64 px RGBA), for
style ``twitter`` and ``google``; the extra training styles rendered from SVG (:mod:`lang2net.data.emoji_styles`:
``openmoji``, ``fluent``, ``fluent-flat``) have ``style.json`` instead of ``emoji.json``. Each style folder appears
atomically, so a present folder is a complete one.

Credits and licences:
    * Twemoji graphics: Copyright Twitter, Inc. (X Corp.) and other contributors, CC-BY 4.0.
    * Noto Emoji graphics: Copyright Google Inc., Apache License 2.0.
    * emoji-datasource metadata (emoji.json): Copyright Cal Henderson (iamcal), MIT licence.
    * Unicode CLDR annotations (names, keywords): Copyright © Unicode, Inc., Unicode licence.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import json
import logging
import os
import shutil
import sys
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
from .descriptions import check_descriptions, load_descriptions
from .emoji_styles import EXTRA_STYLES, STYLE_FILE, extract_png_style, npm_pack, render_svg_styles, svg_keys
from .labeled import LabeledImages

__all__ = [
    "ALL_STYLES",
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
    "read_emoji_image",
    "select_emoji_classes",
    "split_styles",
]

logger = logging.getLogger(__name__)

EMOJI_DATASOURCE_VERSION = "16.0.0"
STYLES = ("twitter", "google")  # the PNG styles: image order of the "train"/"test" splits, the test images
ALL_STYLES = (*STYLES, *EXTRA_STYLES)
EMOJI_SPLITS = ("train", "test", *ALL_STYLES)  # and any "+"-joined styles, e.g. "twitter+google+openmoji"
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
    marker = STYLE_FILE if folder.name in EXTRA_STYLES else "emoji.json"
    return (folder / marker).is_file() and (folder / "img").is_dir()


def _fetch_extra(root: Path, styles: Sequence[str], npm: str, work: Path) -> None:
    """Render the extra (SVG) styles of the base styles' classes, one npm package at a time."""
    classes = emoji_classes(root)
    names = [(c.emoji_name, c.tts or "", c.name, *c.short_names) for c in classes]
    for package in dict.fromkeys(EXTRA_STYLES[s].package for s in styles):
        group = [s for s in styles if EXTRA_STYLES[s].package == package]
        logger.info("downloading %s", package)
        tarball = npm_pack(package, work / package.replace("/", "_"), npm)
        targets = {s: {c.image: svg_keys(s, c.unified, n) for c, n in zip(classes, names, strict=True)} for s in group}
        with contextlib.ExitStack() as stack:
            dests = {s: stack.enter_context(atomic_folder(root / s)) for s in group}
            missing = render_svg_styles(tarball, targets, dests)
        tarball.unlink()
        for s in group:
            n = len(classes) - len(missing[s])
            logger.info("rendered %d %s images into %s (%d classes lack one)", n, s, root / s, len(missing[s]))


def fetch_emoji(cache_dir: str | os.PathLike[str] | None = None, styles: Sequence[str] = ALL_STYLES) -> Path:
    """Download the emoji images and metadata with ``npm pack``, once; a style already in the cache is skipped.

    The base styles (:data:`STYLES`) are PNGs; the extra ones (:data:`~lang2net.data.emoji_styles.EXTRA_STYLES`)
    are SVGs rendered to 64 px PNGs for the base styles' classes (needs ``resvg-py``). Each style is written into a
    temporary sibling folder that is then renamed into place, so an interrupted fetch leaves no half-written one.

    Args:
        cache_dir: the cache folder (default: :func:`default_cache_dir`).
        styles: the styles to fetch; the base styles are always fetched (the others need their classes).

    Returns:
        The cache folder.

    Raises:
        ValueError: If a style is unknown.
        FileNotFoundError: If a style is missing and ``npm`` is not on PATH.
        RuntimeError: If ``npm pack`` fails (no registry access, unknown version).
        ImportError: If an extra style is missing and ``resvg-py`` is not installed.
    """
    if unknown := [s for s in styles if s not in ALL_STYLES]:
        raise ValueError(f"unknown emoji styles {unknown}; valid: {list(ALL_STYLES)}")
    root = _cache(cache_dir)
    todo = [style for style in dict.fromkeys([*STYLES, *styles]) if not _is_complete(root / style)]
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
        for style in [s for s in todo if s in STYLES]:
            spec = f"emoji-datasource-{style}@{EMOJI_DATASOURCE_VERSION}"
            logger.info("downloading %s", spec)
            tarball = npm_pack(spec, Path(work) / style, npm)
            with atomic_folder(root / style) as staging:  # an incomplete folder left by hand is replaced
                n_images = extract_png_style(tarball, f"package/img/{style}/{NATIVE_SIZE}/", staging)
            tarball.unlink()
            logger.info("wrote %d %s images to %s", n_images, style, root / style)
        if extra := [s for s in todo if s in EXTRA_STYLES]:
            _fetch_extra(root, extra, npm, Path(work))
    return root


def emoji_root(cache_dir: str | os.PathLike[str] | None = None, styles: Sequence[str] = STYLES) -> Path:
    """The emoji cache folder, checked to hold ``styles``; FileNotFoundError naming the install command if not."""
    root = _cache(cache_dir)
    missing = [style for style in dict.fromkeys([*STYLES, *styles]) if not _is_complete(root / style)]
    if missing:
        option = "" if cache_dir is None else f" --cache-dir {root}"
        raise FileNotFoundError(
            f"emoji data {missing} not found in {root}; install it with `{FETCH_COMMAND}{option}` "
            "(needs npm; `make venv` runs it)"
        )
    return root


def split_styles(split: str) -> tuple[str, ...]:
    """The styles of an emoji split: "train"/"test" -> the base styles, else its "+"-joined style names.

    Raises:
        ValueError: If the split is neither "train", "test" nor styles of :data:`ALL_STYLES` joined by "+".
    """
    styles = STYLES if split in ("train", "test") else tuple(split.split("+"))
    if not styles or any(s not in ALL_STYLES for s in styles) or len(set(styles)) != len(styles):
        raise ValueError(
            f"emoji has no split {split!r}; valid: 'train', 'test', a style of {list(ALL_STYLES)}, or distinct "
            "styles joined by '+' (e.g. 'twitter+google+openmoji')"
        )
    return styles


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
        if folder.parent.name in EXTRA_STYLES and not path.exists():
            continue  # an SVG set that lacks this (newer) emoji
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
            :class:`~lang2net.data.splits.ClassSplit` are what separates training from evaluation), one style of
            :data:`ALL_STYLES`, or several joined by "+" in the order wanted ("twitter+google+openmoji+fluent"). The
            extra (SVG) styles lack a few newer emoji: those classes have no image in that style.
        root: the emoji cache folder (default: :func:`default_cache_dir`).
        img_size: stored image side (default 64, the files' size; other sizes are resampled, Lanczos when shrinking).
        skip_bad: warn once about and skip unreadable images instead of raising.
        descriptions: a YAML/JSON file of class name -> description(s) replacing the generated ones of those classes.
        cldr: the CLDR ``common`` folder.

    Raises:
        ValueError: If the split, size or descriptions are invalid, or an image is unreadable (without ``skip_bad``).
        FileNotFoundError: If the emoji data, the CLDR files or the descriptions file are missing.
    """
    styles = split_styles(split)
    size = NATIVE_SIZE if img_size is None else img_size
    check_int("img_size", img_size, optional=True)
    folder = emoji_root(root, styles)
    classes = emoji_classes(folder, cldr)
    overrides = load_descriptions(descriptions) if descriptions is not None else None
    texts = emoji_descriptions(classes, overrides, source=str(descriptions))
    images, labels, skipped = [], [], []
    for style in styles:
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
    fetch.add_argument("--styles", nargs="+", default=list(ALL_STYLES), help="styles to fetch (default: all)")
    info = commands.add_parser("info", help="load the dataset; print class count, load time, sample descriptions")
    info.add_argument("--show", type=int, default=3, help="classes whose descriptions are printed")
    for sub in (fetch, info):
        sub.add_argument("--cache-dir", default=None, help="cache folder (default: $LANG2NET_DATA/emoji or ~/.cache)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "fetch":
            print(fetch_emoji(args.cache_dir, args.styles))
        else:
            _info(args.cache_dir, args.show)
    except (FileNotFoundError, ImportError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
