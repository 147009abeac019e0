"""Robustness of generation: any descriptions, embeddings or config give a valid TaskAdaptation or a clear
ValueError/TypeError (never an error from deep inside torch); non-finite weights never reach a model; low precision
stays close to fp32; generation is bit-for-bit deterministic on the CPU (see docs/ROBUSTNESS.md)."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from _robustness import (
    TEXT_DIM,
    backbone,
    embeddings,
    images,
    make_task,
    one_torch_thread,
    same_task,
    state_equal,
    tiny_adapter,
)
from conftest import assert_close
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import lang2net
from lang2net import AdapterConfig, LanguageConditionedAdapter, LowRankDelta, TaskAdaptation, mixed_task_logits

CLEAR = (ValueError, TypeError)
SETTINGS = {"deadline": None, "suppress_health_check": list(HealthCheck), "derandomize": True}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def adapter() -> LanguageConditionedAdapter:
    return tiny_adapter()


def _check_task(task: TaskAdaptation, names: list[str], config: AdapterConfig) -> None:
    """A valid task: the classes in order, a finite head of the right shape, a finite delta of rank r per target."""
    assert task.class_names == names
    assert task.head_weight.shape == (len(names), config.feature_dim) and task.head_bias.shape == (len(names),)
    assert torch.isfinite(task.head_weight).all() and torch.isfinite(task.head_bias).all()
    want = {s.name for s in config.target_specs} if config.delta_mode != "none" else set()
    assert set(task.deltas) == want
    assert all(d.rank == config.rank and d.is_finite() for d in task.deltas.values())


# 1. descriptions, through the real text encoder


@pytest.fixture(scope="module")
def encoder() -> lang2net.TextEncoder:
    return lang2net.TextEncoder(lang2net.PACKAGED_MINILM)  # the real offline MiniLM, once for the module


@pytest.fixture(scope="module")
def text_adapter(encoder) -> LanguageConditionedAdapter:
    return tiny_adapter(text_encoder=encoder)


TEXT = st.text(max_size=40)  # any unicode, empty strings and lone surrogates included
DESCRIPTIONS = st.one_of(
    st.dictionaries(TEXT, TEXT | st.lists(TEXT, max_size=3), max_size=4),
    st.dictionaries(TEXT, st.just("the same description for every class"), min_size=2, max_size=4),
    st.dictionaries(  # wrong types anywhere
        st.one_of(TEXT, st.integers(), st.none()),
        st.one_of(TEXT, st.integers(), st.lists(st.one_of(TEXT, st.none(), st.integers()), max_size=2)),
        max_size=3,
    ),
    st.lists(TEXT, max_size=2),  # not a mapping at all
    TEXT,
)


@settings(max_examples=12, **SETTINGS)
@given(descriptions=DESCRIPTIONS)
def test_any_descriptions_give_a_task_or_a_clear_error(text_adapter, descriptions):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation warnings
        try:
            task = text_adapter.generate(descriptions)
        except CLEAR as e:
            event(f"refused: {type(e).__name__}")
            return
    event("generated")
    _check_task(task, list(descriptions), text_adapter.config)
    embedded = text_adapter.encode(descriptions)  # the same task when the embeddings are given
    assert same_task(task, text_adapter.generate(descriptions, embeddings=embedded))


@pytest.mark.parametrize(
    "case",
    ["very long", "many classes", "duplicates", "empty strings", "unicode", "control characters"],
)
def test_hard_descriptions_through_the_text_encoder(text_adapter, case):
    descriptions = {
        "very long": {"long": "a striped animal with a long tail " * 400, "short": "x"},
        "many classes": {f"class {i}": "one shared description" for i in range(300)},
        "duplicates": {"a": ["same", "same", "same"], "b": ["same"]},
        "empty strings": {"": "", "b": ["", ""]},
        "unicode": {"猫": "ねこ 🐈 Кошка", "ﬁ": "e\u0301 \u202e\u200b ‮", "🙂": "🙂" * 100},
        "control characters": {"\x00": "\x00\x1b[31m\x7f", "tab\t": "line\r\nbreak"},
    }[case]
    if case == "empty strings":  # nothing to read: refused with the name of what is blank
        with pytest.raises(ValueError, match="class name '' is blank"):
            text_adapter.generate(descriptions)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        task = text_adapter.generate(descriptions)
    _check_task(task, list(descriptions), text_adapter.config)
    if case == "very long":
        assert any("truncated" in str(w.message) for w in caught)
    if case == "duplicates":  # a class described twice the same way is the class described once
        assert torch.equal(text_adapter.encode({"a": ["same", "same"]}), text_adapter.encode({"a": "same"}))


@pytest.mark.parametrize(
    ("descriptions", "error", "match"),
    [
        ({}, ValueError, "empty"),
        ({"a": []}, ValueError, "empty list"),
        ({"a": "\ud800"}, ValueError, "not valid Unicode"),  # tokenizers fail on it with a confusing TypeError
        ({"\udfff": "x"}, ValueError, "not valid Unicode"),
        ({1: "x"}, TypeError, "class names must be str"),
        ({"a": 3}, TypeError, "descriptions must be a str or a sequence"),
        ({"a": ["x", None]}, TypeError, "description 1 must be str"),
        (["a", "b"], TypeError, "must be a mapping"),
    ],
)
def test_bad_descriptions_are_named(text_adapter, descriptions, error, match):
    with pytest.raises(error, match=match):
        text_adapter.generate(descriptions)


# 2. the generator itself, with random embeddings


def _weird_embeddings(kind: str, c: int, seed: int):
    e = embeddings(c, seed)
    return {
        "normal": e,
        "zeros": torch.zeros(c, TEXT_DIM),
        "huge": e * 1e30,  # LayerNorm's variance overflows float32
        "tiny": e * 1e-38,
        "float64": e.double(),
        "float16": e.half(),
        "bfloat16": e.bfloat16(),
        "one nan": e.index_fill(1, torch.tensor([0]), float("nan")),
        "one inf": e.index_fill(1, torch.tensor([0]), float("inf")),
        "integers": e.long(),
        "bool": e > 0,
        "a list": e.tolist(),
        "wrong width": torch.randn(c, TEXT_DIM + 1),
        "1-D": e[0],
        "3-D": e[None],
        "too many rows": torch.randn(c + 1, TEXT_DIM),
        "non-contiguous": torch.randn(TEXT_DIM, c).t(),
        "requires grad": e.clone().requires_grad_(True),
    }[kind]


EMBEDDING_KINDS = [
    "normal", "zeros", "huge", "tiny", "float64", "float16", "bfloat16", "one nan", "one inf", "integers", "bool",
    "a list", "wrong width", "1-D", "3-D", "too many rows", "non-contiguous", "requires grad",
]  # fmt: skip


# what each kind must give, decided in advance (a test that accepts either outcome checks nothing)
EXPECTED = {
    **dict.fromkeys(("normal", "zeros", "tiny", "float64", "float16", "bfloat16", "non-contiguous"), "task"),
    **dict.fromkeys(("requires grad",), "task"),
    **dict.fromkeys(("one nan", "one inf", "integers", "bool", "a list", "wrong width", "1-D", "3-D"), "error"),
    **dict.fromkeys(("huge", "too many rows"), "error"),
}


@pytest.mark.parametrize("kind", EMBEDDING_KINDS)
@settings(max_examples=4, **SETTINGS)
@given(c=st.integers(1, 64), seed=st.integers(0, 2**16))
def test_any_embeddings_give_a_task_or_a_clear_error(adapter, kind, c, seed):
    descriptions = {f"c{i}": "x" for i in range(c)}
    e = _weird_embeddings(kind, c, seed)
    if EXPECTED[kind] == "error":
        with pytest.raises(CLEAR):
            adapter.generate(descriptions, embeddings=e, allow_single_class=True)
        return
    task = adapter.generate(descriptions, embeddings=e, allow_single_class=True)  # one class too, when asked
    _check_task(task, list(descriptions), adapter.config)
    assert not task.head_weight.requires_grad


@pytest.mark.parametrize("c", [1, 2, 500])
def test_one_and_many_classes(adapter, c):
    if c == 1:
        with pytest.raises(ValueError, match="describe at least two classes"):
            adapter.generate({"c0": "x"}, embeddings=embeddings(1))
    task = adapter.generate({f"c{i}": "x" for i in range(c)}, embeddings=embeddings(c), allow_single_class=True)
    _check_task(task, [f"c{i}" for i in range(c)], adapter.config)


# 3. configs with random types and values


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 0),
    st.floats(allow_nan=True),
    st.text(max_size=6),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
FIELDS = {  # field: (valid values, junk) — valid sizes are bounded so that every valid example builds in milliseconds
    "backbone": (st.sampled_from(["test_vit", "test_resnet"]), JUNK | st.just("no_such_model")),
    "backbone_weights": (st.just("random"), JUNK),
    "backbone_kwargs": (st.just({}), JUNK | st.just({"not_an_argument": 1})),
    "text_encoder": (st.just("packaged:all-MiniLM-L6-v2"), JUNK),
    "targets": (
        st.sampled_from(["auto", r".*fc\d", r".*conv1", ["fc1"], ["conv2"]]),
        JUNK | st.sampled_from(["(", [], ["no_such_layer"], r"nothing\.matches"]),
    ),
    "rank": (st.integers(1, 8), JUNK),
    "delta_mode": (st.sampled_from(["core", "factors", "none"]), JUNK),
    "d_model": (st.sampled_from([8, 16, 24]), JUNK),
    "n_layers": (st.integers(0, 2), JUNK.filter(lambda v: v != 0 or isinstance(v, (bool, float)))),  # 0: per-class
    "n_heads": (st.sampled_from([1, 2, 4]), JUNK),
    "dropout": (st.floats(0, 0.9), JUNK | st.floats(1, 10)),
    "text_dim": (st.sampled_from([8, 32]), JUNK),
    "feature_dim": (st.none(), JUNK),
    "target_specs": (st.none(), JUNK | st.just([{"name": "x"}])),
    "version": (st.just("1.0"), JUNK | st.just("2.0")),
}


@st.composite
def configs(draw) -> tuple[dict, set[str]]:
    junk = draw(st.sets(st.sampled_from(list(FIELDS)), max_size=2), label="junk fields")
    kwargs = {name: draw(FIELDS[name][name in junk], label=name) for name in FIELDS}
    return kwargs, junk


@settings(max_examples=40, **SETTINGS)
@given(drawn=configs())
def test_any_config_gives_a_task_or_a_clear_error(drawn):
    kwargs, junk = drawn
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            adapter = LanguageConditionedAdapter(AdapterConfig(**kwargs)).eval()
            c = 3
            task = adapter.generate(
                {f"c{i}": "x" for i in range(c)}, embeddings=torch.randn(c, adapter.config.text_dim)
            )
        except CLEAR as e:
            event(f"refused: {type(e).__name__}")
            return
    event(f"generated ({len(junk)} junk fields)")
    _check_task(task, ["c0", "c1", "c2"], adapter.config)
    model = backbone(kwargs["backbone"])
    with torch.no_grad():
        logits = task.bind(model)(images(model))
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


# 4. numerical safety


CORRUPTIBLE = ["set_encoder.proj.1.weight", "head.log_scale", "head.weight_mlp.3.bias", "deltas.U.0", "deltas.V.0"]
CORRUPTIONS = [(n, v) for n in CORRUPTIBLE for v in (float("nan"), float("inf"))] + [("deltas.core.bias", float("nan"))]


@pytest.mark.parametrize(("name", "value"), CORRUPTIONS)
def test_non_finite_generator_weights_never_reach_a_task(name, value):
    adapter = tiny_adapter()
    with torch.no_grad():
        adapter.generator.get_parameter(name).view(-1)[0] = value
    with pytest.raises(ValueError, match="generator produced non-finite values"):
        adapter.generate({"a": "x", "b": "y"}, embeddings=embeddings(2))


def test_non_finite_tasks_cannot_be_made_merged_or_loaded(tmp_path, adapter):
    task = make_task(adapter)
    name = next(iter(task.deltas))
    nan = {**task.deltas, name: LowRankDelta(task.deltas[name].A * float("nan"), task.deltas[name].B)}
    with pytest.raises(ValueError, match=rf"non-finite values \(inf/nan\) in the delta for '{name}'"):
        dataclasses.replace(task, deltas=nan)
    with pytest.raises(ValueError, match="non-finite values"):
        dataclasses.replace(task, head_bias=task.head_bias.index_fill(0, torch.tensor([1]), float("-inf")))
    # finite deltas whose fold overflows a half-precision weight: merge refuses, the backbone is untouched
    big = {n: LowRankDelta(d.A.sign() * 300, d.B.sign() * 300) for n, d in task.deltas.items()}
    overflow = dataclasses.replace(task, deltas=big)
    model = backbone().half()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="gives non-finite weights"):
        overflow.merge(model)
    inj = lang2net.inject(model, targets=[s.name for s in task.target_specs], rank=None)
    with pytest.raises(ValueError, match="non-finite weights; nothing was merged"):
        inj.merge({n: d.to(torch.float16) for n, d in big.items()})
    inj.remove()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


@pytest.mark.parametrize(("dtype", "rel"), [(torch.bfloat16, 0.05), (torch.float16, 0.01)])
@pytest.mark.parametrize("name", ["test_vit", "test_resnet"])
def test_low_precision_logits_stay_close_to_fp32(name, dtype, rel):
    adapter = tiny_adapter(name)
    task, other = make_task(adapter, 4, seed=0), make_task(adapter, 2, seed=1)
    model = backbone(name)
    x = images(model, 4)
    with torch.no_grad():
        reference = task.bind(model)(x)
        merged_reference = task.merge(model)(x)
        mixed_reference, _ = mixed_task_logits(model, [task, other], x, torch.tensor([0, 1, 0, 1]))
        lang2net.engine.injection._INJECTED[model].remove()
        low = model.to(dtype)
        assert_close(task.bind(low)(x.to(dtype)), reference, rel, f"bound {dtype}")
        assert_close(task.merge(low)(x.to(dtype)), merged_reference, rel, f"merged {dtype}")
        mixed, mask = mixed_task_logits(low, [task, other], x.to(dtype), torch.tensor([0, 1, 0, 1]))
        assert_close(mixed[mask], mixed_reference[mask], rel, f"mixed tasks {dtype}")
        # a generator in low precision writes a task close to the fp32 one
        low_task = tiny_adapter(name).to(dtype).generate(task.descriptions, embeddings=embeddings(4, 0))
    assert low_task.head_weight.dtype == dtype
    assert_close(low_task.head_weight, task.head_weight, 4 * rel, f"generated head {dtype}")


# 5. determinism


def test_generation_is_bit_identical_across_calls_adapters_and_save_load(tmp_path, adapter):
    desc = {f"class {i}": f"text {i}" for i in range(5)}
    first = adapter.generate(desc, embeddings=embeddings(5))
    assert same_task(first, adapter.generate(desc, embeddings=embeddings(5)))
    twin = tiny_adapter()  # constructed separately with the same seed
    assert state_equal(twin.state_dict(), adapter.state_dict())
    assert same_task(first, twin.generate(desc, embeddings=embeddings(5)))
    adapter.save_pretrained(tmp_path / "a")
    twin.save_pretrained(tmp_path / "b")
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    loaded = LanguageConditionedAdapter.from_pretrained(tmp_path / "a")
    assert same_task(first, loaded.generate(desc, embeddings=embeddings(5)))
    first.save_pretrained(tmp_path / "task")
    assert same_task(first, TaskAdaptation.from_pretrained(tmp_path / "task"))
    model = backbone()
    x = images(model)
    with torch.no_grad():
        assert torch.equal(first.bind(model)(x), TaskAdaptation.from_pretrained(tmp_path / "task").bind(model)(x))


@settings(max_examples=10, **SETTINGS)
@given(c=st.integers(1, 12), seed=st.integers(0, 2**16), mode=st.sampled_from(["core", "factors", "none"]))
def test_generation_is_deterministic_for_any_task(c, seed, mode):
    a, b = tiny_adapter(delta_mode=mode, seed=seed % 3), tiny_adapter(delta_mode=mode, seed=seed % 3)
    desc = {f"c{i}": "x" for i in range(c)}
    one = {"allow_single_class": True}
    first, second = (m.generate(desc, embeddings=embeddings(c, seed), **one) for m in (a, b))
    assert same_task(first, second)


def test_text_encoder_path_is_deterministic(text_adapter):
    desc = {"cat": ["a small cat", "a kitten"], "dog": "a dog"}
    assert same_task(text_adapter.generate(desc), text_adapter.generate(desc))
