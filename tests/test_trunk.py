"""Cutting a backbone into a frozen trunk and the rest (train.trunk_cache), and neighbour episodes (train.episodes):
the cut is exact with and without deltas, a delta run on cached trunk activations trains the same generator as one
that runs the whole backbone, and neighbour episodes hold an anchor and its nearest classes."""

from __future__ import annotations

import json

import pytest
import torch
from test_training import _recipe, _weights

import lang2net
from lang2net.backbones import create_backbone, pooled_features, split_backbone
from lang2net.data import EpisodeSampler
from lang2net.workflows.recipe import load_recipe
from lang2net.workflows.training import _Run, train

LATE = {"backbone": "test_efficientnet", "targets": r"blocks\.[34]\..*\.conv_pw.*|conv_head", "backbone_kwargs": {}}


@pytest.mark.parametrize(
    ("name", "targets", "at"),
    [
        ("test_efficientnet", ["conv_head"], "conv_head"),
        ("test_efficientnet", ["blocks.4.0.conv_pwl", "blocks.2.0.conv_pwl"], "blocks.2.0"),
        ("test_resnet", ["layer4.0.conv2", "layer3.0.conv1"], "layer3.0"),
    ],
)
def test_the_rest_of_the_trunk_is_the_backbone_bit_for_bit(name, targets, at):
    torch.manual_seed(0)
    # a random ResNet zero-initialises each block's last norm, which would hide deltas inside the blocks
    backbone = create_backbone(name, **({"zero_init_last": False} if "resnet" in name else {}))
    split = split_backbone(backbone, targets)
    assert split.at == at
    x = torch.randn(3, 3, 64, 64)
    trunk = split.trunk(x)
    assert torch.equal(split.rest(trunk), pooled_features(backbone, x))
    inj = lang2net.inject(backbone, targets=targets, rank=2)
    deltas = inj.init_deltas("random", seed=1)
    with inj.apply(deltas, strategy="activation"):  # the rest carries the hooks: deltas apply after the cut
        adapted = pooled_features(backbone, x)
        assert torch.equal(split.rest(split.trunk(x)), adapted)
        assert torch.equal(split.trunk(x), trunk)  # and nothing before it is adapted
    assert not torch.allclose(adapted, pooled_features(backbone, x))


def test_split_refuses_what_it_cannot_cut():
    with pytest.raises(ValueError, match=r"VisionTransformer cannot be split.*EfficientNet and ResNet"):
        split_backbone(create_backbone("test_vit"), ["blocks.0.attn.qkv"])
    with pytest.raises(ValueError, match=r"'head\.fc' lies in none of EfficientNet's steps"):
        split_backbone(create_backbone("test_efficientnet"), ["conv_head", "head.fc"])
    with pytest.raises(ValueError, match="no modules given"):
        split_backbone(create_backbone("test_efficientnet"), [])


def _losses(folder):
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["loss"] for x in lines if '"loss"' in x]


def test_a_delta_run_on_cached_trunk_activations_trains_the_same_generator(tmp_path):
    cached = load_recipe(_recipe(tmp_path, LATE, steps=4, trunk_cache=True))
    run = _Run(cached, tmp_path / "probe", 0, head_only=False)
    assert run.split is not None and run.split.at == "blocks.3.0"
    seen = torch.isin(run.data.labels, torch.tensor(run.data.seen))
    assert run.trunk[~seen].abs().sum() == 0 and run.trunk[seen].abs().sum() > 0  # only images episodes can draw
    fast = train(cached, tmp_path / "trunk", progress=False)
    slow = train(load_recipe(_recipe(tmp_path, LATE, steps=4, trunk_cache=False)), tmp_path / "full", progress=False)
    a, b = _weights(fast.generator_dir), _weights(slow.generator_dir)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)
    assert _losses(tmp_path / "trunk") == pytest.approx(_losses(tmp_path / "full"), rel=1e-5)
    train(cached, tmp_path / "resumed", progress=False, stop_after=3)  # checkpoint at step 3, then resume
    resumed = _weights(train(cached, tmp_path / "resumed", progress=False).generator_dir)
    assert all(torch.equal(a[k], resumed[k]) for k in a), "resume must be exact"


def test_a_backbone_that_cannot_be_cut_trains_on_images(tmp_path):
    run = _Run(load_recipe(_recipe(tmp_path, steps=2)), tmp_path / "vit", 0, head_only=False)  # test_vit
    assert run.split is None and run.trunk is None
    images, _, _ = run.episode()
    assert images.shape[1:] == (3, 32, 32)


def test_neighbour_episodes_hold_an_anchor_and_its_neighbours_and_resume_exactly():
    labels = torch.arange(12).repeat(2)
    classes = list(range(12))
    neighbours = torch.tensor([[(i + d) % 12 for d in (1, 2, 3, 4)] for i in range(12)])
    sampler = EpisodeSampler(labels, classes, 3, 6, seed=0, neighbours=neighbours)
    anchors = set()
    for _ in range(50):
        picked, index = sampler.sample()
        picked = sorted(picked.tolist())
        # some class of the episode has every other one among its neighbours: the anchor
        anchor = [c for c in picked if set(picked) - {c} <= set(neighbours[c].tolist())]
        assert anchor and len(set(picked)) == 3 and sorted(set(labels[index].tolist())) == picked
        anchors.update(anchor)
    assert len(anchors) >= 8  # anchors are drawn over all classes
    state = sampler.state_dict()
    again = EpisodeSampler(labels, classes, 3, 6, seed=9, neighbours=neighbours)
    again.load_state_dict(state)
    assert all(torch.equal(sampler.sample()[1], again.sample()[1]) for _ in range(5))
    plain = EpisodeSampler(labels, classes, 3, 6, seed=0)
    with pytest.raises(ValueError, match=r"other \['neighbours'\]"):
        plain.load_state_dict(state)


@pytest.mark.parametrize(
    ("table", "match"),
    [
        (torch.zeros(12, 1, dtype=torch.long), r"integer \(12, m\) tensor with 2 <= m < 12"),
        (torch.zeros(5, 3, dtype=torch.long), r"integer \(12, m\)"),
        (torch.zeros(12, 3), r"integer \(12, m\)"),
        (torch.arange(12)[:, None].repeat(1, 3), "none of them the class's own"),
        (torch.full((12, 3), 12), "positions in classes"),
        (torch.tensor([[(i + 1) % 12] * 3 for i in range(12)]), "must not repeat"),
    ],
)
def test_bad_neighbour_tables_are_refused(table, match):
    with pytest.raises(ValueError, match=match):
        EpisodeSampler(torch.arange(12), list(range(12)), 3, 6, neighbours=table)


def test_neighbour_episodes_in_training_are_the_nearest_classes_by_description(tmp_path):
    recipe = load_recipe(_recipe(tmp_path, steps=2, episodes="neighbours", k_way=3))
    run = _Run(recipe, tmp_path / "nb", 0, head_only=True)
    text = torch.nn.functional.normalize(run.prototypes(run.data.seen), dim=-1)
    similarity = text @ text.T
    table = run.sampler.neighbours
    assert table.shape == (len(run.data.seen), 4)
    for i, row in enumerate(table.tolist()):
        others = [j for j in range(len(run.data.seen)) if j != i]
        best = sorted(others, key=lambda j: -float(similarity[i, j]))[:4]
        assert sorted(float(similarity[i, j]) for j in row) == pytest.approx(
            sorted(float(similarity[i, j]) for j in best)
        )
    with pytest.raises(ValueError, match=r"train.episodes must be one of \('random', 'neighbours'\), got 'hard'"):
        load_recipe(_recipe(tmp_path, episodes="hard"))
