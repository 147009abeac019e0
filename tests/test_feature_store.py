"""The feature store: unaugmented pooled features kept by image content and shared between training runs. Each image
goes through the backbone once; what is read back is exactly what was computed; another backbone, input size or a
damaged file never serves stale features; and runs sharing a store train exactly as runs without one."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_training import TINY, _recipe, _weights

import lang2net
from lang2net.backbones import data_config, pooled_features
from lang2net.data import to_backbone_input
from lang2net.workflows.feature_bank import FeatureBank, FeatureStore
from lang2net.workflows.recipe import Recipe, load_recipe
from lang2net.workflows.training import train


@pytest.fixture(scope="module")
def backbone():
    adapter = lang2net.LanguageConditionedAdapter(Recipe.from_dict(TINY).adapter)
    return adapter.create_backbone(), data_config(adapter.create_backbone(), adapter.config.preprocessing)


class _Counter:
    """Counts the images that go through a backbone's forward pass (at its first convolution, the patch embedding)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.images = 0
        first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        self.handle = first.register_forward_pre_hook(self)

    def __call__(self, module, args) -> None:
        self.images += len(args[0])


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_each_image_goes_through_the_backbone_once(tmp_path, backbone):
    model, config = backbone
    store = FeatureStore(tmp_path / "store")
    first, new = _images(6, 0), _images(2, 1)
    expected = pooled_features(model, to_backbone_input(torch.cat([first, new]), config, 32))
    counter = _Counter(model)
    try:
        a = store.features(model, first, config, 32, batch_size=4, device=torch.device("cpu"))
        assert counter.images == 6
        assert torch.allclose(a, expected[:6], atol=1e-5)
        # a second set: three stored images (one twice) and two new ones; only the new ones are computed
        mixed = torch.cat([first[[4, 1, 4]], new])
        b = store.features(model, mixed, config, 32, batch_size=4, device=torch.device("cpu"))
        assert counter.images == 6 + 2
        assert torch.equal(b[:3], a[[4, 1, 4]])  # read back exactly as computed
        assert torch.allclose(b[3:], expected[6:], atol=1e-5)
        c = store.features(model, torch.cat([new, first]), config, 32, device=torch.device("cpu"))
        assert counter.images == 8 and torch.equal(c, torch.cat([b[3:], a]))
    finally:
        counter.handle.remove()
    (path,) = (tmp_path / "store").iterdir()
    stored = load_file(path)
    assert stored["keys"].shape == (8, 32) and stored["features"].shape == (8, a.shape[1])


def test_other_weights_sizes_and_settings_get_their_own_file(tmp_path, backbone):
    model, config = backbone
    store, device = FeatureStore(tmp_path), torch.device("cpu")
    images = _images(3, 0)
    base = store.path(model, config, 32, device)
    assert store.path(model, config, 32, device) == base
    assert store.path(model, config, 24, device) != base
    assert store.path(model, {**config, "mean": [0.0, 0.0, 0.0]}, 32, device) != base
    assert store.path(model, config, 32, torch.device("meta")) != base
    a = store.features(model, images, config, 32, device=device)
    other = lang2net.LanguageConditionedAdapter(Recipe.from_dict(TINY).adapter).create_backbone()
    with torch.no_grad():
        next(other.parameters()).add_(0.5)  # another backbone: its features are its own
    assert store.path(other, config, 32, device) != base
    b = store.features(other, images, config, 32, device=device)
    assert torch.allclose(b, pooled_features(other, to_backbone_input(images, config, 32)), atol=1e-5)
    assert not torch.allclose(a, b, atol=1e-3)
    assert len(list(tmp_path.iterdir())) == 2


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(b"not safetensors"),
        lambda path: save_file({"keys": torch.zeros(2, 32, dtype=torch.uint8), "features": torch.zeros(3, 4)}, path),
        lambda path: save_file({"keys": torch.zeros(2, 16, dtype=torch.uint8), "features": torch.zeros(2, 4)}, path),
    ],
    ids=["unreadable", "rows-disagree", "short-keys"],
)
def test_a_damaged_file_is_replaced_not_trusted(tmp_path, backbone, damage, caplog):
    model, config = backbone
    store, device, images = FeatureStore(tmp_path), torch.device("cpu"), _images(3, 0)
    path = store.path(model, config, 32, device)
    damage(path)
    with caplog.at_level(logging.WARNING, logger="lang2net.workflows.feature_bank"):
        features = store.features(model, images, config, 32, device=device)
    assert f"feature store file {path}" in caplog.text
    assert torch.allclose(features, pooled_features(model, to_backbone_input(images, config, 32)), atol=1e-5)
    assert torch.equal(store.features(model, images, config, 32, device=device), features)  # the file is good again
    assert not [p for p in tmp_path.iterdir() if p != path]  # no temporary file left behind


def test_a_bank_with_a_store_is_the_bank_without_one(tmp_path, backbone):
    model, config = backbone
    images = _images(5, 0)
    plain = FeatureBank.build(model, images, config, 32, views=3, augment=0.5, seed=0, batch_size=2)
    stored = FeatureBank.build(model, images, config, 32, views=3, augment=0.5, seed=0, batch_size=2, store=tmp_path)
    assert torch.allclose(stored.features[0], plain.features[0], atol=1e-5)
    assert torch.equal(stored.features[1:], plain.features[1:])  # the augmented views draw the same generator
    again = FeatureBank.build(model, images, config, 32, views=3, augment=0.5, seed=0, batch_size=2, store=tmp_path)
    assert torch.equal(again.features, stored.features)


def test_runs_sharing_a_store_train_exactly_as_without(tmp_path, caplog):
    """With the packaged EfficientNet-Lite0 (a random backbone would differ between head-only and delta runs, whose
    generators draw different numbers of initial weights first, and so would rightly get files of their own)."""
    real = {
        "backbone": "tf_efficientnet_lite0",
        "backbone_weights": "packaged:efficientnet_lite0",
        "backbone_kwargs": {},
    }
    recipe = load_recipe(_recipe(tmp_path, {**real, "feature_norm": "center"}, steps=3, feature_views=1))
    alone = train(recipe, tmp_path / "alone", head_only=True, progress=False)
    store = tmp_path / "features"
    with caplog.at_level(logging.INFO, logger="lang2net.workflows.feature_bank"):
        first = train(recipe, tmp_path / "first", head_only=True, progress=False, feature_store=store)
        second = train(recipe, tmp_path / "second", head_only=True, progress=False, feature_store=store)
        full = train(recipe, tmp_path / "full", progress=False, feature_store=store)  # centring statistics
    computed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("feature store")]
    assert len(computed) == 3 and " 0 of " not in computed[0]
    assert all(" 0 of " in line for line in computed[1:])  # the second run and the delta run read every image
    one, two = _weights(first.generator_dir), _weights(second.generator_dir)
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    reference = _weights(alone.generator_dir)
    assert all(torch.allclose(one[k], reference[k], atol=1e-4) for k in one)
    centred = _weights(full.generator_dir)  # the delta run's centring statistics: the same stored features
    for key in ("generator.head.feature_mean", "generator.head.feature_scale"):
        assert torch.equal(centred[key], one[key])
