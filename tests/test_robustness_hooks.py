"""Hooks under stress: thousands of inject/apply/remove cycles leave no hook and no memory behind, an exception in the
middle of a forward leaves the backbone untouched, and threads serving different tasks on one backbone (also while
another thread generates) each get their own exact result (see docs/ROBUSTNESS.md)."""

from __future__ import annotations

import gc
import sys
import threading
import tracemalloc
import warnings
from collections.abc import Callable

import pytest
import torch
from _robustness import (
    backbone,
    embeddings,
    images,
    make_task,
    no_hooks_left,
    one_torch_thread,
    same_task,
    state_equal,
    tiny_adapter,
)
from torch import nn

import lang2net
from lang2net import mixed_task_logits
from lang2net.engine.injection import _INJECTED
from lang2net.task import adapted_logits


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def adapter():
    return tiny_adapter()


# helpers


class Tiny(nn.Module):
    """A conv and a linear layer: the smallest model with both kinds of target."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


PROBE = (3, 6, 6)
STRATEGIES = ["weight", "activation", "per-sample"]


def _live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # isinstance() on some of torch's deprecated module objects warns
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def _clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_clean(model: nn.Module, state: dict[str, torch.Tensor], grads: dict[str, bool]) -> None:
    assert no_hooks_left(model) == []
    assert model not in _INJECTED
    assert state_equal(model.state_dict(), state)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads


def _no_growth(cycle: Callable[[int], None], n: int, warmup: int = 50, max_bytes: int = 256 * 1024) -> None:
    """Run ``cycle`` n times after a warm-up: Python memory (tracemalloc), gc-tracked objects and live tensors must
    not grow (a leaked hook, ContextVar, closure or saved weight would add one per cycle)."""
    for i in range(warmup):
        cycle(i)
    tensors = _live_tensors()
    objects = len(gc.get_objects())
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for i in range(warmup, warmup + n):
            cycle(i)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert grown < max_bytes, f"{n} cycles kept {grown} bytes of Python objects"
    assert len(gc.get_objects()) - objects < n // 10, f"{n} cycles left {len(gc.get_objects()) - objects} objects"
    assert _live_tensors() <= tensors + 2, f"{n} cycles left {_live_tensors() - tensors} tensors alive"


# 1. thousands of cycles


def test_thousands_of_inject_apply_remove_cycles_leave_nothing_behind():
    model = Tiny().eval()
    x = torch.randn(2, *PROBE)
    with torch.no_grad():
        plain = model(x)
    state, grads = _clone_state(model), {n: p.requires_grad for n, p in model.named_parameters()}

    def cycle(i: int) -> None:
        inj = lang2net.inject(model, targets=["conv", "fc"], rank=2, probe_input=PROBE)
        per_sample = i % 3 == 2
        deltas = inj.init_deltas("random", seed=i, batch_size=2 if per_sample else None)
        with torch.no_grad(), inj.apply(deltas, strategy="activation" if i % 3 else "weight"):
            model(x)
        inj.remove()

    _no_growth(cycle, 2000)
    _assert_clean(model, state, grads)
    with torch.no_grad():
        assert torch.equal(model(x), plain)


def test_thousands_of_apply_exit_cycles_on_one_injection():
    model = Tiny().eval()
    x = torch.randn(2, *PROBE)
    state, grads = _clone_state(model), {n: p.requires_grad for n, p in model.named_parameters()}
    inj = lang2net.inject(model, targets=["conv", "fc"], rank=2, probe_input=PROBE)
    cases = {
        "weight": inj.init_deltas("random", seed=1),
        "activation": inj.init_deltas("random", seed=1),
        "per-sample": inj.init_deltas("random", seed=2, batch_size=2),
    }
    with torch.no_grad():
        references = {}
        for name, deltas in cases.items():
            with inj.apply(deltas, strategy="weight" if name == "weight" else "activation"):
                references[name] = model(x)

    def cycle(i: int) -> None:
        name = STRATEGIES[i % 3]
        with torch.no_grad(), inj.apply(cases[name], strategy="weight" if name == "weight" else "activation"):
            assert torch.equal(model(x), references[name])
        if i % 500 == 0:
            inj.merge(cases["weight"])
            inj.unmerge()

    _no_growth(cycle, 3000)
    assert inj._var.get() is None
    inj.remove()
    _assert_clean(model, state, grads)


def test_hundreds_of_timm_injections_and_binds(adapter):
    """The same on a real timm model: inject/remove, and binding many tasks (which share one injection)."""
    model = backbone()
    x = images(model)
    state, grads = _clone_state(model), {n: p.requires_grad for n, p in model.named_parameters()}
    tasks = [make_task(adapter, 2 + i % 3, seed=i) for i in range(4)]
    with torch.no_grad():
        references = [t.bind(model)(x) for t in tasks]
    _INJECTED[model].remove()

    def cycle(i: int) -> None:
        inj = lang2net.inject(model, probe=False)
        if i % 10 == 0:
            with torch.no_grad(), inj.apply(inj.init_deltas("random", seed=i)):
                model(x)
        inj.remove()
        if i % 20 == 0:  # four tasks bound at once share one injection (attach); removing it frees the backbone
            classifiers = [t.bind(model) for t in tasks]
            assert len({id(c.injection) for c in classifiers}) == 1
            with torch.no_grad():
                assert torch.equal(classifiers[i % 4](x), references[i % 4])
            classifiers[0].injection.remove()

    _no_growth(cycle, 200, warmup=20)
    _assert_clean(model, state, grads)


# 2. an exception in the middle of a forward


class Boom(Exception):
    pass


def _raise(error: BaseException) -> Callable:
    """A forward hook that raises ``error`` once the block has run: mid-forward, after earlier targets fired."""

    def hook(*args) -> None:
        raise error

    return hook


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt, Boom])
@pytest.mark.parametrize("strategy", [*STRATEGIES, "bound task", "mixed tasks"])
def test_an_exception_mid_forward_leaves_the_backbone_untouched(adapter, strategy, error):
    model = backbone()
    x = images(model)
    tasks = [make_task(adapter, 3, seed=0), make_task(adapter, 2, seed=1)]
    with torch.no_grad():
        plain = model(x)
    state, grads = _clone_state(model), {n: p.requires_grad for n, p in model.named_parameters()}
    inj = lang2net.inject(model, targets=[s.name for s in adapter.config.target_specs], rank=None)
    deltas = {
        "weight": tasks[0].deltas,
        "activation": tasks[0].deltas,
        "per-sample": {
            n: lang2net.LowRankDelta(d.A.expand(2, *d.A.shape), d.B.expand(2, *d.B.shape))
            for n, d in tasks[0].deltas.items()
        },
    }

    def run() -> torch.Tensor:
        if strategy == "bound task":
            return tasks[0].bind(model)(x)
        if strategy == "mixed tasks":
            return mixed_task_logits(model, tasks, x, torch.tensor([0, 1]))[0]
        with inj.apply(deltas[strategy], strategy="weight" if strategy == "weight" else "activation"):
            return model(x)

    with torch.no_grad():
        reference = run()
        handle = model.blocks[1].register_forward_hook(_raise(error("mid-forward")))
        with pytest.raises(error, match="mid-forward"):
            run()
        handle.remove()
        assert inj._var.get() is None  # the call's deltas are gone, in this thread too
        assert state_equal(model.state_dict(), state)
        assert torch.equal(model(x), plain)  # outside apply: the plain backbone, bit for bit
        assert torch.equal(run(), reference)  # and the next call works as before
    inj.remove()
    _assert_clean(model, state, grads)


def test_an_exception_while_injecting_or_merging_changes_nothing(monkeypatch):
    model = backbone()
    x = images(model)
    with torch.no_grad():
        plain = model(x)
    state, grads = _clone_state(model), {n: p.requires_grad for n, p in model.named_parameters()}
    handle = model.blocks[1].register_forward_hook(_raise(Boom("during the probe")))
    with pytest.raises(Boom):
        lang2net.inject(model)
    handle.remove()
    _assert_clean(model, state, grads)
    inj = lang2net.inject(model)
    deltas = inj.init_deltas("random", seed=0)
    calls = {"n": 0}
    real = lang2net.engine.injection.fold_weight

    def fold_then_fail(weight, delta):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Boom("during merge")
        return real(weight, delta)

    monkeypatch.setattr(lang2net.engine.injection, "fold_weight", fold_then_fail)
    with pytest.raises(Boom):
        inj.merge(deltas)
    assert not inj.merged and state_equal(model.state_dict(), state)
    monkeypatch.undo()
    inj.remove()
    _assert_clean(model, state, grads)
    with torch.no_grad():
        assert torch.equal(model(x), plain)


# 3. threads


def _in_threads(work: list[Callable[[], None]]) -> list[BaseException]:
    """Run each callable in its own thread, all released at once; return what they raised."""
    barrier, errors = threading.Barrier(len(work)), []

    def run(fn: Callable[[], None]) -> None:
        barrier.wait()
        try:
            fn()
        except BaseException as e:  # collected for the assertion in the test thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(fn,)) for fn in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return errors


def test_threads_with_different_tasks_on_one_backbone_each_get_their_own_result(adapter):
    model = backbone()
    tasks = [make_task(adapter, 2 + i, seed=i) for i in range(4)]
    x = [images(model, 2, seed=i) for i in range(4)]
    with torch.no_grad():
        references = [t.bind(model)(xi) for t, xi in zip(tasks, x, strict=True)]
        mixed_reference = mixed_task_logits(model, tasks, torch.cat(x), torch.arange(4).repeat_interleave(2))[0]

    def serve(i: int) -> Callable[[], None]:
        def work() -> None:
            classifier = tasks[i].bind(model)
            for _ in range(5):
                with torch.no_grad():
                    if i == 3:  # one thread serves a mixed batch (one delta per sample) meanwhile
                        got = mixed_task_logits(model, tasks, torch.cat(x), torch.arange(4).repeat_interleave(2))[0]
                        assert torch.equal(got, mixed_reference)
                    assert torch.equal(classifier(x[i]), references[i]), f"thread {i} got another task's logits"

        return work

    assert _in_threads([serve(i) for i in range(4)]) == []
    _INJECTED[model].remove()
    assert no_hooks_left(model) == []


@pytest.mark.parametrize("trial", range(6))
def test_concurrent_first_binds_share_one_injection(adapter, trial):
    """Threads binding tasks to a fresh backbone at the same moment: before the fix, two of them could both inject it
    ("already carries a lang2net hook") and the loser unregistered the winner's injection."""
    model = backbone()
    task = make_task(adapter, 3, seed=trial)
    classifiers: list = []
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible to open any race window
    try:
        errors = _in_threads([lambda: classifiers.append(task.bind(model)) for _ in range(4)])
    finally:
        sys.setswitchinterval(switch)
    assert errors == []
    assert len({id(c.injection) for c in classifiers}) == 1 and _INJECTED[model] is classifiers[0].injection
    classifiers[0].injection.remove()
    assert no_hooks_left(model) == [] and model not in _INJECTED


def test_generation_while_other_threads_run_inference(adapter):
    model = backbone()
    sets = [{f"set {k} class {i}": f"text {i}" for i in range(2 + k)} for k in range(3)]
    generated = [adapter.generate(d, embeddings=embeddings(len(d), k)) for k, d in enumerate(sets)]
    tasks = [make_task(adapter, 3, seed=10 + i) for i in range(3)]
    x = images(model, 2)
    with torch.no_grad():
        references = [t.bind(model)(x) for t in tasks]

    def generate() -> None:
        for j in range(30):
            k = j % 3
            assert same_task(adapter.generate(sets[k], embeddings=embeddings(len(sets[k]), k)), generated[k])

    def infer(i: int) -> Callable[[], None]:
        def work() -> None:
            for _ in range(8):
                with torch.no_grad():
                    assert torch.equal(tasks[i].bind(model)(x), references[i])

        return work

    assert _in_threads([generate, *(infer(i) for i in range(3))]) == []
    _INJECTED[model].remove()
    assert no_hooks_left(model) == []


def test_remove_or_merge_while_another_thread_applies_is_refused(adapter):
    """Changing hooks or weights under a running apply() would change that thread's results: it raises instead, and
    the running thread's logits stay those of its task."""
    model = backbone()
    task = make_task(adapter, 3)
    x = images(model, 2)
    classifier = task.bind(model)
    inj = _INJECTED[model]
    with torch.no_grad():
        reference = classifier(x)
    inside, release, got = threading.Event(), threading.Event(), {}

    def hold() -> None:
        with torch.no_grad(), inj.apply(classifier.deltas):
            inside.set()
            release.wait(10)
            got["logits"] = adapted_logits(model, None, {}, classifier.head.weight, classifier.head.bias, x)

    worker = threading.Thread(target=hold)
    worker.start()
    assert inside.wait(10)
    try:
        for call in (inj.remove, lambda: inj.merge(classifier.deltas), inj.unmerge):
            with pytest.raises(RuntimeError, match=r"while 1 inj.apply\(\) call\(s\) run in other threads"):
                call()
    finally:
        release.set()
        worker.join(10)
    assert torch.equal(got["logits"], reference)  # the other thread kept its task's deltas
    inj.merge(classifier.deltas)  # once nobody applies, both work again
    inj.unmerge()
    inj.remove()
    assert no_hooks_left(model) == []


def test_text_encoder_cache_is_safe_across_threads():
    """Threads encoding overlapping texts through a small LRU get the serial embeddings and a consistent cache."""
    encoder = lang2net.TextEncoder(lang2net.PACKAGED_MINILM, cache_size=8)
    texts = [f"a picture of thing number {i}" for i in range(24)]
    reference = lang2net.TextEncoder(lang2net.PACKAGED_MINILM, cache_size=0).encode(texts)
    results: dict[int, torch.Tensor] = {}

    def work(i: int) -> Callable[[], None]:
        def run() -> None:
            order = texts[i:] + texts[:i]
            for _ in range(3):
                results[i] = encoder.encode(order)

        return run

    assert _in_threads([work(i) for i in range(4)]) == []
    for i, got in results.items():
        assert torch.allclose(got, torch.cat([reference[i:], reference[:i]]), atol=1e-5)
    info = encoder.cache_info()
    assert info["size"] <= 8 and info["hits"] + info["misses"] == 4 * 3 * 24
