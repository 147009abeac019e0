"""Meta-training and evaluation end to end on real data (digits) with a tiny backbone: train, save, reload, evaluate,
resume exactly, stop on non-finite loss, run data-parallel on 2 CPU processes, refuse bad input before training."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import lang2net
from lang2net.workflows.evaluation import evaluate_fold, write_report
from lang2net.workflows.recipe import Recipe, load_recipe
from lang2net.workflows.training import TrainingDiverged, train

TINY = {
    "name": "tiny-digits",
    "adapter": {
        "backbone": "test_vit",
        "backbone_weights": "random",
        "backbone_kwargs": {"img_size": 32},
        "d_model": 32,
        "n_heads": 2,
        "n_layers": 1,
    },
    "data": {"dataset": "digits", "img_size": 32, "limit_per_class": 40, "test_limit_per_class": 20},
    "train": {"steps": 6, "k_way": 4, "batch_size": 16, "warmup_steps": 2, "checkpoint_every": 3, "log_every": 1},
    "eval": {"batch_size": 128},
}


def _recipe(tmp_path: Path, adapter: dict | None = None, **train) -> Path:
    data = json.loads(json.dumps(TINY))
    data["train"].update(train)
    data["adapter"].update(adapter or {})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_train_save_reload_and_evaluate_above_chance(tmp_path):
    """The real packaged EfficientNet-Lite0 (ImageNet weights) at 32 px: fast, and its features carry the digits."""
    real_backbone = {
        "backbone": "tf_efficientnet_lite0",
        "backbone_weights": "packaged:efficientnet_lite0",
        "backbone_kwargs": {},
    }
    recipe = load_recipe(_recipe(tmp_path, real_backbone, steps=40, lr=1e-3))
    full = train(recipe, tmp_path / "full", progress=False)
    head = train(recipe, tmp_path / "head", head_only=True, progress=False)
    assert full.steps == 40 and (full.generator_dir / "config.json").is_file()
    reloaded = lang2net.LanguageConditionedAdapter.from_pretrained(str(full.generator_dir))
    assert all(torch.equal(v, full.adapter.state_dict()[k]) for k, v in reloaded.state_dict().items())
    assert (
        reloaded.config.delta_mode == "core"
        and lang2net.LanguageConditionedAdapter.from_pretrained(str(head.generator_dir)).config.delta_mode == "none"
    )
    lines = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "loss" in x]  # the others: validation scores at checkpoints (digits has 2 classes)
    assert [x["step"] for x in steps] == list(range(1, 41)) and all(x["loss"] > 0 for x in steps)
    assert [x["step"] for x in lines if "val_top1" in x and "memory_gate" not in x] == [*range(3, 40, 3), 40]
    result = evaluate_fold(recipe, 0, {"head_only": head.generator_dir, "full": full.generator_dir})
    methods = result["methods"]
    assert set(methods) == {"chance", "text_similarity", "head_only", "full"}
    assert methods["chance"]["zsl"] == 0.5 and methods["chance"]["gzsl_seen"] == 0.1
    assert methods["chance"]["gzsl_ausuc"] == 1 / (2 * 8 * 2)
    for name in ("head_only", "full"):  # seen classes were trained on: well above the 1-in-10 chance
        assert methods[name]["gzsl_seen"] > 0.25, (name, methods[name])
        m = methods[name]  # the reported numbers are the ones their parts give
        assert m["zsl"] == pytest.approx(sum(m["zsl_per_class"].values()) / 2) and len(m["zsl_per_class"]) == 2
        assert m["gzsl_h"] == pytest.approx(2 * m["gzsl_seen"] * m["gzsl_unseen"] / (m["gzsl_seen"] + m["gzsl_unseen"]))
        # the seen-unseen curve passes through the uncalibrated point, so its area holds that point's rectangle
        assert m["gzsl_seen"] * m["gzsl_unseen"] - 1e-9 <= m["gzsl_ausuc"] < 1
    payload = write_report([result], tmp_path / "report", "tiny")
    assert payload["summary"]["full"]["zsl"]["mean"] == methods["full"]["zsl"]
    assert (tmp_path / "report" / "results.md").read_text().count("|") > 20
    assert (tmp_path / "report" / "per_class_full.png").stat().st_size > 1000


def test_resume_gives_the_same_generator_as_an_uninterrupted_run(tmp_path):
    recipe = load_recipe(_recipe(tmp_path, steps=6))
    straight = train(recipe, tmp_path / "straight", progress=False)
    first = train(recipe, tmp_path / "resumed", progress=False, stop_after=3)
    assert first.generator_dir is None and first.steps == 3
    second = train(recipe, tmp_path / "resumed", progress=False)
    assert second.steps == 6
    a, b = _weights(straight.generator_dir), _weights(second.generator_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resume must be exact"
    kept = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir())
    assert kept == ["step_0000003", "step_0000006"]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    recipe = load_recipe(_recipe(tmp_path, steps=8))
    import lang2net.workflows.training as training

    real, calls = training.F.cross_entropy, {"n": 0}

    def poisoned(logits, targets, **kwargs):
        calls["n"] += 1
        loss = real(logits, targets, **kwargs)
        return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(training.F, "cross_entropy", poisoned)
    with pytest.raises(TrainingDiverged, match=r"non-finite loss at step 5.*step_0000003"):
        train(recipe, tmp_path / "run", progress=False)
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step_0000003"]
    assert not (tmp_path / "run" / "generator").exists()


def test_two_cpu_processes_hold_identical_generators(tmp_path):
    """Data-parallel on 2 processes (gloo), launched like a user would: torchrun on the training entry point."""
    worker = tmp_path / "worker.py"
    worker.write_text(
        "import sys\n"
        "import torch.distributed as dist\n"
        "from safetensors.torch import save_file\n"
        "from lang2net.workflows.recipe import load_recipe\n"
        "from lang2net.workflows.training import train\n"
        "res = train(load_recipe(sys.argv[1]), sys.argv[2], progress=False)\n"
        "rank = dist.get_rank()\n"
        "state = {k: v.contiguous() for k, v in res.adapter.state_dict().items()}\n"
        "save_file(state, f'{sys.argv[2]}/final_rank{rank}.safetensors')\n"
        "sys.stdout.write(f'world {dist.get_world_size()}\\n')  # one write: the ranks share the pipe\n"
    )
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        str(worker),
        str(_recipe(tmp_path)),
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("world 2") == 2
    ranks = [load_file(out / f"final_rank{r}.safetensors") for r in (0, 1)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    init = lang2net.LanguageConditionedAdapter(Recipe.from_dict(TINY).adapter)
    assert any(not torch.equal(v, ranks[0][k]) for k, v in init.state_dict().items()), "weights must have trained"


def test_bad_input_fails_before_training_starts(tmp_path):
    bad = json.loads(json.dumps(TINY))
    bad["train"]["epochs"] = 3
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match=r"unknown keys \['epochs'\] in train"):
        load_recipe(tmp_path / "bad.yaml")
    (tmp_path / "broken.yaml").write_text("name: x\ntrain: [1, 2\n")
    with pytest.raises(ValueError, match="does not parse at line"):
        load_recipe(tmp_path / "broken.yaml")
    recipe = load_recipe(_recipe(tmp_path))
    with pytest.raises(ValueError, match="fold 9 does not exist"):
        train(recipe, tmp_path / "run_fold", fold=9, progress=False)
    recipe.train.k_way = 9
    with pytest.raises(ValueError, match="k_way=9 exceeds the 6 training classes"):
        train(recipe, tmp_path / "run_k", progress=False)
    assert not (tmp_path / "run_fold" / "checkpoints").exists() and not (tmp_path / "run_k" / "checkpoints").exists()
    with pytest.raises(ValueError, match="k_way must be at least 2"):
        Recipe.from_dict({**TINY, "train": {**TINY["train"], "k_way": 1}})
    with pytest.raises(FileNotFoundError, match="recipe not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_published_recipes_parse():
    folder = Path(__file__).resolve().parents[1] / "hub_configs"
    recipes = sorted(folder.glob("*.yaml"))
    assert len(recipes) >= 3
    for path in recipes:
        recipe = load_recipe(path)
        assert recipe.name == path.stem and recipe.adapter.backbone_weights.startswith("packaged:")


def test_head_only_on_a_feature_bank_matches_reading_images_when_nothing_is_augmented(tmp_path):
    """No augmentation: one view, the plain images' features, so the bank path is the image path minus the backbone."""
    images = train(load_recipe(_recipe(tmp_path, steps=6)), tmp_path / "images", head_only=True, progress=False)
    banked = train(
        load_recipe(_recipe(tmp_path, steps=6, feature_views=4)), tmp_path / "bank", head_only=True, progress=False
    )
    a, b = _weights(images.generator_dir), _weights(banked.generator_dir)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)
    losses = [
        [json.loads(x)["loss"] for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
        for r in ("images", "bank")
    ]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_feature_bank_runs_resume_exactly_and_draw_augmented_views(tmp_path):
    recipe = load_recipe(_recipe(tmp_path, steps=6, augment=0.5, feature_views=3))
    straight = train(recipe, tmp_path / "straight", head_only=True, progress=False)
    train(recipe, tmp_path / "resumed", head_only=True, progress=False, stop_after=3)
    second = train(recipe, tmp_path / "resumed", head_only=True, progress=False)
    a, b = _weights(straight.generator_dir), _weights(second.generator_dir)
    assert all(torch.equal(a[k], b[k]) for k in a), "resume must be exact"
    plain = train(
        load_recipe(_recipe(tmp_path, steps=6, augment=0.5)), tmp_path / "plain", head_only=True, progress=False
    )
    c = _weights(plain.generator_dir)
    assert any(not torch.allclose(a[k], c[k]) for k in a)  # augmented views are really drawn


def test_feature_bank_views(tmp_path):
    from lang2net.backbones import data_config, pooled_features
    from lang2net.data import to_backbone_input
    from lang2net.workflows.feature_bank import FeatureBank

    adapter = lang2net.LanguageConditionedAdapter(Recipe.from_dict(TINY).adapter)
    backbone = adapter.create_backbone()
    images = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8)
    config = data_config(backbone, adapter.config.preprocessing)
    bank = FeatureBank.build(backbone, images, config, 32, views=3, augment=0.5, seed=0, batch_size=2)
    assert bank.features.shape == (3, 5, adapter.config.feature_dim)
    expected = pooled_features(backbone, to_backbone_input(images, config, 32))
    assert torch.allclose(bank.plain(torch.arange(5)), expected, atol=1e-5)
    assert (bank.features[1] - bank.features[0]).abs().amax(1).min() > 1e-3  # every augmented view differs
    again = FeatureBank.build(backbone, images, config, 32, views=3, augment=0.5, seed=0, batch_size=2)
    assert torch.equal(again.features, bank.features)  # seeded: the same bank on every run and resume
    assert FeatureBank.build(backbone, images, config, 32, views=3, augment=0.0, seed=0).views == 1
    taken = bank.take(torch.zeros(8, dtype=torch.long), torch.Generator().manual_seed(1))  # image 0, 8 times
    drawn = (taken[:, None] == bank.features[None, :, 0]).all(-1)  # (8, views): which view each row is
    assert drawn.sum(1).tolist() == [1] * 8 and drawn.any(0).sum() > 1


def test_pooled_features_are_only_for_head_only_generators():
    config = Recipe.from_dict(TINY).adapter
    full = lang2net.LanguageConditionedAdapter(config)
    emb = torch.randn(3, full.config.text_dim)
    with pytest.raises(ValueError, match="delta_mode='none'"):
        full(torch.randn(4, full.config.feature_dim), emb, pooled=True)
    import dataclasses

    head = lang2net.LanguageConditionedAdapter(dataclasses.replace(config, delta_mode="none"))
    with pytest.raises(ValueError, match=rf"\(b, {head.config.feature_dim}\)"):
        head(torch.randn(4, 7), emb, pooled=True)
    backbone = head.create_backbone()
    head.attach(backbone)
    x = torch.randn(4, 3, 32, 32)
    from lang2net.backbones import pooled_features

    assert torch.allclose(head(pooled_features(backbone, x), emb, pooled=True), head(x, emb), atol=1e-5)


def test_recipe_overrides_apply_validate_and_name_bad_keys(tmp_path):
    from lang2net.workflows.recipe import override_recipe

    recipe = load_recipe(_recipe(tmp_path))
    changed = override_recipe(recipe, ["train.k_way=3", "adapter.rank=4", "eval.generators={head_only: [0]}"])
    assert (changed.train.k_way, changed.adapter.rank, changed.eval.generators) == (3, 4, {"head_only": [0]})
    assert recipe.train.k_way == 4  # the original is untouched
    for bad, message in (
        ("train.kway=3", r"train has no key 'kway'.*'k_way'"),
        ("model.rank=3", r"unknown section 'model'.*'adapter'"),
        ("train.k_way", r"not section.key=value"),
        ("train.k_way=1", r"k_way must be at least 2"),
        ("train.k_way=[", r"does not parse as YAML"),
        ("train.paraphrases=all", r"train.paraphrases must be one of \('sample', 'mean'\), got 'all'"),
        ("train.feature_views=-1", r"train.feature_views"),
    ):
        with pytest.raises(ValueError, match=message):
            override_recipe(recipe, [bad])


@pytest.mark.parametrize("mode", ["mean", "sample"])
def test_episodes_describe_classes_by_one_paraphrase_or_their_mean(tmp_path, mode):
    """``train.paraphrases: mean`` gives each class as a generated task sees it (its descriptions' mean embedding)."""
    from lang2net.data import EpisodeSampler
    from lang2net.workflows.training import _Run

    run = _Run(load_recipe(_recipe(tmp_path, paraphrases=mode)), tmp_path / "run", 0, head_only=True)
    twin = EpisodeSampler(run.data.labels, run.data.seen, 4, 16, seed=0)  # the run's sampler, same seed
    classes = twin.sample()[0].tolist()
    _, embeddings, _ = run.episode()
    paraphrases = [run.data.paraphrases[c] for c in classes]
    means = torch.nn.functional.normalize(torch.stack([p.mean(0) for p in paraphrases]), dim=-1)
    assert all(len(p) > 1 for p in paraphrases)  # digits describe each class several ways
    if mode == "mean":
        assert torch.allclose(embeddings, means, atol=1e-6)
    else:  # every row is one of its class's own paraphrases, not their mean
        assert all((p == row).all(-1).any() for p, row in zip(paraphrases, embeddings, strict=True))
        assert not torch.allclose(embeddings, means, atol=1e-3)


def test_a_centring_head_records_the_training_classes_feature_statistics(tmp_path):
    """feature_norm="center": the saved mean and scale are those of the frozen backbone's features of the training
    classes' images (no validation or unseen class), the same on the image path and on a feature bank."""
    from lang2net.backbones import pooled_features
    from lang2net.data import to_backbone_input
    from lang2net.workflows.episode_data import prepare_episode_data

    recipe = load_recipe(_recipe(tmp_path, {"feature_norm": "center"}, steps=3))
    images = train(recipe, tmp_path / "images", head_only=True, progress=False)
    banked = train(
        load_recipe(_recipe(tmp_path, {"feature_norm": "center"}, steps=3, feature_views=1)),
        tmp_path / "bank",
        head_only=True,
        progress=False,
    )
    torch.manual_seed(recipe.train.seed)  # the random test backbone, drawn as a head-only run draws it
    adapter = lang2net.LanguageConditionedAdapter(dataclasses.replace(recipe.adapter, delta_mode="none"))
    backbone = adapter.create_backbone()
    data = prepare_episode_data(recipe, adapter, backbone, 0)
    keep = torch.isin(data.labels, torch.tensor(data.seen))
    assert 0 < int(keep.sum()) < len(keep)  # the fold's other classes are left out
    with torch.no_grad():
        feats = pooled_features(backbone, to_backbone_input(data.images[keep], data.data_config, data.img_size))
    mean = feats.double().mean(0)
    scale = (feats.double() - mean).norm(dim=1).mean()
    for run in (images, banked):
        saved = _weights(run.generator_dir)
        assert torch.allclose(saved["generator.head.feature_mean"], mean.float(), atol=1e-5)
        assert saved["generator.head.feature_scale"].item() == pytest.approx(scale.item(), rel=1e-5)
