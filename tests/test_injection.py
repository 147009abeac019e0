"""The hook engine: lifecycle, exact restore, threads, bypassed layers, gradients, dtypes and bad input."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from conftest import assert_close, make_model

import lang2net
from lang2net import LowRankDelta


@pytest.fixture
def vit():
    return make_model("test_vit")


def _x(model, n=2, seed=0):
    return torch.randn(n, *model.pretrained_cfg["input_size"], generator=torch.Generator().manual_seed(seed))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(model, saved) -> bool:
    now = model.state_dict()
    return now.keys() == saved.keys() and all(torch.equal(now[k], saved[k]) for k in saved)


# targets and reports


def test_auto_targets_vit_preset_and_summary(vit):
    inj = lang2net.inject(vit)
    depth = len(vit.blocks)
    assert inj.preset == "VisionTransformer"
    assert len(inj.targets) == 4 * depth
    assert {n.rsplit(".", 1)[-1] for n in inj.targets} == {"qkv", "proj", "fc1", "fc2"}
    assert "patch_embed.proj" not in inj.targets  # a conv named proj outside attention is not an attention proj
    t = inj.targets["blocks.0.attn.qkv"]
    assert (t.kind, t.in_features, t.out_features) == ("linear", vit.embed_dim, 3 * vit.embed_dim)
    assert t.a_shape(8) == (8, vit.embed_dim) and t.b_shape(8) == (3 * vit.embed_dim, 8)
    text = inj.summary()
    assert "blocks.0.attn.qkv" in text and f"(8, {vit.embed_dim})" in text and "preset: VisionTransformer" in text


def test_fallback_excludes_classifier_and_grouped_convs_with_reasons():
    model = make_model("resnext26ts")  # ByobNet has no family preset: every eligible layer outside the classifier
    inj = lang2net.inject(model, probe_input=(3, 64, 64))
    assert inj.preset is None
    assert "head.fc" not in inj.targets and "classifier" in inj.excluded["head.fc"]
    grouped = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert grouped and all("groups=" in inj.excluded[n] for n in grouped)
    assert all(
        not isinstance(model.get_submodule(n), torch.nn.Conv2d) or model.get_submodule(n).groups == 1
        for n in inj.targets
    )


def test_regex_is_fullmatch_and_list_takes_suffixes(vit):
    inj = lang2net.inject(vit, targets=r"blocks\.\d+\.attn\.qkv")
    assert list(inj.targets) == [f"blocks.{i}.attn.qkv" for i in range(len(vit.blocks))]
    inj.remove()
    with pytest.raises(ValueError, match="fullmatches no"):
        lang2net.inject(vit, targets=r"attn\.qkv")  # a search would match; fullmatch does not
    inj = lang2net.inject(vit, targets=["attn.proj", "blocks.0.mlp.fc1"])
    assert set(inj.targets) == {f"blocks.{i}.attn.proj" for i in range(len(vit.blocks))} | {"blocks.0.mlp.fc1"}


def test_efficientnet_preset_takes_pointwise_convs():
    model = make_model("tf_efficientnet_lite0")
    inj = lang2net.inject(model, probe_input=(3, 64, 64))
    assert inj.preset == "EfficientNet"
    assert all(t.kind == "conv2d" and t.kernel_size == (1, 1) for t in inj.targets.values())
    assert any(n.endswith("conv_pwl") for n in inj.targets) and not any("conv_dw" in n for n in inj.targets)


def test_conv2d_same_with_large_kernel_and_stride(copy_model):
    """timm's Conv2dSame pads dynamically; the hook must see the same padded pixels (stem: 3x3, stride 2)."""
    model = make_model("tf_efficientnet_lite0")
    x = torch.randn(2, 3, 67, 61)  # odd sizes make 'same' padding asymmetric
    inj = lang2net.inject(model, targets=["conv_stem"], probe_input=(3, 64, 64))
    assert type(model.conv_stem).__name__ == "Conv2dSame" and inj.targets["conv_stem"].kernel_size == (3, 3)
    d = inj.init_deltas("random", seed=0, std=0.5)
    with torch.no_grad():
        with inj.apply(d, strategy="activation"):
            hook = model(x)
        with inj.apply(d, strategy="weight"):
            weight = model(x)
        per_sample = {k: LowRankDelta(v.A.expand(2, *v.A.shape), v.B.expand(2, *v.B.shape)) for k, v in d.items()}
        with inj.apply(per_sample):
            mixed = model(x)
    assert_close(weight, hook, 1e-4, "Conv2dSame weight vs hook")
    assert_close(mixed, hook, 1e-4, "Conv2dSame per-sample vs hook")


def test_padding_mode_and_dilation_in_a_plain_module():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=2, dilation=2, padding_mode="reflect"),
        torch.nn.Conv2d(8, 8, (3, 5), stride=(2, 1), padding="valid"),
        torch.nn.Conv2d(8, 4, 3, padding="same", padding_mode="circular"),
    )
    x = torch.randn(3, 3, 17, 19)
    inj = lang2net.inject(model, targets=["0", "1", "2"], probe_input=(3, 17, 19))
    d = inj.init_deltas("random", seed=1, std=0.5)
    with torch.no_grad():
        with inj.apply(d, strategy="activation"):
            hook = model(x)
        with inj.apply(d, strategy="weight"):
            weight = model(x)
    assert_close(weight, hook, 1e-5, "padding modes: weight vs hook")
    # reference: the same convs with W + dW as their weights
    ref = copy.deepcopy(model)
    inj.remove()
    with torch.no_grad():
        for name, delta in d.items():
            ref.get_submodule(name).weight += delta.weight()
        assert_close(ref(x), hook, 1e-5, "padding modes: reference conv with folded weights vs hook")


def test_swin_folded_windows_take_per_sample_deltas():
    model = make_model("swin_tiny_patch4_window7_224", img_size=56)
    x = torch.randn(3, 3, 56, 56)
    inj = lang2net.inject(model, probe_input=(3, 56, 56))
    per_sample = inj.init_deltas("random", batch_size=3, seed=4)
    with torch.no_grad(), inj.apply(per_sample):
        mixed = model(x)
    for i in range(3):
        with torch.no_grad(), inj.apply({n: d.select(i) for n, d in per_sample.items()}):
            assert_close(mixed[i : i + 1], model(x[i : i + 1]), 1e-4, f"swin sample {i}")


# exact restore


def test_remove_restores_outputs_and_state_dict_bit_for_bit(vit):
    x, saved = _x(vit), _state(vit)
    flags = {n: p.requires_grad for n, p in vit.named_parameters()}
    with torch.no_grad():
        before = vit(x)
    inj = lang2net.inject(vit)
    assert _same_state(vit, saved), "inject must not change the state_dict"
    d = inj.init_deltas("random", seed=0)
    with torch.no_grad():
        with inj.apply(d):
            vit(x)
        inj.merge(d)
    assert not _same_state(vit, saved)
    inj.remove()  # also undoes the merge
    with torch.no_grad():
        assert torch.equal(vit(x), before)
    assert _same_state(vit, saved)
    assert {n: p.requires_grad for n, p in vit.named_parameters()} == flags
    assert all("forward" not in m.__dict__ for m in vit.modules()), "no hook may stay behind"


def test_exception_inside_apply_leaves_model_untouched(vit):
    x, saved = _x(vit), _state(vit)
    inj = lang2net.inject(vit)
    with torch.no_grad():
        before = vit(x)
    d = inj.init_deltas("random", seed=0)
    with pytest.raises(RuntimeError, match="boom"), inj.apply(d):
        vit(x)
        raise RuntimeError("boom")
    # a forward that raises from inside a hook: per-sample deltas for 3 samples, a batch of 2
    bad = inj.init_deltas("random", batch_size=3, seed=0)
    with pytest.raises(ValueError, match="not a multiple of the 3"), inj.apply(bad):
        vit(x)
    with torch.no_grad():
        assert torch.equal(vit(x), before)
    with inj.apply(d):  # the injection is still usable
        pass
    inj.remove()
    assert _same_state(vit, saved)


def test_merge_refuses_non_finite_and_changes_nothing(vit):
    inj = lang2net.inject(vit)
    saved = _state(vit)
    d = inj.init_deltas("random", seed=0)
    d["blocks.1.mlp.fc2"] = LowRankDelta(
        d["blocks.1.mlp.fc2"].A, torch.full_like(d["blocks.1.mlp.fc2"].B, float("inf"))
    )
    with pytest.raises(ValueError, match=r"blocks\.1\.mlp\.fc2.*non-finite"):
        inj.merge(d)
    assert _same_state(vit, saved) and not inj.merged


def test_unmerge_checks_the_deltas(vit):
    inj = lang2net.inject(vit)
    d, other = inj.init_deltas("random", seed=0), inj.init_deltas("random", seed=1)
    with pytest.raises(RuntimeError, match="nothing is merged"):
        inj.unmerge()
    inj.merge(d)
    with pytest.raises(RuntimeError, match="already merged"):
        inj.merge(other)
    with pytest.raises(ValueError, match="other than the merged"):
        inj.unmerge(other)
    inj.unmerge(d)
    assert not inj.merged


# concurrency


def test_two_threads_two_tasks_each_get_their_own_result(vit):
    x = _x(vit)
    inj = lang2net.inject(vit)
    tasks = [inj.init_deltas("random", seed=s) for s in (10, 11)]
    with torch.no_grad():
        expected = []
        for d in tasks:
            with inj.apply(d):
                expected.append(vit(x))
    assert not torch.allclose(expected[0], expected[1])
    barrier, results, errors = threading.Barrier(2), [[], []], []

    def worker(i):
        try:
            for _ in range(15):
                barrier.wait()  # both threads inside the model at the same time
                with torch.no_grad(), inj.apply(tasks[i], strategy="activation" if i else "weight"):
                    results[i].append(vit(x))
        except Exception as e:  # surfaced below
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(2):
        for y in results[i]:
            assert_close(y, expected[i], 1e-5, f"thread {i}")


# bypassed layers


def test_beit_bypassed_qkv_is_reported_not_silently_adapted():
    model = make_model("beit_base_patch16_224", img_size=32, depth=2)
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.qkv.*never run as modules"):
        lang2net.inject(model, targets=["blocks.0.attn.qkv"])
    assert all("forward" not in m.__dict__ for m in model.modules()), "a failed inject leaves no hook"
    with pytest.warns(UserWarning, match=r"blocks\.0\.attn\.qkv.*bypassed"):
        inj = lang2net.inject(model)
    assert "blocks.0.attn.qkv" not in inj.targets and inj.excluded["blocks.0.attn.qkv"].startswith("bypassed")
    assert "blocks.0.attn.proj" in inj.targets


def test_batch_free_layers_refuse_per_sample_deltas():
    model = make_model("test_vit_relpos")
    name = "blocks.0.attn.rel_pos.mlp.fc1"
    inj = lang2net.inject(model, targets=[name, "blocks.0.attn.qkv"])
    assert not inj.targets[name].per_sample and inj.targets["blocks.0.attn.qkv"].per_sample
    per_sample = inj.init_deltas("random", batch_size=2)  # a shared delta where the batch is absent
    assert not per_sample[name].batched and per_sample["blocks.0.attn.qkv"].batched
    with torch.no_grad(), inj.apply(per_sample):
        model(_x(model))
    t = inj.targets[name]
    bad = {name: LowRankDelta(torch.zeros(2, 8, t.in_features), torch.zeros(2, t.out_features, 8))}
    with pytest.raises(ValueError, match=rf"{name}.*per-sample"), inj.apply(bad):
        pass
    with torch.no_grad(), inj.apply(inj.init_deltas("random")):  # shared deltas are fine there
        model(_x(model))


# gradients


def test_gradients_reach_deltas_only_and_match_weight_space(vit):
    x = _x(vit)
    inj = lang2net.inject(vit)
    d = inj.init_deltas("random", seed=0)
    grads = []
    for strategy in ("auto", "weight"):  # auto with grad-requiring deltas -> activation space
        leaves = {n: LowRankDelta(v.A.clone().requires_grad_(), v.B.clone().requires_grad_()) for n, v in d.items()}
        with inj.apply(leaves, strategy=strategy):
            vit(x).square().sum().backward()
        grads.append({n: (v.A.grad, v.B.grad) for n, v in leaves.items()})
    assert all(p.grad is None for p in vit.parameters()), "the frozen backbone must get no gradient"
    for n, (ga, gb) in grads[0].items():
        assert ga is not None and gb is not None and ga.abs().sum() > 0
        assert_close(ga, grads[1][n][0], 1e-4, f"dA {n}")
        assert_close(gb, grads[1][n][1], 1e-4, f"dB {n}")


# dtypes and memory formats


@pytest.mark.parametrize("name", ["test_vit", "test_resnet", "test_efficientnet"])
@pytest.mark.parametrize("mode", ["bf16", "fp16", "autocast", "channels_last"])
def test_low_precision_and_channels_last_agree_with_fp32(name, mode):
    model = make_model(name)
    x = _x(model)
    inj = lang2net.inject(model)
    d = inj.init_deltas("random", seed=0)
    with torch.no_grad(), inj.apply(d, strategy="activation"):
        ref = model(x)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
    if dtype is not None:
        model.to(dtype)
        x = x.to(dtype)
    if mode == "channels_last":
        model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if mode == "autocast" else torch.no_grad()
    outs = {}
    with torch.no_grad(), ctx:
        for strategy in ("activation", "weight"):
            with inj.apply(d, strategy=strategy):
                outs[strategy] = model(x)
        with inj.apply({k: LowRankDelta(v.A.expand(2, *v.A.shape), v.B.expand(2, *v.B.shape)) for k, v in d.items()}):
            outs["per_sample"] = model(x)
    rel = 1e-4 if mode == "channels_last" else 6e-2
    for strategy, y in outs.items():
        if dtype is not None:
            assert y.dtype == dtype
        assert_close(y, ref, rel, f"{mode} {strategy} vs fp32")
    with torch.no_grad(), ctx, inj.apply(inj.init_deltas("zeros")):
        zero = model(x)
    with torch.no_grad(), ctx:
        inj.remove()
        assert torch.equal(zero, model(x)), "zero deltas exact in every dtype"


# bad input


def test_unknown_targets_list_close_names(vit):
    with pytest.raises(ValueError, match=r"'atn\.qkv'.*close names: .*qkv"):
        lang2net.inject(vit, targets=["atn.qkv"])
    with pytest.raises(ValueError, match=r"does not compile"):
        lang2net.inject(vit, targets="blocks.(")
    with pytest.raises(TypeError, match="targets must be"):
        lang2net.inject(vit, targets=[1, 2])
    with pytest.raises(ValueError, match="rank must be"):
        lang2net.inject(vit, rank=0)


def test_bad_deltas_name_the_target_and_both_shapes(vit):
    inj = lang2net.inject(vit)
    good = inj.init_deltas("random")
    qkv = good["blocks.0.attn.qkv"]
    wrong = dict(good, **{"blocks.0.attn.qkv": LowRankDelta(qkv.A[:, :-1], qkv.B)})
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.qkv.*A \(8, 63\).*needs A \(8, 64\)"), inj.apply(wrong):
        pass
    typo = {"blocks.0.attn.qvk": qkv}
    with (
        pytest.raises(ValueError, match=r"'blocks\.0\.attn\.qvk' is not a target.*blocks\.0\.attn\.qkv"),
        inj.apply(typo),
    ):
        pass
    meta = {"blocks.0.attn.qkv": qkv.to("meta")}
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.qkv.*on meta.*on cpu"), inj.apply(meta):
        pass
    with pytest.raises(TypeError, match="floating-point"):
        LowRankDelta(torch.zeros(8, 64, dtype=torch.int64), torch.zeros(192, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="rank mismatch"):
        LowRankDelta(torch.zeros(4, 64), torch.zeros(192, 8))
    rank4 = {"blocks.0.attn.qkv": LowRankDelta(torch.zeros(4, 64), torch.zeros(192, 4))}
    with pytest.raises(ValueError, match=r"needs A \(8, 64\)"), inj.apply(rank4):
        pass
    with pytest.raises(ValueError, match="strategy must be one of"), inj.apply(good, strategy="fast"):
        pass
    per_sample = inj.init_deltas(batch_size=2)
    with pytest.raises(ValueError, match="strategy='weight' cannot run per-sample"), inj.apply(per_sample, "weight"):
        pass
    with pytest.raises(ValueError, match="per-sample deltas cannot be folded"):
        inj.merge(inj.init_deltas(batch_size=2))


def test_lifecycle_errors(vit):
    inj = lang2net.inject(vit)
    with pytest.raises(RuntimeError, match="already injected"):
        lang2net.inject(vit)
    d = inj.init_deltas()
    with inj.apply(d):
        with pytest.raises(RuntimeError, match="nested"), inj.apply(d):
            pass
        with pytest.raises(RuntimeError, match=r"inside inj\.apply"):
            inj.remove()
    assert inj.remove() is vit
    with pytest.raises(RuntimeError, match="was removed"), inj.apply(d):
        pass
    inj2 = lang2net.inject(vit)  # a removed model can be injected again
    assert len(inj2.targets) == len(d)


def test_non_timm_module_needs_probe_input():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match="probe_input"):
        lang2net.inject(model, targets=["0"])
    assert all("forward" not in m.__dict__ for m in model.modules())
    inj = lang2net.inject(model, targets=["0", "2"], probe_input=(4,))
    assert list(inj.targets) == ["0", "2"]


def test_deepcopy_of_an_injected_model_is_a_plain_model(vit):
    x = _x(vit)
    inj = lang2net.inject(vit)
    clone = copy.deepcopy(vit)
    d = inj.init_deltas("random", seed=0)
    with torch.no_grad():
        plain = clone(x)
        with inj.apply(d):
            adapted, copied = vit(x), clone(x)
    assert torch.equal(copied, plain), "deltas applied to the original must not reach the copy"
    assert not torch.equal(adapted, plain)
    assert clone.blocks[0].attn.qkv.forward.__self__ is clone.blocks[0].attn.qkv


@pytest.mark.parametrize("name", ["test_vit", "test_efficientnet"])
def test_torch_compile_traces_every_strategy_without_graph_breaks(name):
    """Dynamo tracing only (no inductor codegen): the hooks, the ContextVar lookup and the delta math must not break
    the graph, so a compiled backbone fuses the deltas into its kernels."""
    model = make_model(name)
    x = _x(model)
    inj = lang2net.inject(model)
    for deltas, strategy in (
        (inj.init_deltas("random"), "weight"),
        (inj.init_deltas("random", batch_size=2), "activation"),
    ):
        with torch.no_grad(), inj.apply(deltas, strategy=strategy):
            explained = torch._dynamo.explain(model)(x)
            expected = model(x)
        assert explained.graph_break_count == 0, explained.break_reasons
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        with torch.no_grad(), inj.apply(deltas, strategy=strategy):
            assert_close(compiled(x), expected, 1e-6, f"compiled {strategy}")
    torch._dynamo.reset()
