"""A short meta-training on a small emoji subset, end to end on the real icons (npm) and the packaged models:
split file, validation-based selection, evaluation on unseen classes above chance by a measured margin."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from lang2net.data import class_splits
from lang2net.workflows.evaluation import evaluate_fold
from lang2net.workflows.recipe import load_recipe
from lang2net.workflows.training import train

N_SEEN, N_VALIDATION, N_UNSEEN = 40, 8, 16


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    from _emoji_fixtures import _real_data_or_skip

    _real_data_or_skip()
    base = tmp_path_factory.mktemp("emoji-small")
    packaged = class_splits("emoji")[0]  # a slice of the shipped fold 0: seen stays seen, unseen stays unseen
    seen = list(packaged.train_classes[: N_SEEN - N_VALIDATION]) + list(packaged.validation[:N_VALIDATION])
    fold = {"fold": 0, "seen": seen, "validation": list(packaged.validation[:N_VALIDATION]),
            "unseen": list(packaged.unseen[:N_UNSEEN])}  # fmt: skip
    (base / "split.json").write_text(json.dumps({"version": 1, "folds": [fold]}))
    data = {
        "name": "emoji-small",
        "adapter": {"backbone": "tf_efficientnet_lite0", "backbone_weights": "packaged:efficientnet_lite0",
                    "d_model": 64, "n_heads": 2, "n_layers": 1, "rank": 4},
        "data": {"dataset": "emoji", "split_file": str(base / "split.json"), "img_size": 32},
        "train": {"steps": 80, "k_way": 16, "batch_size": 32, "warmup_steps": 8, "checkpoint_every": 20,
                  "log_every": 10, "augment": 0.5, "label_smoothing": 0.1},
        "eval": {"batch_size": 128},
    }  # fmt: skip
    (base / "recipe.yaml").write_text(yaml.safe_dump(data))
    return load_recipe(base / "recipe.yaml")


def test_full_generator_beats_chance_on_unseen_emoji(recipe, tmp_path):
    result = train(recipe, tmp_path / "full", progress=False)
    best = json.loads((tmp_path / "full" / "best" / "best.json").read_text())
    assert best["step"] in (20, 40, 60, 80)
    fold = evaluate_fold(recipe, 0, {"full": result.generator_dir})
    zsl = fold["methods"]["full"]["zsl"]
    assert fold["methods"]["chance"]["zsl"] == pytest.approx(1 / N_UNSEEN)
    print(f"emoji-small: full ZSL {zsl:.3f} on {N_UNSEEN} unseen classes (chance {1 / N_UNSEEN:.3f})")
    # measured on this project's CPU machine: 0.219 (3.5x chance) after 80 steps; asserting 2x chance leaves room
    # for the run-to-run drift of a different CPU or library build
    assert zsl >= 2.0 / N_UNSEEN, fold["methods"]


def test_head_memory_generator_beats_chance_on_unseen_emoji(recipe, tmp_path):
    """A head-only generator with a head memory (AdapterConfig.memory), its mix chosen on the validation classes."""
    adapter = dataclasses.replace(recipe.adapter, feature_norm="center", memory=True, delta_mode="none")
    train_cfg = dataclasses.replace(recipe.train, augment=0.0, feature_views=1)
    result = train(
        dataclasses.replace(recipe, adapter=adapter, train=train_cfg), tmp_path / "m", head_only=True, progress=False
    )
    mix = json.loads((tmp_path / "m" / "metrics.jsonl").read_text().splitlines()[-1])
    assert result.adapter.config.memory_size == N_SEEN - N_VALIDATION
    fold = evaluate_fold(recipe, 0, {"head_only": result.generator_dir})
    zsl = fold["methods"]["head_only"]["zsl"]
    print(f"emoji-small: head-only with memory ZSL {zsl:.3f} (mix {mix}; chance {1 / N_UNSEEN:.3f})")
    assert zsl >= 2.0 / N_UNSEEN, fold["methods"]
