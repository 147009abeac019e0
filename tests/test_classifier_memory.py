"""The classifier memory (AdapterConfig.classifier_memory): the backbone's own ImageNet classifier rows recalled by the
similarity of their label texts, against a reference implementation, alone and with the training-class memory; the
emitted head stays one exact linear layer; strict save/load; meta-training fills it from the real backbone's
classifier and the real text encoder, chooses its gate with the rest of the mix on validation classes, and a refit
takes that mix."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import TEXT_DIM, assert_close, make_model, tiny_adapter
from test_memory import _memory_adapter, _train_with_validation, _unit
from test_training import _weights

from lang2net import AdapterConfig, LanguageConditionedAdapter
from lang2net.backbones import imagenet_classifier
from lang2net.workflows.head_memory import CLASSIFIER_GATES, MEMORY_BETAS, MEMORY_GATES, calibrate_memory
from lang2net.workflows.recipe import TrainConfig
from lang2net.workflows.refit import chosen_settings, refit_recipe
from lang2net.workflows.training import _Run


def _rows(k: int, width: int, seed: int) -> torch.Tensor:
    """A classifier weight: rows of different norms (only their directions may matter)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, width, generator=g) * torch.rand(k, 1, generator=g).add(0.5)


def _both_memories(k: int = 5):
    """The centred test_resnet generator of test_memory (6 training-class prototypes) with a classifier memory of
    ``k`` rows too; returns it, the model, both memories' keys and sources."""
    adapter, model, keys, feats, labels = _memory_adapter()
    both = tiny_adapter(
        "test_resnet",
        0,
        delta_mode="core",
        d_model=64,
        feature_norm="center",
        memory=True,
        memory_size=len(keys),
        classifier_memory=True,
    )
    missing = both.generator.load_state_dict(adapter.generator.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["head.classifier_gate", "head.classifier_keys", "head.classifier_values"]
    label_keys, weight = _unit(k, TEXT_DIM, 21), _rows(k, feats.shape[1], 22)
    both.generator.head.set_classifier_memory(label_keys, weight)
    both.config.classifier_memory_size = k
    return both, model, (keys, feats, labels), (label_keys, weight)


def _reference_weight(adapter, embeddings, memory, classifier) -> torch.Tensor:
    """s * normalize(normalize(mlp(code)) + g * recall(P) + g_c * recall(W / |W|)) / sigma, each recall
    normalize(softmax(beta cos(e, key)) @ values)."""
    head = adapter.generator.head
    keys, feats, labels = memory
    x = F.normalize((feats.double() - feats.double().mean(0)) / head.feature_scale.double(), dim=1)
    protos = F.normalize(torch.stack([x[labels == j].mean(0) for j in range(len(keys))]), dim=1).float()

    def recall(k, v):
        attn = torch.softmax(head.memory_beta * (F.normalize(embeddings, dim=-1) @ F.normalize(k, dim=-1).T), dim=-1)
        return F.normalize(attn @ v, dim=-1)

    with torch.no_grad():
        codes, _ = adapter.generator.set_encoder(embeddings[None], torch.ones(1, len(embeddings), dtype=torch.bool))
        own = F.normalize(head.weight_mlp(codes[0]), dim=-1)
        mixed = own + head.memory_gate * recall(keys, protos)
        mixed = mixed + head.classifier_gate * recall(classifier[0], F.normalize(classifier[1], dim=1))
    return F.normalize(mixed, dim=-1) * head.log_scale.exp() / head.feature_scale


def test_classifier_memory_head_equals_its_reference_and_is_one_exact_linear_layer(tmp_path):
    adapter, model, memory, classifier = _both_memories()
    new = _unit(4, TEXT_DIM, 11)
    names = {f"c{i}": f"class {i}" for i in range(4)}
    head = adapter.generator.head
    before = adapter.generate(names, embeddings=new).head_weight  # every gate 0: the generated head alone
    outputs = {}
    for gate, classifier_gate in ((0.0, 3.0), (0.5, 2.0)):
        head.set_memory_mix(gate, 7.0, classifier_gate)
        task = adapter.generate(names, embeddings=new)
        reference = _reference_weight(adapter, new, memory, classifier)
        assert_close(task.head_weight, reference, 1e-4, f"head weight, gates {gate}, {classifier_gate}")
        outputs[gate] = task.head_weight
        assert (task.head_weight - before).abs().max() > 1e-3  # the recalled rows moved the head
    assert (outputs[0.0] - outputs[0.5]).abs().max() > 1e-3  # the training-class recall adds to the rows'
    x = torch.randn(5, *model.pretrained_cfg["input_size"], generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        bound, merged = task.bind(model)(x), task.merge(copy.deepcopy(model))(x)
    assert_close(merged, bound, 1e-5, "merged vs bound")
    adapter.save_pretrained(tmp_path / "gen")
    loaded = LanguageConditionedAdapter.from_pretrained(str(tmp_path / "gen"))
    assert loaded.config.classifier_memory and loaded.config.classifier_memory_size == 5
    assert json.loads((tmp_path / "gen" / "config.json").read_text())["version"] == "1.4"
    card = " ".join((tmp_path / "gen" / "README.md").read_text().split())
    assert "and the backbone's own 5-class classifier rows by the similarity of their label texts" in card
    assert loaded.generator.head.classifier_gate.item() == 2.0 and loaded.generator.head.memory_beta.item() == 7.0
    again = loaded.generate(names, embeddings=new)
    assert torch.equal(again.head_weight, task.head_weight) and torch.equal(again.head_bias, task.head_bias)


def test_a_class_named_like_a_classifier_row_recalls_that_rows_direction_without_a_training_memory():
    adapter = tiny_adapter("test_resnet", 0, d_model=64, feature_norm="center", classifier_memory=True)
    head = adapter.generator.head
    assert not head.memory and head.classifier_memory
    width = head.feature_mean.shape[0]
    label_keys, weight = _unit(6, TEXT_DIM, 1), _rows(6, width, 2)
    head.set_classifier_memory(label_keys, weight)
    head.set_memory_mix(0.0, 40.0, 1.0)
    with torch.no_grad():
        recalled = head.recall(label_keys[[3, 0]][None], "classifier")[0]
    cos = recalled @ F.normalize(weight, dim=1).T
    assert cos.argmax(1).tolist() == [3, 0] and float(cos[0, 3]) > 0.9
    with pytest.raises(ValueError, match=r"no 'memory' memory to recall from; valid: \['classifier'\]"):
        head.recall(label_keys[None], "memory")
    with pytest.raises(ValueError, match=r"gate=0.5 but this head has no such memory; valid: 0"):
        head.set_memory_mix(0.5, 10.0, 1.0)


def test_classifier_memory_input_is_checked():
    with pytest.raises(
        ValueError, match=r"classifier_memory=True needs feature_norm='center'.*got feature_norm='none'"
    ):
        AdapterConfig(classifier_memory=True)
    with pytest.raises(ValueError, match=r"classifier_memory_size=3 without classifier_memory=True"):
        AdapterConfig(classifier_memory_size=3, feature_norm="center")
    with pytest.raises(ValueError, match="classifier_memory must be true or false, got 'yes'"):
        AdapterConfig(classifier_memory="yes", feature_norm="center")
    adapter, *_ = _memory_adapter()  # a training-class memory only
    head = adapter.generator.head
    with pytest.raises(ValueError, match="this head has no classifier memory"):
        head.set_classifier_memory(_unit(3, TEXT_DIM, 0), torch.randn(3, head.feature_mean.shape[0]))
    with pytest.raises(ValueError, match=r"classifier_gate=1.0 but this head has no such memory; valid: 0"):
        head.set_memory_mix(0.5, 10.0, 1.0)
    with pytest.raises(ValueError, match=r"memory mix needs finite gates >= 0 and beta > 0"):
        head.set_memory_mix(0.5, 10.0, -1.0)
    both, *_ = _both_memories()
    head = both.generator.head
    width = head.feature_mean.shape[0]
    with pytest.raises(ValueError, match=rf"classifier memory keys must be \(k >= 2, {TEXT_DIM}\) .* got \(3, 7\)"):
        head.set_classifier_memory(torch.randn(3, 7), torch.randn(3, width))
    with pytest.raises(
        ValueError, match=rf"classifier weight must be \(3, {width}\), one row per key, got \(4, {width}\)"
    ):
        head.set_classifier_memory(_unit(3, TEXT_DIM, 0), torch.randn(4, width))
    with pytest.raises(ValueError, match="rows must be finite and non-zero"):
        head.set_classifier_memory(_unit(3, TEXT_DIM, 0), torch.zeros(3, width))
    with pytest.raises(ValueError, match=r"a fixed memory mix for this head is \[gate, beta, classifier_gate\]"):
        calibrate_memory(head, lambda: 0.5, fixed=[0.5, 10.0])
    for bad in ([0.5, 10.0, -1.0], [0.5, 10.0, 1.0, 2.0], [0.5, 0.0, 1.0]):
        with pytest.raises(
            ValueError, match=r"train.memory_mix must be \[gate >= 0, beta > 0\], \[gate, beta, classifier"
        ):
            TrainConfig(memory_mix=bad)
    with pytest.raises(ValueError, match=r"1000-class ImageNet classifier .* got Linear with 10 outputs"):
        imagenet_classifier(make_model("test_resnet", num_classes=10))


def test_calibration_takes_the_first_best_mix_of_the_grid():
    """Over gates x betas x classifier gates (sorted), the first point with the best score, and the score without
    any recall."""
    both, *_ = _both_memories()
    head = both.generator.head
    seen = []

    def score():
        mix = (head.memory_gate.item(), head.memory_beta.item(), head.classifier_gate.item())
        seen.append(mix)
        return 0.9 if mix[2] >= 2.0 and mix[0] == 0.25 else 0.1 + 0.01 * mix[0]

    chosen = calibrate_memory(head, score)
    assert chosen == {
        "memory_gate": 0.25,
        "memory_beta": MEMORY_BETAS[0],
        "classifier_gate": 2.0,
        "val_top1": 0.9,
        "without_memory": 0.1,
    }
    assert len(seen) == len(set(seen)) == 1 + len(MEMORY_BETAS) * (len(MEMORY_GATES) * len(CLASSIFIER_GATES) - 1)
    assert (head.memory_gate.item(), head.classifier_gate.item()) == (0.25, 2.0)


def test_training_fills_the_classifier_memory_from_the_backbone_and_a_refit_keeps_the_mix(tmp_path):
    """The real packaged EfficientNet-Lite0 (its ImageNet classifier) and the real MiniLM encoder: the saved rows are
    the classifier's unit rows, keyed by the encoder's embeddings of timm's label descriptions; the saved mix is the
    grid's best on the validation classes; the refit run takes it unchanged."""
    backbone = {"backbone": "tf_efficientnet_lite0", "backbone_weights": "packaged:efficientnet_lite0"}
    adapter = {**backbone, "backbone_kwargs": {}, "feature_norm": "center", "memory": True, "classifier_memory": True}
    recipe, result = _train_with_validation(tmp_path, adapter)
    assert result.adapter.config.classifier_memory_size == 1000
    saved = _weights(result.generator_dir)
    classifier, labels = imagenet_classifier(result.adapter.create_backbone())
    assert torch.allclose(saved["generator.head.classifier_values"], F.normalize(classifier.weight, dim=1), atol=1e-6)
    keys = F.normalize(result.adapter.text_encoder.encode(labels[:3]).float(), dim=1)
    assert torch.allclose(saved["generator.head.classifier_keys"][:3], keys, atol=1e-5)
    mix = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert (
        mix["classifier_gate"] in CLASSIFIER_GATES
        and saved["generator.head.classifier_gate"].item() == (mix["classifier_gate"])
    )
    run = _Run(recipe, tmp_path / "again", 0, head_only=True)
    run.adapter.load_state_dict(_weights(result.generator_dir), strict=True)
    assert run.validation_top1() == pytest.approx(mix["val_top1"])
    steps, chosen = chosen_settings(recipe, tmp_path / "run")
    assert chosen == [mix["memory_gate"], mix["memory_beta"], mix["classifier_gate"]]
    refit = refit_recipe(recipe, tmp_path / "run", 0)
    assert refit.train.memory_mix == chosen and refit.train.steps == steps
