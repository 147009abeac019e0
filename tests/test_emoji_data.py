"""Tests for the emoji dataset, the CLDR parser and class-split files, on synthetic data (the real data is optional)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from _emoji_fixtures import (
    CLASSES,
    CLDR_DERIVED_XML,
    CLDR_XML,
    COLOURS,
    ENTRIES,
    _png,
    _real_data_or_skip,
    _tarball,
    write_cldr,
    write_emoji_root,
)

from lang2net.data import DATASETS, ClassSplit, class_splits, load_dataset, load_split_file, stratified_class_split
from lang2net.data.cldr import CldrAnnotation, cldr_dir, lookup_annotation, parse_cldr_annotations
from lang2net.data.emoji import (
    STYLES,
    EmojiClass,
    emoji_classes,
    emoji_descriptions,
    emoji_root,
    fetch_emoji,
    read_emoji_image,
    select_emoji_classes,
)
from lang2net.data.splits import _SPLITS_DIR, _load_splits, generate_splits


@pytest.fixture
def cldr(tmp_path, monkeypatch):
    return write_cldr(tmp_path, monkeypatch)


@pytest.fixture
def root(tmp_path, cldr):
    return write_emoji_root(tmp_path)


# CLDR


def test_cldr_parser_tts_keywords_and_fe0f():
    base = parse_cldr_annotations(CLDR_XML)
    assert base["🐶"] == CldrAnnotation("dog face", ("dog", "face", "pet"))
    assert base["🍏"] == CldrAnnotation("apple", ())
    assert lookup_annotation(base, "2601-FE0F") == CldrAnnotation("cloud", ("cloud", "weather"))  # FE0F dropped
    assert lookup_annotation(base, "2601") == lookup_annotation(base, "2601-FE0F")
    assert lookup_annotation(base, ["1FACE", "1F436"]).tts == "dog face"  # first code found wins
    assert lookup_annotation(base, "1FACE") == CldrAnnotation(None, ())
    derived = parse_cldr_annotations(CLDR_DERIVED_XML)
    assert lookup_annotation(derived, "2764-FE0F-200D-1F525").keywords == ("burn", "heart", "on fire")  # FE0F in XML
    assert lookup_annotation(derived, "2764-200D-1F525").keywords == ("burn", "heart", "on fire")
    with pytest.raises(ValueError, match="not a CLDR annotations XML"):
        parse_cldr_annotations("<ldml><annotations>")
    with pytest.raises(ValueError, match="bad unified code 'zz'"):
        lookup_annotation(base, "zz")


def test_cldr_dir_and_merge(cldr, tmp_path):
    from lang2net.data.cldr import read_cldr_annotations

    merged = read_cldr_annotations(cldr)
    assert merged["🐶"] == CldrAnnotation("dog face", ("dog", "face", "pet"))  # the base file wins over derived
    assert merged["🍏"] == CldrAnnotation("apple", ("apple", "fruit", "green"))  # fields filled from derived
    with pytest.raises(FileNotFoundError, match="unicode-cldr-core"):
        cldr_dir(tmp_path / "nowhere")


# classes and descriptions


def test_select_classes_filters_and_names(cldr):
    from lang2net.data.cldr import read_cldr_annotations

    classes = select_emoji_classes(ENTRIES, read_cldr_annotations())
    assert [c.name for c in classes] == CLASSES  # sort_order; apples disambiguated; moose falls back to its name
    assert [c.category for c in classes] == ["Animals & Nature"] * 2 + ["Food & Drink"] * 2 + ["Travel & Places"]
    dog = classes[0]
    assert (dog.unified, dog.image, dog.subcategory, dog.short_names) == (
        "1F436",
        "1f436.png",
        "animal-mammal",
        ("dog",),
    )
    assert (dog.tts, dog.keywords, dog.emoji_name) == ("dog face", ("dog", "face", "pet"), "dog face")
    assert (classes[1].tts, classes[1].keywords) == (None, ())
    assert classes[4].keywords == ("cloud", "weather")  # found through non-FE0F matching
    with pytest.raises(ValueError, match=r"unknown emoji categories \['Plants'\]; valid: \['Activities'"):
        select_emoji_classes(ENTRIES, {}, categories=["Plants"])


def test_descriptions_from_templates():
    dog = EmojiClass(
        "dog face", "1F436", "1f436.png", "Animals & Nature", "animal-mammal", "dog face", ("dog",), "dog face",
        ("dog", "face", "pet"),
    )  # fmt: skip
    moose = EmojiClass("moose", "1FACE", "1face.png", "Animals & Nature", "animal-mammal", "moose", ("moose",))
    texts = emoji_descriptions([dog, moose])
    assert texts == {
        "dog face": [
            "an emoji of dog face",
            "dog face: pet",  # keywords that repeat the name are dropped
            "an icon of dog face (dog)",
            "animal mammal emoji: dog face",
            "a small picture of dog face, from the animals & nature emoji group",
        ],
        "moose": [
            "an emoji of moose",
            "an icon of moose",
            "animal mammal emoji: moose",
            "a small picture of moose, from the animals & nature emoji group",
        ],
    }
    assert emoji_descriptions([dog, moose], {"moose": "a large deer"})["moose"] == ["a large deer"]
    extended = emoji_descriptions([dog, moose], {"moose": ["a large deer", "an emoji of moose"]}, extend=True)
    assert extended["moose"][-1] == "a large deer" and len(extended["moose"]) == 5  # appended, repeat dropped
    with pytest.raises(ValueError, match=r"unknown emoji classes 'dog fase' \(close: \['dog face'\]\)"):
        emoji_descriptions([dog, moose], {"dog fase": "a dog"})


# images and the loader


def test_read_image_composites_on_white(tmp_path):
    _png(tmp_path / "a.png", (10, 20, 30))
    image = read_emoji_image(tmp_path / "a.png")
    assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
    assert image[0, 0].tolist() == [255, 255, 255]  # fully transparent -> white
    assert image[63, 63].tolist() == [10, 20, 30]
    assert abs(int(image[40, 40, 0]) - 127) <= 1  # half-transparent black over white
    small = read_emoji_image(tmp_path / "a.png", 32)
    assert small.shape == (32, 32, 3) and small[0, 0].tolist() == [255, 255, 255]
    assert small[31, 31].tolist() == [10, 20, 30]


def test_load_emoji_splits(root):
    train = load_dataset("emoji", "train", root=root)
    assert train.class_names == CLASSES and train.name == "emoji"
    assert train.images.shape == (10, 64, 64, 3) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]  # twitter first, then google
    assert train.images[0, 63, 63].tolist() == list(COLOURS["twitter"])
    assert train.images[5, 63, 63].tolist() == list(COLOURS["google"])
    assert train.images[:, 0, 0].eq(255).all()
    assert train.descriptions["cloud"][:2] == ["an emoji of cloud", "cloud: weather"]
    test = load_dataset("emoji", "test", root=root, img_size=32)
    assert test.images.shape == (10, 32, 32, 3) and torch.equal(test.labels, train.labels)
    google = load_dataset("emoji", "google", root=root)
    assert google.labels.tolist() == [0, 1, 2, 3, 4] and google.images[:, 63, 63, 2].eq(200).all()
    twitter = load_dataset("emoji", "twitter", root=root, limit_per_class=1)
    assert twitter.labels.tolist() == [0, 1, 2, 3, 4] and twitter.images[:, 63, 63, 0].eq(200).all()
    assert DATASETS["emoji"].splits == ("train", "test", "twitter", "google", "openmoji", "fluent", "fluent-flat")
    with pytest.raises(ValueError, match=r"no split 'val'; valid: \['train', 'test', 'twitter', 'google', 'openmoji'"):
        load_dataset("emoji", "val", root=root)


def test_description_override_file(root, tmp_path):
    path = tmp_path / "extra.yaml"
    path.write_text("cloud: a white cloud\nmoose:\n  - a large deer\n  - an elk\n", encoding="utf-8")
    data = load_dataset("emoji", "google", root=root, descriptions=path)
    assert data.descriptions["cloud"] == ["a white cloud"]
    assert data.descriptions["moose"] == ["a large deer", "an elk"]
    assert data.descriptions["dog face"][0] == "an emoji of dog face"
    path.write_text("clowd: a white cloud\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"'clowd' \(close: \['cloud'\]\)"):
        load_dataset("emoji", "google", root=root, descriptions=path)


def test_corrupt_png(root):
    bad = root / "twitter" / "img" / "2601-fe0f.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"unreadable emoji image .*twitter/img/2601-fe0f\.png"):
        load_dataset("emoji", "train", root=root)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable emoji images: .*2601-fe0f\.png"):
        data = load_dataset("emoji", "train", root=root, skip_bad=True)
    assert data.labels.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4]  # cloud keeps its google image
    assert len(load_dataset("emoji", "google", root=root)) == 5


def test_missing_data_names_the_fetch_command(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"python -m lang2net\.data\.emoji fetch --cache-dir") as info:
        load_dataset("emoji", root=tmp_path / "nope")
    assert "\n" not in str(info.value) and "make venv" in str(info.value)
    monkeypatch.setenv("LANG2NET_DATA", str(tmp_path))
    with pytest.raises(
        FileNotFoundError, match=r"\['twitter', 'google'\] not found in .*emoji; install it with `python"
    ):
        emoji_root()


# fetch (a fake npm on PATH; no network)


def test_fetch_with_fake_npm(tmp_path, monkeypatch):
    packs, bin_dir = tmp_path / "packs", tmp_path / "bin"
    packs.mkdir(), bin_dir.mkdir()
    for style in ("twitter", "google"):
        _tarball(packs / f"emoji-datasource-{style}@16.0.0.tgz", style)
    npm = bin_dir / "npm"
    npm.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\ncp "{packs}/$3.tgz" "./$3.tgz"\n')
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    cache = fetch_emoji(tmp_path / "cache", STYLES)  # the extra styles: test_emoji_styles.py
    assert cache == tmp_path / "cache" and emoji_root(cache) == cache
    assert sorted(p.name for p in cache.iterdir()) == ["google", "twitter"]  # no temporary folder left
    assert sorted(p.name for p in (cache / "google").iterdir()) == ["emoji.json", "img"]
    assert [p.name for p in (cache / "google" / "img").iterdir()] == ["1f436.png"]
    assert (cache / "twitter" / "img" / "1f436.png").read_bytes() == b"png-64"
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == ["pack --silent emoji-datasource-twitter@16.0.0", "pack --silent emoji-datasource-google@16.0.0"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no npm: the complete cache needs none
    assert fetch_emoji(cache, STYLES) == cache
    with pytest.raises(FileNotFoundError, match="`npm` is not on PATH"):
        fetch_emoji(tmp_path / "other")


# class splits


def test_class_split_validation_field():
    split = ClassSplit(0, ["a", "b", "c"], ["d"], ["b"])
    assert split.validation == ("b",) and split.train_classes == ("a", "c")
    assert ClassSplit(1, ["a"], ["b"]).train_classes == ("a",)
    with pytest.raises(ValueError, match=r"not seen: \['d'\]"):
        ClassSplit(0, ["a", "b"], ["d"], ["d"])
    with pytest.raises(ValueError, match=r"validation repeats \['a'\]"):
        ClassSplit(0, ["a", "b"], ["d"], ["a", "a"])


def test_split_files_anywhere(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"version": 1, "folds": [{"fold": 0, "seen": ["a", "b"], "unseen": ["c"]}]}))
    (split,) = load_split_file(path)
    assert (split.seen, split.unseen, split.validation) == (("a", "b"), ("c",), ())
    assert class_splits(path) == [split] and class_splits(str(path)) == [split]
    with pytest.raises(ValueError, match=r"no descriptions: \['c'\]"):
        load_split_file(path, {"a": ["x"], "b": ["y"]})
    path.write_text(json.dumps({"folds": [{"fold": 0, "seen": ["a"]}]}))
    with pytest.raises(ValueError, match=r"folds\[0\] must be an object with 'fold', 'seen', 'unseen'"):
        load_split_file(path)
    with pytest.raises(FileNotFoundError, match=r"nope\.json"):
        class_splits(tmp_path / "nope.json")


def _synthetic():
    sizes = {"animals": 13, "food": 8, "places": 20, "toys": 3}
    classes = [f"{cat}{i}" for cat, n in sizes.items() for i in range(n)]
    return classes, [c.rstrip("0123456789") for c in classes], sizes


def test_stratified_split_properties():
    classes, categories, sizes = _synthetic()
    folds = stratified_class_split(classes, categories)["folds"]
    assert folds == stratified_class_split(classes, categories)["folds"]  # deterministic
    assert folds != stratified_class_split(classes, categories, seed=1)["folds"]
    assert [f["fold"] for f in folds] == [0, 1, 2, 3]
    assert Counter(c for f in folds for c in f["unseen"]) == dict.fromkeys(classes, 1)  # disjoint, cover all
    category = dict(zip(classes, categories, strict=True))
    for f in folds:
        split = ClassSplit(f["fold"], f["seen"], f["unseen"], f["validation"])  # validation ⊂ seen checked here
        assert sorted(split.seen + split.unseen) == sorted(classes)
        unseen = Counter(category[c] for c in split.unseen)
        for cat, n in sizes.items():
            assert abs(unseen[cat] - 0.25 * n) <= 1, (f["fold"], cat)
            seen_n = n - unseen[cat]
            assert Counter(category[c] for c in split.validation)[cat] == round(0.1 * seen_n)
    assert sorted(len(f["unseen"]) for f in folds) == [11, 11, 11, 11]  # 44 classes: larger groups rotate
    with pytest.raises(ValueError, match=r"unseen_fraction must be in \(0, 1/n_folds\] = \(0, 0.25\]"):
        stratified_class_split(classes, categories, unseen_fraction=0.3)
    with pytest.raises(ValueError, match="44 classes but 3 categories"):
        stratified_class_split(classes, categories[:3])


def test_packaged_emoji_split_loads_without_the_data(tmp_path, monkeypatch):
    monkeypatch.setenv("LANG2NET_DATA", str(tmp_path))  # no emoji data: descriptions are not checked
    _load_splits.cache_clear()
    try:
        splits = class_splits("emoji")
    finally:
        _load_splits.cache_clear()
    assert [s.fold for s in splits] == [0, 1, 2, 3]
    names = set(splits[0].seen) | set(splits[0].unseen)
    assert 800 <= len(names) <= 900
    assert Counter(c for s in splits for c in s.unseen) == dict.fromkeys(names, 1)
    for s in splits:
        assert set(s.seen) | set(s.unseen) == names and set(s.validation) <= set(s.seen)
        assert 0.08 <= len(s.validation) / len(s.seen) <= 0.12


# the real data (after `python -m lang2net.data.emoji fetch`)


def test_real_emoji_data(monkeypatch):
    monkeypatch.delenv("LANG2NET_CLDR", raising=False)
    _real_data_or_skip()
    data = load_dataset("emoji", "train")
    n = len(data.class_names)
    assert 800 <= n <= 900
    assert data.images.shape == (2 * n, 64, 64, 3) and data.labels.bincount().tolist() == [2] * n
    assert {c.category for c in emoji_classes()} == {
        "Animals & Nature", "Food & Drink", "Travel & Places", "Activities", "Objects",
    }  # fmt: skip
    assert "dog face" in data.class_names and data.descriptions["dog face"][1] == "dog face: pet"
    assert all(len(t.split()) < 40 for texts in data.descriptions.values() for t in texts)
    packaged = json.loads((_SPLITS_DIR / "emoji.json").read_text(encoding="utf-8"))
    for fold in packaged["folds"]:
        assert sorted(fold["seen"] + fold["unseen"]) == sorted(data.class_names)
    assert packaged == generate_splits("emoji")
    _load_splits.cache_clear()
    assert len(class_splits("emoji")) == 4  # checked against the real descriptions
