"""The extra emoji styles rendered from SVG: key matching, fetch with a fake npm (no network), "+"-joined splits.

The npm registry is the one boundary mocked here (a shell script on PATH copies prepared tarballs); the SVGs are
real and are rendered by the real renderer (resvg-py).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from _emoji_fixtures import CLASSES, COLOURS, ENTRIES, _real_data_or_skip, _tarball, png_bytes, write_cldr

from lang2net.data import DATASETS, load_dataset
from lang2net.data.emoji import ALL_STYLES, STYLES, emoji_root, fetch_emoji, split_styles
from lang2net.data.emoji_styles import EXTRA_STYLES, svg_keys

pytest.importorskip("resvg_py")

GREEN, ORANGE = "#00c800", "#ff8000"


def _svg(colour: str) -> bytes:
    """An 8x8 canvas with an opaque 4x4 square in the middle: corners stay transparent."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8" viewBox="0 0 8 8">'
        f'<rect x="2" y="2" width="4" height="4" fill="{colour}"/></svg>'
    ).encode()


def _pack(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def npm(tmp_path, monkeypatch):
    """A fake ``npm`` on PATH serving the base tarballs and two SVG packages; returns the file of its calls."""
    write_cldr(tmp_path, monkeypatch)
    packs, bin_dir = tmp_path / "packs", tmp_path / "bin"
    packs.mkdir(), bin_dir.mkdir()
    for style in STYLES:
        pngs = {e["image"]: png_bytes(COLOURS[style]) for e in ENTRIES if e[f"has_img_{style}"]}
        _tarball(packs / f"emoji-datasource-{style}@16.0.0.tgz", style, pngs)
    openmoji = {  # named by code points; CLOUD is 2601-FE0F in emoji-datasource and 2601 here
        "package/color/svg/1F436.svg": _svg(GREEN),
        "package/color/svg/2601.svg": _svg(ORANGE),
        "package/color/svg/1F600.svg": _svg(GREEN),  # not a class
        "package/black/svg/1F436.svg": _svg("#000000"),  # another folder of the package
    }
    _pack(packs / "openmoji@17.0.0.tgz", openmoji)
    fluent = {  # named by the emoji's name
        "package/icons/modern/dog-face.svg": _svg(GREEN),
        "package/icons/modern/moose.svg": _svg(ORANGE),
        "package/icons/modern/apple.svg": _svg(ORANGE),  # "apple" is the CLDR name of both apples: used by neither
        "package/icons/flat/dog-face.svg": _svg(ORANGE),
    }
    _pack(packs / "fluentui-emoji@1.3.0.tgz", fluent)
    script = bin_dir / "npm"
    script.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\ncp "{packs}/$3.tgz" "./$3.tgz"\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return tmp_path / "calls"


def test_svg_keys():
    assert svg_keys("openmoji", "1F43F-FE0F", ["chipmunk"]) == ["1F43F-FE0F", "1F43F"]
    assert svg_keys("openmoji", "1f436", ["dog face"]) == ["1F436"]
    names = ["woman’s boot", "woman’s boot", "womans_boot", "black bird", ""]
    assert svg_keys("fluent", "1F462", names) == ["womansboot", "blackbird"]
    assert set(EXTRA_STYLES) == {"openmoji", "fluent", "fluent-flat"}


def test_fetch_renders_the_svg_styles(tmp_path, npm):
    cache = fetch_emoji(tmp_path / "cache")
    assert sorted(p.name for p in cache.iterdir()) == sorted(ALL_STYLES)  # no temporary folder left
    assert npm.read_text().splitlines() == [
        "pack --silent emoji-datasource-twitter@16.0.0",
        "pack --silent emoji-datasource-google@16.0.0",
        "pack --silent openmoji@17.0.0",
        "pack --silent fluentui-emoji@1.3.0",  # one download for both Fluent styles
    ]
    assert sorted(p.name for p in (cache / "openmoji" / "img").iterdir()) == ["1f436.png", "2601-fe0f.png"]
    assert sorted(p.name for p in (cache / "fluent" / "img").iterdir()) == ["1f436.png", "1face.png"]
    assert [p.name for p in (cache / "fluent-flat" / "img").iterdir()] == ["1f436.png"]
    record = json.loads((cache / "fluent" / "style.json").read_text())
    assert record["package"] == "fluentui-emoji@1.3.0" and record["size"] == 64 and record["rendered"] == 2
    assert sorted(record["missing"]) == ["1f34e.png", "1f34f.png", "2601-fe0f.png"]
    assert record["renderer"].startswith("resvg-py ")
    npm.unlink()
    assert fetch_emoji(cache) == cache and not npm.exists()  # complete: nothing downloaded again


def test_joined_splits_read_every_style(tmp_path, npm):
    cache = fetch_emoji(tmp_path / "cache")
    data = load_dataset("emoji", "twitter+openmoji+fluent", root=cache)
    assert data.class_names == CLASSES
    assert data.labels.tolist() == [0, 1, 2, 3, 4, 0, 4, 0, 1]  # classes without an SVG have no image there
    dog, cloud, moose = data.images[5], data.images[6], data.images[8]
    assert dog.shape == (64, 64, 3) and dog[0, 0].tolist() == [255, 255, 255]  # transparent corner -> white
    assert dog[32, 32].tolist() == [0, 200, 0] and cloud[32, 32].tolist() == [255, 128, 0]
    assert moose[32, 32].tolist() == [255, 128, 0]
    flat = load_dataset("emoji", "fluent-flat", root=cache, img_size=32)
    assert flat.labels.tolist() == [0] and flat.images[0, 16, 16].tolist() == [255, 128, 0]
    assert torch.equal(load_dataset("emoji", "train", root=cache).labels, torch.arange(5).repeat(2))
    assert set(DATASETS["emoji"].splits) == {"train", "test", *ALL_STYLES}


def test_bad_splits_and_missing_styles(tmp_path, npm):
    cache = fetch_emoji(tmp_path / "cache", STYLES)
    assert sorted(p.name for p in cache.iterdir()) == ["google", "twitter"]
    assert split_styles("test") == STYLES and split_styles("google+openmoji") == ("google", "openmoji")
    for bad in ("twitter+twitter", "train+openmoji", "twitter+", "noto"):
        with pytest.raises(ValueError, match=rf"has no split '{bad.replace('+', '[+]')}'; valid: "):
            load_dataset("emoji", bad, root=cache)
    with pytest.raises(FileNotFoundError, match=r"\['openmoji'\] not found in .*fetch --cache-dir"):
        load_dataset("emoji", "twitter+openmoji", root=cache)
    with pytest.raises(FileNotFoundError, match=r"\['fluent-flat'\] not found"):
        emoji_root(cache, ["fluent-flat"])
    with pytest.raises(ValueError, match=r"unknown emoji styles \['noto'\]; valid: \['twitter', 'google', 'openmoji'"):
        fetch_emoji(cache, ["noto"])


def test_real_extra_styles():
    _real_data_or_skip()
    try:
        emoji_root(None, ALL_STYLES)
    except FileNotFoundError as exc:
        pytest.skip(f"extra emoji styles not rendered: {exc}")
    base = load_dataset("emoji", "twitter")
    n = len(base.class_names)
    for style, least in (("openmoji", n), ("fluent", n - 10), ("fluent-flat", n - 10)):
        data = load_dataset("emoji", style)
        counts = data.labels.bincount(minlength=n)
        assert counts.max() == 1 and counts.sum() >= least, style
        # a rendered icon is a drawing on white, not a blank or a solid square
        assert data.images[:, 0, 0].float().mean() > 250 and data.images.float().std() > 40


def test_a_name_key_goes_to_the_emoji_that_lists_it_first():
    """'cat' is the cat's own name and the cat face's short name: the cat gets it; a name two emoji list at the same
    place (both apples' CLDR name) goes to neither."""
    from lang2net.data.emoji_styles import _key_owners

    targets = {"cat.png": ["cat", "cat2"], "face.png": ["catface", "cat"], "a.png": ["apple", "redapple"]}
    targets["b.png"] = ["apple", "greenapple"]
    owners = {"cat": "cat.png", "cat2": "cat.png", "catface": "face.png", "redapple": "a.png", "greenapple": "b.png"}
    assert _key_owners(targets) == owners
