"""Tests for lang2net.data: real datasets, descriptions, class splits, procedural shapes, backbone input, episodes."""

from __future__ import annotations

import gzip
import io
import itertools
import json
import shutil
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import timm
import timm.data
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from lang2net.data import (
    DATASETS,
    ClassSplit,
    EpisodeSampler,
    LabeledImages,
    ProceduralShapes,
    class_splits,
    load_dataset,
    load_descriptions,
    packaged_descriptions,
    save_descriptions,
    to_backbone_input,
    validate_split,
)
from lang2net.data.digits import DIGIT_CLASSES
from lang2net.data.fashion_mnist import DEBIAN_DIR, ENV_VAR, FASHION_MNIST_CLASSES, read_idx
from lang2net.data.shapes import ATTRIBUTES
from lang2net.data.splits import _SPLITS_DIR, generate_splits

CLASS_NAMES = {"fashion_mnist": FASHION_MNIST_CLASSES, "digits": DIGIT_CLASSES}
needs_fashion_mnist = pytest.mark.skipif(
    not Path(DEBIAN_DIR, "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not installed in {DEBIAN_DIR} (apt-get install dataset-fashion-mnist)",
)


@pytest.fixture(scope="module")
def fashion_train() -> LabeledImages:
    return load_dataset("fashion_mnist", "train")


@pytest.fixture(scope="module")
def fashion_test() -> LabeledImages:
    return load_dataset("fashion_mnist", "test")


@pytest.fixture(scope="module")
def shapes() -> ProceduralShapes:
    return ProceduralShapes()


# Fashion-MNIST


@needs_fashion_mnist
def test_fashion_mnist_train_real_values(fashion_train):
    assert fashion_train.images.shape == (60000, 28, 28) and fashion_train.images.dtype == torch.uint8
    assert fashion_train.labels.dtype == torch.int64
    assert fashion_train.labels.bincount().tolist() == [6000] * 10
    assert fashion_train.class_names == FASHION_MNIST_CLASSES
    # the published mean pixel of the training set: 72.94 / 255 = 0.2860
    assert fashion_train.images.double().mean().item() / 255 == pytest.approx(0.28604, abs=1e-4)
    assert fashion_train.labels[:5].tolist() == [9, 0, 0, 3, 0]  # ankle boot, 2 tops, dress, top


@needs_fashion_mnist
def test_fashion_mnist_test_split(fashion_test):
    assert fashion_test.images.shape == (10000, 28, 28)
    assert fashion_test.labels.bincount().tolist() == [1000] * 10
    assert set(fashion_test.descriptions) == set(FASHION_MNIST_CLASSES)


@needs_fashion_mnist
@pytest.mark.parametrize("gzipped", [True, False])
def test_fashion_mnist_torchvision_layout(tmp_path, fashion_test, gzipped):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        source = Path(DEBIAN_DIR, f"{stem}.gz")
        if gzipped:
            shutil.copy(source, raw / source.name)
        else:
            (raw / stem).write_bytes(gzip.decompress(source.read_bytes()))
    data = load_dataset("fashion_mnist", "test", root=str(tmp_path))
    assert torch.equal(data.images, fashion_test.images) and torch.equal(data.labels, fashion_test.labels)


@needs_fashion_mnist
def test_fashion_mnist_env_variable_comes_first(tmp_path, monkeypatch):
    shutil.copy(Path(DEBIAN_DIR, "t10k-labels-idx1-ubyte.gz"), tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 12)
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte"):  # the env folder's (corrupt) file was read
        load_dataset("fashion_mnist", "test")


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as info:
        load_dataset("fashion_mnist", "train", root=str(tmp_path))
    assert "download=True" in str(info.value) and str(tmp_path) in str(info.value)


def _idx(magic: int, dims: list[int], payload: bytes) -> bytes:
    return np.array([magic, *dims], dtype=">i4").tobytes() + payload


IDX_CASES = {
    "unknown magic": (_idx(2052, [2, 2, 2], bytes(8)), "magic number 2052"),
    "truncated images": (_idx(2051, [3, 2, 2], bytes(8)), "truncated"),
    "too short": (b"\x00\x00", "too short"),
    "corrupt gzip": (gzip.compress(_idx(2049, [4], bytes(4)))[:-6], "corrupt gzip"),
}


@pytest.mark.parametrize("case", list(IDX_CASES))
def test_read_idx_rejects_corrupt_files(tmp_path, case):
    content, message = IDX_CASES[case]
    path = tmp_path / "bad-idx-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_valid_roundtrip(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(_idx(2051, [2, 3, 4], images.tobytes()))
    (tmp_path / "b.gz").write_bytes(gzip.compress(_idx(2049, [3], bytes([7, 8, 9]))))
    assert np.array_equal(read_idx(tmp_path / "a"), images)
    assert read_idx(tmp_path / "b.gz").tolist() == [7, 8, 9]


# digits and the generic loader


def _rows(images: np.ndarray, labels) -> Counter:
    return Counter(bytes(r) + bytes([int(y)]) for r, y in zip(images.reshape(len(images), -1), labels, strict=True))


def test_digits_split_sizes_and_content():
    from sklearn.datasets import load_digits

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1438, 359)
    assert train.images.shape[1:] == (8, 8) and int(train.images.max()) == 255
    full = load_digits()
    per_class = np.bincount(full.target)
    assert test.labels.bincount().tolist() == [int(np.rint(0.2 * n)) for n in per_class]
    # train and test partition the 1797 (image, label) pairs exactly
    scaled = np.rint(full.images * 255 / 16).astype(np.uint8)
    assert _rows(train.images.numpy(), train.labels) + _rows(test.images.numpy(), test.labels) == _rows(
        scaled, full.target
    )
    assert torch.equal(load_dataset("digits", "test", seed=5).labels, test.labels)  # the split ignores the seed


def test_limit_per_class_is_seeded_and_balanced():
    full = load_dataset("digits", "train")
    a = load_dataset("digits", "train", limit_per_class=10, seed=1)
    assert a.labels.bincount().tolist() == [10] * 10
    assert torch.equal(a.images, load_dataset("digits", "train", limit_per_class=10, seed=1).images)
    assert not torch.equal(a.images, load_dataset("digits", "train", limit_per_class=10, seed=2).images)
    full_rows = {bytes(r) for r in full.images.reshape(len(full), -1).numpy()}
    assert all(bytes(r) in full_rows for r in a.images.reshape(len(a), -1).numpy())


LOAD_ERRORS = [
    (("mnist",), {}, ValueError, "unknown dataset 'mnist'"),
    (("digits", "val"), {}, ValueError, "no split 'val'"),
    (("digits",), {"root": "/tmp"}, ValueError, r"does not take \['root'\]"),
    (("digits",), {"limit_per_class": 0}, ValueError, "limit_per_class"),
    (("imagefolder",), {}, ValueError, "needs root"),
]


@pytest.mark.parametrize(("args", "kwargs", "error", "message"), LOAD_ERRORS)
def test_load_dataset_errors(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        load_dataset(*args, **kwargs)


def test_registry_names():
    assert set(DATASETS) == {"fashion_mnist", "digits", "shapes", "imagefolder", "emoji"}


def test_labeled_images_subset_relabels_in_given_order():
    data = load_dataset("digits", "test")
    sub = data.subset(["7", "2"])
    assert sub.class_names == ["7", "2"] and set(sub.descriptions) == {"7", "2"}
    assert sub.labels.bincount().tolist() == [36, 35]  # round(0.2 * 179), round(0.2 * 177)
    assert torch.equal(sub.images[sub.labels == 0], data.images[data.labels == 7])
    with pytest.raises(ValueError, match="unknown classes"):
        data.subset(["7", "eleven"])
    with pytest.raises(ValueError, match="classes without descriptions"):
        LabeledImages(data.images, data.labels, data.class_names, {"0": ["zero"]}, "digits")


# descriptions


@pytest.mark.parametrize("name", ["fashion_mnist", "digits"])
def test_packaged_descriptions_cover_classes(name):
    texts = packaged_descriptions(name)
    assert list(texts) == CLASS_NAMES[name]
    for cls, group in texts.items():
        assert len(group) >= 5 and len(set(group)) == len(group), cls
    everything = [t for group in texts.values() for t in group]
    assert len(set(everything)) == len(everything)


def test_override_descriptions_must_match_classes(tmp_path):
    texts = packaged_descriptions("digits")
    save_descriptions({c: [f"the digit {c}"] * 1 for c in texts}, tmp_path / "ok.json")
    data = load_dataset("digits", "test", descriptions=str(tmp_path / "ok.json"))
    assert data.descriptions["3"] == ["the digit 3"]
    save_descriptions({c: ["x"] for c in list(texts)[:9]}, tmp_path / "short.yaml")
    with pytest.raises(ValueError, match=r"without descriptions: \['9'\]"):
        load_dataset("digits", "test", descriptions=str(tmp_path / "short.yaml"))


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_descriptions_roundtrip(tmp_path, suffix):
    texts = {"T-shirt/top": ["a short-sleeved top", "a tee: boxy"], "0": ["an oval loop"], "é": ["ünïcode"]}
    path = save_descriptions(texts, tmp_path / f"d{suffix}")
    assert load_descriptions(path) == texts
    assert [p.name for p in tmp_path.iterdir()] == [f"d{suffix}"]  # no temp file left behind


DESCRIPTION_ERRORS = {
    "bad indentation": ("a:\n  - one\n - two\n", ".yaml", ValueError, "line 3"),
    "unclosed quote": ('a:\n  - "one\nb: [x]\n', ".yaml", ValueError, "line"),
    "duplicate class": ("a: [x]\nb: [y]\na: [z]\n", ".yaml", ValueError, "line 3.*duplicate key 'a'"),
    "json syntax": ('{"a": ["x"],\n "b": }', ".json", ValueError, "line 2"),
    "not a mapping": ("- a\n- b\n", ".yaml", ValueError, "mapping"),
    "empty list": ("a: []\n", ".yaml", ValueError, "empty list"),
    "blank text": ("a: ['ok', '  ']\n", ".yaml", ValueError, "blank"),
    "blank class name": ("'  ': [x]\nb: [y]\n", ".yaml", ValueError, "class name '  ' is blank"),
    "case duplicate": ("Cat: [x]\n'cat ': [y]\n", ".yaml", ValueError, "'Cat' and 'cat ' are the same class"),
    "a number as text": ("a: 3\n", ".yaml", TypeError, "needs a description or a list"),
    "integer class": ("0: [zero]\n", ".yaml", TypeError, "quote it"),
    "non-string text": ("a: [1]\n", ".yaml", TypeError, "must be str"),
    "extension": ("a: [x]\n", ".txt", ValueError, "valid: .yaml, .yml, .json"),
}


@pytest.mark.parametrize("case", list(DESCRIPTION_ERRORS))
def test_load_descriptions_errors(tmp_path, case):
    text, suffix, error, message = DESCRIPTION_ERRORS[case]
    path = tmp_path / f"d{suffix}"
    path.write_text(text)
    with pytest.raises(error, match=message):
        load_descriptions(path)


def test_one_description_per_class_needs_no_list(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("coat: a long warm coat\nbag: [a handbag, a tote]\n")
    assert load_descriptions(path) == {"coat": ["a long warm coat"], "bag": ["a handbag", "a tote"]}


def test_descriptions_missing_file_and_failed_save(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        load_descriptions(tmp_path / "nope.yaml")
    path = save_descriptions({"a": ["x"]}, tmp_path / "d.yaml")
    with pytest.raises(ValueError, match="empty list"):
        save_descriptions({"a": []}, path)
    assert load_descriptions(path) == {"a": ["x"]} and len(list(tmp_path.iterdir())) == 1


# splits


@pytest.mark.parametrize("name", ["fashion_mnist", "digits"])
def test_kfold_splits(name):
    splits = class_splits(name)
    classes = set(CLASS_NAMES[name])
    assert [s.fold for s in splits] == list(range(5))
    for s in splits:
        assert (len(s.seen), len(s.unseen)) == (8, 2)
        assert not set(s.seen) & set(s.unseen) and set(s.seen) | set(s.unseen) == classes
        assert s.validation == splits[(s.fold + 1) % 5].unseen and len(s.train_classes) == 6  # next fold's unseen
    assert Counter(c for s in splits for c in s.unseen) == dict.fromkeys(classes, 1)
    assert Counter(c for s in splits for c in s.validation) == dict.fromkeys(classes, 1)


@pytest.mark.parametrize("name", ["fashion_mnist", "digits", "shapes"])
def test_packaged_split_files_match_their_generator(name):
    assert json.loads((_SPLITS_DIR / f"{name}.json").read_text()) == generate_splits(name)


def test_shapes_split_holds_out_combinations(shapes):
    (split,) = class_splits("shapes")
    assert set(split.seen) | set(split.unseen) == set(shapes.class_names)
    assert len(split.unseen) == round(0.2 * len(shapes.class_names))
    assert len(split.validation) == round(0.1 * len(split.seen)) and set(split.validation) < set(split.seen)
    seen_attrs = [shapes.attributes(c) for c in split.train_classes]  # what a generator is trained on
    for name in (*split.unseen, *split.validation):
        attrs = shapes.attributes(name)
        for key, value in attrs.items():
            assert any(a[key] == value for a in seen_attrs), (name, key)
        for a, b in itertools.combinations(ATTRIBUTES, 2):  # every pair of its attribute values is seen, too
            assert any(s[a] == attrs[a] and s[b] == attrs[b] for s in seen_attrs), (name, a, b)


def test_split_validation():
    split = ClassSplit(0, ["a", "b"], ["c"])
    assert split.seen == ("a", "b")
    validate_split(split, {"a": ["x"], "b": ["y"], "c": ["z"]})
    with pytest.raises(ValueError, match=r"no descriptions: \['c'\]"):
        validate_split(split, {"a": ["x"], "b": ["y"]})
    with pytest.raises(ValueError, match=r"both seen and unseen: \['b'\]"):
        ClassSplit(0, ("a", "b"), ("b",))
    with pytest.raises(ValueError, match="packaged: \\['digits', 'emoji', 'fashion_mnist', 'shapes'\\]"):
        class_splits("imagefolder")


# procedural shapes


def test_shapes_classes_and_descriptions(shapes):
    assert len(shapes.class_names) >= 200 and len(set(shapes.class_names)) == len(shapes.class_names)
    assert shapes.attributes("red striped star") == {"shape": "star", "colour": "red", "pattern": "striped"}
    with pytest.raises(ValueError, match="pattern in"):
        shapes.attributes("red plaid star")
    for name, texts in shapes.descriptions.items():
        assert len(texts) >= 3 and len(set(texts)) == len(texts), name
    all_texts = [t for texts in shapes.descriptions.values() for t in texts]
    assert len(set(all_texts)) == len(all_texts)
    assert len({t.split()[0] for t in all_texts}) >= 3  # word order varies, not one template


def test_shapes_render_deterministic_and_distinct(shapes):
    a = shapes.render(5, 8, seed=3)
    assert a.shape == (8, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, shapes.render(5, 8, seed=3))
    assert not np.array_equal(a, shapes.render(5, 8, seed=4))
    red = shapes.render(shapes.index("red solid circle"), 32).reshape(-1, 3).astype(float).mean(0)
    blue = shapes.render(shapes.index("blue solid circle"), 32).reshape(-1, 3).astype(float).mean(0)
    assert red[0] > red[2] + 20 and blue[2] > blue[0] + 20
    solid = shapes.render(shapes.index("white solid square"), 32).astype(float).mean()
    outlined = shapes.render(shapes.index("white outlined square"), 32).astype(float).mean()
    assert solid > outlined + 10


def test_shapes_render_speed(shapes):
    start = time.perf_counter()
    images = [shapes.render(c, 50) for c in range(len(shapes.class_names))]
    elapsed = time.perf_counter() - start
    assert sum(len(i) for i in images) == 50 * len(shapes.class_names)
    assert elapsed < 10, f"rendering 224 x 50 images took {elapsed:.1f} s"


def test_shapes_dataset_splits():
    train = load_dataset("shapes", "train", limit_per_class=3)
    test = load_dataset("shapes", "test", limit_per_class=3, img_size=16)
    assert train.images.shape == (3 * 224, 32, 32, 3) and test.images.shape == (3 * 224, 16, 16, 3)
    assert train.labels.bincount().tolist() == [3] * 224
    again = load_dataset("shapes", "test", limit_per_class=3)
    assert not torch.equal(train.images, again.images)  # train and test are different renderings


# backbone input


@pytest.fixture(scope="module")
def data_config() -> dict:
    model = timm.create_model("test_efficientnet", pretrained=False)
    return timm.data.resolve_data_config({}, model=model)


def _reference(images: torch.Tensor, config: dict, size: int) -> torch.Tensor:
    x = images.float() / 255
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    x = x.expand(-1, 3, -1, -1)
    mean, std = torch.tensor(config["mean"]).view(1, 3, 1, 1), torch.tensor(config["std"]).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.mark.parametrize(("shape", "size"), [((5, 28, 28), 64), ((4, 32, 32, 3), 16), ((3, 20, 24, 3), 48)])
def test_to_backbone_input_matches_reference(data_config, shape, size):
    images = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    out = to_backbone_input(images, data_config, size)
    assert out.shape == (shape[0], 3, size, size) and out.dtype == torch.float32
    torch.testing.assert_close(out, _reference(images, data_config, size), rtol=0, atol=1e-5)


def test_to_backbone_input_defaults_to_config_size_and_feeds_a_backbone(data_config):
    images = torch.randint(0, 256, (2, 28, 28), dtype=torch.uint8)
    assert to_backbone_input(images, data_config).shape == (2, 3, *data_config["input_size"][1:])
    model = timm.create_model("test_efficientnet", pretrained=False).eval()
    with torch.no_grad():
        assert model(to_backbone_input(images, data_config, 32)).shape == (2, model.num_classes)
    # an image already at the target size is only normalised
    same = to_backbone_input(images, data_config, 28)
    torch.testing.assert_close(same[:, 1], (images.float() / 255 - data_config["mean"][1]) / data_config["std"][1])


BAD_INPUTS = [
    (torch.zeros(2, 8, 8), {}, ValueError, "uint8"),
    (torch.zeros(2, 8, 8, 4, dtype=torch.uint8), {}, ValueError, r"\(N, H, W, 3\)"),
    (torch.zeros(1, 2, 8, 8, 3, dtype=torch.uint8), {}, ValueError, "got shape"),
    (torch.zeros(8, 8, dtype=torch.uint8), {}, ValueError, "got shape"),
    (np.zeros((2, 8, 8), dtype=np.uint8), {}, TypeError, "torch.Tensor"),
    (torch.zeros(2, 8, 8, dtype=torch.uint8), {"mean": None}, ValueError, "no 'mean'"),
    (torch.zeros(2, 8, 8, dtype=torch.uint8), {"std": (1.0, 0.0, 1.0)}, ValueError, "positive"),
]


@pytest.mark.parametrize(("images", "override", "error", "message"), BAD_INPUTS)
def test_to_backbone_input_rejects_bad_input(data_config, images, override, error, message):
    with pytest.raises(error, match=message):
        to_backbone_input(images, {**data_config, **override}, 16)


# image folders


def _write_folder(root: Path, descriptions: dict | None = None) -> None:
    """Three classes of PNG/JPEG images in assorted modes and sizes, plus a descriptions.yaml."""
    colours = {"apple": (255, 0, 0), "leaf": (0, 255, 0), "sky": (0, 0, 255)}
    for name, colour in colours.items():
        (root / name).mkdir(parents=True)
        Image.new("RGB", (30, 20), colour).save(root / name / "a.png")
        Image.new("RGB", (12, 40), colour).save(root / name / "b.jpg", quality=100)
        Image.new("RGBA", (16, 16), (*colour, 255)).save(root / name / "c.png")
        (root / name / "notes.txt").write_text("not an image")
    # wide image: blue | green | red thirds; a centre crop keeps only the green third
    stripes = np.zeros((10, 30, 3), dtype=np.uint8)
    stripes[:, :10, 2], stripes[:, 10:20, 1], stripes[:, 20:, 0] = 255, 255, 255
    Image.fromarray(stripes).convert("L").convert("RGB").save(root / "leaf" / "d.bmp")
    Image.fromarray(stripes).save(root / "leaf" / "e.png")
    texts = descriptions if descriptions is not None else {c: [f"something {c}-like", f"a {c}"] for c in colours}
    (root / "descriptions.yaml").write_text(yaml.safe_dump(texts))


def test_imagefolder_reads_images_and_descriptions(tmp_path):
    _write_folder(tmp_path)
    data = load_dataset("imagefolder", root=str(tmp_path), img_size=10)
    assert data.class_names == ["apple", "leaf", "sky"] and data.name == "imagefolder"
    assert data.images.shape == (11, 10, 10, 3) and data.labels.bincount().tolist() == [3, 5, 3]
    assert data.descriptions["sky"] == ["something sky-like", "a sky"]
    apple = data.images[data.labels == 0].int()
    assert (apple[..., 0] >= 250).all() and (apple[..., 1:] <= 5).all()  # resized solid red stays red
    centre = data.images[data.labels == 1][4].int()  # e.png: only the green middle third survives the crop
    assert (centre[..., 1] >= 250).all() and (centre[..., [0, 2]] <= 5).all()
    default = load_dataset("imagefolder", "test", root=tmp_path, descriptions=tmp_path / "descriptions.yaml")
    assert default.images.shape[1:] == (224, 224, 3)


def test_imagefolder_split_layout(tmp_path):
    _write_folder(tmp_path / "train")
    _write_folder(tmp_path / "test", {"apple": ["red"], "leaf": ["green"], "sky": ["blue"]})
    train = load_dataset("imagefolder", "train", root=tmp_path, img_size=8)
    test = load_dataset("imagefolder", "test", root=tmp_path, img_size=8)
    assert train.descriptions["apple"] == ["something apple-like", "a apple"] and test.descriptions["apple"] == ["red"]


def test_imagefolder_descriptions_must_match_folders(tmp_path):
    _write_folder(tmp_path, {"apple": ["red"], "leaf": ["green"], "moon": ["pale"]})
    with pytest.raises(ValueError, match=r"without descriptions: \['sky'\].*without a class: \['moon'\]"):
        load_dataset("imagefolder", root=tmp_path, img_size=8)
    (tmp_path / "descriptions.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="descriptions="):
        load_dataset("imagefolder", root=tmp_path, img_size=8)


def test_imagefolder_unreadable_image(tmp_path):
    _write_folder(tmp_path)
    bad = tmp_path / "sky" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(ValueError, match=r"unreadable image .*broken\.png"):
        load_dataset("imagefolder", root=tmp_path, img_size=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset("imagefolder", root=tmp_path, img_size=8, skip_bad=True)
    (warning,) = [w for w in caught if "broken.png" in str(w.message)]
    assert len(data) == 11 and warning.filename == __file__
    with pytest.raises(ValueError, match="does not take"):
        load_dataset("digits", skip_bad=True)


# episodes


def _labels() -> torch.Tensor:
    return torch.arange(6).repeat_interleave(torch.tensor([5, 9, 12, 3, 7, 10]))  # (46,) unequal class sizes


def test_episode_sampler_balance():
    labels = _labels()
    sampler = EpisodeSampler(labels, [0, 1, 2, 4, 5], k_way=4, batch_size=22, seed=0)
    for _ in range(20):
        classes, index = sampler.sample()
        assert classes.shape == (4,) and len(set(classes.tolist())) == 4 and set(classes.tolist()) <= {0, 1, 2, 4, 5}
        assert index.shape == (22,)
        counts = Counter(labels[index].tolist())
        assert set(counts) == set(classes.tolist()) and sorted(counts.values()) == [5, 5, 6, 6]
        sizes = labels.bincount()
        for c, n in counts.items():  # without replacement within an episode when the class has enough images
            picked = index[labels[index] == c].tolist()
            if n <= sizes[c]:
                assert len(set(picked)) == n, (c, picked)
    small = EpisodeSampler(labels, [3], k_way=1, batch_size=8).sample()[1]  # class 3 has 3 images: with replacement
    assert labels[small].tolist() == [3] * 8


def test_episode_sampler_determinism_and_resume():
    labels = _labels()
    a, b = (EpisodeSampler(labels, range(6), 3, 12, seed=7) for _ in range(2))
    for _ in range(3):
        assert all(torch.equal(x, y) for x, y in zip(a.sample(), b.sample(), strict=True))
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    expected = [a.sample() for _ in range(5)]
    resumed = EpisodeSampler(labels, range(6), 3, 12, seed=0)
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    for want, got in zip(expected, (resumed.sample() for _ in range(5)), strict=True):
        assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])
    assert resumed.episodes == a.episodes == 8
    other_seed = EpisodeSampler(labels, range(6), 3, 12, seed=8)
    assert not all(torch.equal(x, y) for x, y in zip(other_seed.sample(), b.sample(), strict=True))


def test_episode_sampler_errors():
    labels = _labels()
    with pytest.raises(ValueError, match="k_way=4 exceeds the 3 classes"):
        EpisodeSampler(labels, [0, 1, 2], k_way=4, batch_size=8)
    with pytest.raises(ValueError, match=r"classes without images: \[9\]"):
        EpisodeSampler(labels, [0, 9], k_way=2, batch_size=8)
    with pytest.raises(ValueError, match="batch_size=2 is below k_way=3"):
        EpisodeSampler(labels, [0, 1, 2], k_way=3, batch_size=2)
    state = EpisodeSampler(labels, [0, 1, 2], 2, 8).state_dict()
    with pytest.raises(ValueError, match=r"other \['classes'"):
        EpisodeSampler(labels, [0, 1, 3], 2, 8).load_state_dict(state)
