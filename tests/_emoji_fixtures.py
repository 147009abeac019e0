"""Shared emoji test data: a synthetic emoji-datasource listing, CLDR files, PNG folders and package tarballs."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lang2net.data.cldr import cldr_dir
from lang2net.data.emoji import emoji_root

COLOURS = {"twitter": (200, 30, 30), "google": (30, 30, 200)}


def _entry(name, unified, category, sort_order, short_names, **extra):
    entry = {
        "name": name,
        "unified": unified,
        "non_qualified": None,
        "image": f"{unified.lower()}.png",
        "short_name": short_names[0],
        "short_names": short_names,
        "category": category,
        "subcategory": extra.pop("subcategory", "animal-mammal"),
        "sort_order": sort_order,
        "has_img_twitter": True,
        "has_img_google": True,
    }
    return entry | extra


ENTRIES = [
    _entry("CLOUD", "2601-FE0F", "Travel & Places", 30, ["cloud"], non_qualified="2601", subcategory="sky & weather"),
    _entry("GREEN APPLE", "1F34F", "Food & Drink", 21, ["green_apple"], subcategory="food-fruit"),
    _entry("RED APPLE", "1F34E", "Food & Drink", 20, ["apple"], subcategory="food-fruit"),
    _entry("MOOSE", "1FACE", "Animals & Nature", 11, ["moose"]),
    _entry("DOG FACE", "1F436", "Animals & Nature", 10, ["dog"], skin_variations={"1F3FB": {"unified": "x"}}),
    _entry("GRINNING FACE", "1F600", "Smileys & Emotion", 1, ["grinning"]),  # other category
    _entry("PERSON FENCING LIGHT SKIN TONE", "1F93A-1F3FB", "Activities", 40, ["fencer_light"]),  # a skin tone
    _entry("ROCKET", "1F680", "Travel & Places", 31, ["rocket"], has_img_google=False),  # one style only
]
CLASSES = ["dog face", "moose", "apple (apple)", "apple (green apple)", "cloud"]
CLDR_XML = """<?xml version="1.0" encoding="UTF-8" ?>
<!DOCTYPE ldml SYSTEM "../../common/dtd/ldml.dtd">
<ldml><annotations>
  <annotation cp="🐶">dog | face | pet</annotation>
  <annotation cp="🐶" type="tts">dog face</annotation>
  <annotation cp="☁">cloud | weather</annotation>
  <annotation cp="☁" type="tts">cloud</annotation>
  <annotation cp="🍎">apple | fruit | red</annotation>
  <annotation cp="🍎" type="tts">apple</annotation>
  <annotation cp="🍏" type="tts">apple</annotation>
  <annotation cp="🚀" type="tts">rocket</annotation>
</annotations></ldml>
"""
CLDR_DERIVED_XML = """<ldml><annotations>
  <annotation cp="🍏">apple | fruit | green</annotation>
  <annotation cp="🐶" type="tts">doggy</annotation>
  <annotation cp="❤️‍🔥">burn | heart | on fire</annotation>
</annotations></ldml>
"""


def _png(path: Path | io.BytesIO, colour: tuple[int, int, int]) -> None:
    """64 px RGBA: a transparent 16 px top-left block, one half-transparent black pixel, opaque ``colour`` elsewhere."""
    pixels = np.zeros((64, 64, 4), dtype=np.uint8)
    pixels[..., :3], pixels[..., 3] = colour, 255
    pixels[:16, :16] = 0
    pixels[40, 40] = (0, 0, 0, 128)
    Image.fromarray(pixels, "RGBA").save(path, format="PNG")


def png_bytes(colour: tuple[int, int, int]) -> bytes:
    """The bytes of a :func:`_png` image."""
    buffer = io.BytesIO()
    _png(buffer, colour)
    return buffer.getvalue()


def write_cldr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """CLDR annotation files under ``tmp_path/cldr``, made the default with ``$LANG2NET_CLDR`` (a fixture's body)."""
    folder = tmp_path / "cldr"
    for name, text in (("annotations", CLDR_XML), ("annotationsDerived", CLDR_DERIVED_XML)):
        (folder / name).mkdir(parents=True)
        (folder / name / "en.xml").write_text(text, encoding="utf-8")
    monkeypatch.setenv("LANG2NET_CLDR", str(folder))
    return folder


def write_emoji_root(tmp_path: Path) -> Path:
    """The two base styles' folders of :data:`ENTRIES` under ``tmp_path/emoji``: one colour per style."""
    folder = tmp_path / "emoji"
    for style, colour in COLOURS.items():
        (folder / style / "img").mkdir(parents=True)
        (folder / style / "emoji.json").write_text(json.dumps(ENTRIES), encoding="utf-8")
        for entry in ENTRIES:
            if entry[f"has_img_{style}"]:
                _png(folder / style / "img" / entry["image"], colour)
    return folder


def _tarball(path: Path, style: str, pngs: dict[str, bytes] | None = None) -> None:
    """An emoji-datasource package of ``style``: 64 px ``pngs`` (name -> bytes; default a stand-in 1f436.png)."""
    files = {
        "package/emoji.json": json.dumps(ENTRIES).encode(),
        "package/README.md": b"readme",
        **{f"package/img/{style}/64/{name}": data for name, data in (pngs or {"1f436.png": b"png-64"}).items()},
        f"package/img/{style}/32/1f436.png": b"png-32",
        f"package/img/{style}/sheets/64.png": b"sheet",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _real_data_or_skip():
    try:
        emoji_root()
        cldr_dir()
    except FileNotFoundError as exc:
        pytest.skip(f"real emoji data not installed: {exc}")
