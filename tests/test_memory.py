"""The head memory (AdapterConfig.memory): training-class prototypes recalled by text similarity, against a reference
implementation; a class never recalls itself; the emitted head stays one exact linear layer; strict save/load;
meta-training fills the memory from the training classes only, trains without it and picks its mix on validation."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import TEXT_DIM, assert_close, make_model, tiny_adapter
from safetensors.torch import load_file
from test_training import _recipe, _weights

from lang2net import AdapterConfig, LanguageConditionedAdapter, pooled_features
from lang2net.workflows.head_memory import MEMORY_BETAS, MEMORY_GATES
from lang2net.workflows.recipe import load_recipe
from lang2net.workflows.training import _Run, train


def _unit(c: int, width: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(c, width, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _memory_adapter(m: int = 6, seed: int = 0):
    """A centred test_resnet generator whose memory holds ``m`` classes of 3 images each; returns it, the memory's
    keys, and the features and labels it was filled from."""
    adapter = tiny_adapter("test_resnet", seed, delta_mode="core", d_model=64, feature_norm="center", memory=True)
    model = make_model("test_resnet")
    images = torch.randn(3 * m, *model.pretrained_cfg["input_size"], generator=torch.Generator().manual_seed(seed + 5))
    feats = pooled_features(model, images)
    labels = torch.arange(m).repeat_interleave(3)
    keys = _unit(m, TEXT_DIM, seed + 6)
    head = adapter.generator.head
    head.set_feature_statistics(feats)
    head.set_memory(keys, feats, labels)
    adapter.config.memory_size = m
    return adapter, model, keys, feats, labels


def _reference_weight(adapter, embeddings: torch.Tensor, keys, feats, labels) -> torch.Tensor:
    """s * normalize(normalize(mlp(code)) + gate * normalize(softmax(beta cos(e, k)) @ P)) / sigma,
    with P the per-class normalised mean of the unit centred features."""
    head = adapter.generator.head
    x = F.normalize((feats.double() - feats.double().mean(0)) / head.feature_scale.double(), dim=1)
    protos = F.normalize(torch.stack([x[labels == j].mean(0) for j in range(len(keys))]), dim=1).float()
    with torch.no_grad():
        codes, _ = adapter.generator.set_encoder(embeddings[None], torch.ones(1, len(embeddings), dtype=torch.bool))
        own = F.normalize(head.weight_mlp(codes[0]), dim=-1)
        sim = F.normalize(embeddings, dim=-1) @ F.normalize(keys, dim=-1).T
        attn = torch.softmax(head.memory_beta * sim, dim=-1)
        direction = F.normalize(own + head.memory_gate * F.normalize(attn @ protos, dim=-1), dim=-1)
    return direction * head.log_scale.exp() / head.feature_scale


def test_memory_head_equals_its_reference_and_is_one_exact_linear_layer(tmp_path):
    adapter, model, keys, feats, labels = _memory_adapter()
    new = _unit(4, TEXT_DIM, 11)  # classes the memory does not hold
    names = {f"c{i}": f"class {i}" for i in range(4)}
    before = adapter.generate(names, embeddings=new)  # gate 0 until a mix is chosen: the generated head alone
    plain = tiny_adapter("test_resnet", 0, delta_mode="core", d_model=64, feature_norm="center")
    plain.generator.load_state_dict(
        {k: v for k, v in adapter.generator.state_dict().items() if ".memory_" not in k}, strict=True
    )
    assert torch.equal(plain.generate(names, embeddings=new).head_weight, before.head_weight)
    adapter.generator.head.set_memory_mix(0.5, 5.5)
    task = adapter.generate({f"c{i}": f"class {i}" for i in range(4)}, embeddings=new)
    reference = _reference_weight(adapter, new, keys, feats, labels)
    assert_close(task.head_weight, reference, 1e-4, "memory head weight")  # float32 rounding of a ~100-norm head
    x = torch.randn(5, *model.pretrained_cfg["input_size"], generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        bound, merged = task.bind(model)(x), task.merge(copy.deepcopy(model))(x)
    assert_close(merged, bound, 1e-5, "merged vs bound")
    assert (before.head_weight - task.head_weight).abs().max() > 1e-3  # the recall moved the head
    adapter.save_pretrained(tmp_path / "gen")
    loaded = LanguageConditionedAdapter.from_pretrained(str(tmp_path / "gen"))
    assert loaded.config.memory and loaded.config.memory_size == len(keys)
    card = " ".join((tmp_path / "gen" / "README.md").read_text().split())
    assert f"also recalls {len(keys)} training classes' mean features by text similarity" in card
    assert torch.equal(loaded.generator.head.memory_values, adapter.generator.head.memory_values)
    assert (loaded.generator.head.memory_gate.item(), loaded.generator.head.memory_beta.item()) == (0.5, 5.5)
    again = loaded.generate({f"c{i}": f"class {i}" for i in range(4)}, embeddings=new)
    assert torch.equal(again.head_weight, task.head_weight) and torch.equal(again.head_bias, task.head_bias)


def test_a_training_class_recalls_its_own_prototype_continuously():
    """A class described exactly as a memory entry, or by a close paraphrase, recalls that entry's prototype most;
    the recall is the same attention for both (no special case at key equality)."""
    adapter, _, keys, feats, labels = _memory_adapter()
    head = adapter.generator.head
    head.set_memory_mix(2.0, 40.0)
    paraphrase = F.normalize(keys[2] + 0.05 * _unit(1, TEXT_DIM, 3)[0], dim=0)
    queries = torch.stack([keys[2], paraphrase, keys[4]])
    reference = _reference_weight(adapter, queries, keys, feats, labels)
    weight = adapter.generate({"a": "a", "b": "b", "c": "c"}, embeddings=queries).head_weight
    assert_close(weight, reference, 1e-4, "exact and paraphrased keys")
    with torch.no_grad():
        recalled = head.recall(queries[None])[0]
    cos = recalled @ head.memory_values.T  # (3, m): the recall's closeness to each prototype
    assert cos.argmax(1).tolist() == [2, 2, 4] and float(cos[0, 2]) > 0.9
    assert float((recalled[0] - recalled[1]).norm()) < 0.2  # a paraphrase recalls what the exact words recall


def test_memory_input_is_checked():
    with pytest.raises(ValueError, match=r"memory=True needs feature_norm='center'.*got feature_norm='none'"):
        AdapterConfig(memory=True)
    with pytest.raises(ValueError, match=r"memory_size=3 without memory=True"):
        AdapterConfig(memory_size=3, feature_norm="center")
    with pytest.raises(ValueError, match="memory_size must be an int >= 0, got -1"):
        AdapterConfig(memory=True, memory_size=-1, feature_norm="center")
    plain = tiny_adapter("test_resnet", feature_norm="center").generator.head
    with pytest.raises(ValueError, match="this head has no memory"):
        plain.set_memory(_unit(3, TEXT_DIM, 0), torch.randn(3, 8), torch.arange(3))
    adapter, *_ = _memory_adapter()
    head = adapter.generator.head
    width = head.feature_mean.shape[0]
    with pytest.raises(ValueError, match=rf"memory keys must be \(m >= 2, {TEXT_DIM}\) class embeddings, got \(3, 7\)"):
        head.set_memory(torch.randn(3, 7), torch.randn(3, width), torch.arange(3))
    with pytest.raises(
        ValueError, match=rf"memory features must be \(n, {width}\) with labels \(n,\), got \(4, {width}\)"
    ):
        head.set_memory(_unit(3, TEXT_DIM, 0), torch.randn(4, width), torch.arange(3))
    with pytest.raises(ValueError, match=r"rows without any: \[1\]"):
        head.set_memory(_unit(3, TEXT_DIM, 0), torch.randn(3, width), torch.tensor([0, 2, 2]))
    for gate, beta in ((-1.0, 10.0), (1.0, 0.0), (float("nan"), 1.0)):
        with pytest.raises(ValueError, match=r"memory mix needs finite gates >= 0 and beta > 0"):
            head.set_memory_mix(gate, beta)
    codes = torch.randn(1, 2, adapter.config.d_model)
    head(codes)  # gate 0: the recall is off and needs no embeddings
    head.set_memory_mix(1.0, 10.0)
    with pytest.raises(ValueError, match="pass the class embeddings"):
        head(codes)


def _split(tmp_path):
    path = tmp_path / "split.json"
    fold = {"fold": 0, "seen": list("01234567"), "unseen": ["8", "9"], "validation": ["6", "7"]}
    path.write_text(json.dumps({"version": 1, "folds": [fold]}))
    return str(path)


def _train_with_validation(tmp_path, adapter: dict):
    """A 4-step head-only run of the tiny recipe with ``adapter`` settings on a split with validation classes."""
    path = _recipe(tmp_path, adapter, steps=4, feature_views=1, checkpoint_every=2)
    data = yaml.safe_load(path.read_text())
    data["data"]["split_file"] = _split(tmp_path)
    path.write_text(yaml.safe_dump(data))
    recipe = load_recipe(path)
    return recipe, train(recipe, tmp_path / "run", head_only=True, progress=False)


def test_training_fills_the_memory_from_the_training_classes_and_picks_its_mix_on_validation(tmp_path):
    """The saved memory holds one entry per training class (keys: their embeddings as inference computes them;
    values: their images' unit centred mean directions); checkpoints keep the recall off (the head trains alone); the
    saved mix is the best of the grid on the validation classes, logged with its score."""
    recipe, result = _train_with_validation(tmp_path, {"feature_norm": "center", "memory": True})
    run = _Run(recipe, tmp_path / "again", 0, head_only=True)
    train_classes = run.data.seen
    assert sorted(run.data.validation) == [6, 7] and 6 not in train_classes
    saved = _weights(result.generator_dir)
    assert result.adapter.config.memory_size == len(train_classes) == 6
    assert torch.allclose(saved["generator.head.memory_keys"], F.normalize(run.prototypes(train_classes), dim=1))
    head = run.adapter.generator.head
    index = torch.nonzero(run.data.labels == train_classes[0]).flatten()
    x = (run.bank.plain(index).double() - head.feature_mean.double()) / head.feature_scale.double()
    expected = F.normalize(F.normalize(x, dim=1).mean(0), dim=0).float()
    assert torch.allclose(saved["generator.head.memory_values"][0], expected, atol=1e-5)
    for step in ("step_0000002", "step_0000004"):
        assert (
            load_file(tmp_path / "run" / "checkpoints" / step / "generator.safetensors")[
                "generator.head.memory_gate"
            ].item()
            == 0.0
        )
    mix = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert (saved["generator.head.memory_gate"].item(), saved["generator.head.memory_beta"].item()) == (
        mix["memory_gate"],
        mix["memory_beta"],
    )
    assert mix["memory_gate"] in MEMORY_GATES and mix["memory_beta"] in MEMORY_BETAS
    # the saved generator scores the validation classes as logged, and no grid point scores higher
    run.adapter.load_state_dict(load_file(result.generator_dir / "model.safetensors"), strict=True)
    assert run.validation_top1() == pytest.approx(mix["val_top1"])
    scores = []
    for gate in MEMORY_GATES:
        for beta in MEMORY_BETAS:
            run.adapter.generator.head.set_memory_mix(gate, beta)
            scores.append(run.validation_top1())
    assert max(scores) == pytest.approx(mix["val_top1"]) and scores[0] == pytest.approx(mix["without_memory"])


def test_a_mix_sweep_reuses_the_validation_features_under_the_deltas(tmp_path):
    """The memory calibration scores every mix on features computed once: under the deltas written for the validation
    task (which the mix does not change) they give the scores a full pass through the adapted backbone gives."""
    from lang2net.heads import head_logits

    recipe, _ = _train_with_validation(tmp_path, {"feature_norm": "center", "memory": True})
    run = _Run(recipe, tmp_path / "full", 0, head_only=False)
    adapter = run.adapter
    with torch.no_grad():  # deltas that change the features (a fresh generator writes zero deltas)
        for param in adapter.generator.deltas.parameters():
            param.add_(torch.randn_like(param) * 0.2)
    prototypes = run.prototypes(run.data.validation)
    x = torch.randn(3, 3, 32, 32)
    features = adapter.task_features(x, prototypes)
    _, weight, bias = adapter.generator(prototypes[None])
    assert torch.allclose(head_logits(features, weight[0], bias[0]), adapter(x, prototypes), atol=1e-5)
    plain = adapter.task_features(x, prototypes)
    adapter.generator.deltas = None  # the same generator without deltas reads the backbone as it is

    assert torch.allclose(adapter.task_features(x, prototypes), pooled_features(adapter.backbone, x))
    assert not torch.allclose(plain, pooled_features(adapter.backbone, x), atol=1e-3)
    run = _Run(recipe, tmp_path / "full2", 0, head_only=False)
    with torch.no_grad():
        for param in run.adapter.generator.deltas.parameters():
            param.add_(torch.randn_like(param, generator=torch.Generator().manual_seed(param.numel())) * 0.2)
    cache: dict = {}
    scores = []
    for gate, beta in [
        (0.0, MEMORY_BETAS[0]),
        (MEMORY_GATES[-1], MEMORY_BETAS[-1]),
        (MEMORY_GATES[1], MEMORY_BETAS[1]),
    ]:
        run.adapter.generator.head.set_memory_mix(gate, beta)
        scores.append(run.validation_top1(cache))
        assert scores[-1] == run.validation_top1()  # a full pass through the adapted backbone
    assert cache["features"].shape[1] == run.adapter.config.feature_dim
    with pytest.raises(RuntimeError, match=r"attach\(backbone\)"):
        LanguageConditionedAdapter(recipe.adapter).task_features(x, prototypes)
    with pytest.raises(ValueError, match=r"one task \(c, e\)"):
        run.adapter.task_features(x, prototypes[None])


def test_memory_needs_validation_classes(tmp_path):
    recipe = load_recipe(_recipe(tmp_path, {"feature_norm": "center", "memory": True}, steps=2))
    split = tmp_path / "split.json"  # the packaged digits folds name validation classes; this one has none
    split.write_text(json.dumps({"version": 1, "folds": [{"fold": 0, "seen": list("01234567"), "unseen": ["8", "9"]}]}))
    recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, split_file=str(split)))
    with pytest.raises(ValueError, match=r"adapter.memory chooses .* on validation classes, but this fold has none"):
        _Run(recipe, tmp_path / "run", 0, head_only=True)
