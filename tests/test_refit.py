"""``train.refit``: after the checkpoint and the memory mix are chosen on the validation classes, one more run from the
start on training + validation classes, for the chosen steps, with the chosen mix (real digits, tiny backbone)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_training import _recipe

from lang2net.workflows.recipe import TrainConfig, load_recipe
from lang2net.workflows.refit import chosen_settings, fit, refit_recipe
from lang2net.workflows.training import _Run, train


def _memory_recipe(tmp_path, **train):
    path = _recipe(
        tmp_path,
        {"feature_norm": "center", "memory": True},
        steps=6,
        feature_views=1,
        checkpoint_every=2,
        refit=True,
        **train,
    )
    data = yaml.safe_load(path.read_text())
    split = tmp_path / "split.json"
    fold = {"fold": 0, "seen": list("01234567"), "unseen": ["8", "9"], "validation": ["6", "7"]}
    split.write_text(json.dumps({"version": 1, "folds": [fold]}))
    data["data"]["split_file"] = str(split)
    path.write_text(yaml.safe_dump(data))
    return load_recipe(path)


def test_refit_equals_a_run_on_every_seen_class_for_the_chosen_steps_with_the_chosen_mix(tmp_path):
    recipe = _memory_recipe(tmp_path)
    selected, refit = fit(recipe, tmp_path / "run", head_only=True, progress=False)
    assert (selected, refit) == (tmp_path / "run" / "generator", tmp_path / "run" / "refit" / "generator")
    best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    mix = lines[-1]
    assert chosen_settings(recipe, tmp_path / "run") == (best["step"], [mix["memory_gate"], mix["memory_beta"]])

    # the reference: the same training written out by hand, validation classes moved into the training classes
    split = tmp_path / "all_seen.json"
    split.write_text(json.dumps({"version": 1, "folds": [{"fold": 0, "seen": list("01234567"), "unseen": ["8", "9"]}]}))
    train_cfg = dataclasses.replace(
        recipe.train,
        steps=best["step"],
        warmup_steps=min(recipe.train.warmup_steps, best["step"] - 1),
        checkpoint_every=min(2, best["step"]),
        select_on_validation=False,
        refit=False,
        memory_mix=[mix["memory_gate"], mix["memory_beta"]],
    )
    data = dataclasses.replace(recipe.data, split_file=str(split))
    by_hand = train(
        dataclasses.replace(recipe, train=train_cfg, data=data), tmp_path / "by_hand", head_only=True, progress=False
    )
    got, want = load_file(refit / "model.safetensors"), load_file(by_hand.generator_dir / "model.safetensors")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    assert (got["generator.head.memory_gate"].item(), got["generator.head.memory_beta"].item()) == (
        mix["memory_gate"],
        mix["memory_beta"],
    )
    # every seen class is drawn in episodes and held in the memory; nothing is left to validate on
    run = _Run(refit_recipe(recipe, tmp_path / "run", 0), tmp_path / "probe", 0, head_only=True)
    assert sorted(run.data.seen) == list(range(8)) and run.data.validation == []
    assert got["generator.head.memory_keys"].shape[0] == 8
    assert load_file(selected / "model.safetensors")["generator.head.memory_keys"].shape[0] == 6
    refit_lines = [json.loads(x) for x in (tmp_path / "run" / "refit" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in refit_lines if "loss" in x] == list(range(1, best["step"] + 1))
    assert not any("val_top1" in x and "memory_gate" not in x for x in refit_lines)  # no checkpoint was scored


def test_without_refit_fit_is_train(tmp_path):
    recipe = _memory_recipe(tmp_path)
    recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, refit=False))
    selected, refit = fit(recipe, tmp_path / "run", head_only=True, progress=False)
    assert refit is None and not (tmp_path / "run" / "refit").exists()
    reference = train(recipe, tmp_path / "ref", head_only=True, progress=False).generator_dir
    got, want = load_file(selected / "model.safetensors"), load_file(reference / "model.safetensors")
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_refit_refuses_what_it_cannot_do(tmp_path):
    recipe = _memory_recipe(tmp_path)
    with pytest.raises(FileNotFoundError, match="holds no finished run"):
        refit_recipe(recipe, tmp_path / "nothing", 0)
    split = tmp_path / "no_validation.json"
    split.write_text(json.dumps({"version": 1, "folds": [{"fold": 0, "seen": list("01234567"), "unseen": ["8", "9"]}]}))
    bare = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, split_file=str(split)))
    with pytest.raises(ValueError, match=r"train\.refit needs validation classes to fold back in; fold 0 has none"):
        refit_recipe(bare, tmp_path / "nothing", 0)


@pytest.mark.parametrize(
    "bad",
    [[1.0], [-1.0, 10.0], [1.0, 0.0], [float("nan"), 1.0], ["a", 1.0], [True, 1.0], [1.0, 10.0, float("inf")]],
)
def test_memory_mix_is_checked(bad):
    with pytest.raises(
        ValueError, match=r"train.memory_mix must be \[gate >= 0, beta > 0\], \[gate, beta, classifier_gate"
    ):
        TrainConfig(memory_mix=bad)
