"""Protocol C (lang2net.workflows.few_way): few-way tasks among the unseen classes, on the benchmark's tiny colour set."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from test_benchmark import (
    CATEGORIES,
    SIZE,
    TRAIN,
    UNSEEN,
    VALIDATION,
    local_order,
    make_adapter,
    one_thread,  # noqa: F401  (autouse fixture: one BLAS thread)
    two_styles,
)

import lang2net
from lang2net.data import ClassSplit, to_backbone_input
from lang2net.workflows.benchmark import FeatureCache, run_benchmark
from lang2net.workflows.benchmark_report import BenchmarkOptions, markdown_report
from lang2net.workflows.few_way import (
    aggregate_protocol_c,
    paired_difference,
    per_class_accuracy,
    sample_tasks,
    similar_tasks,
)
from lang2net.workflows.recipe import EvalConfig

# the fixtures save generators that name a local backbone file; the warning saying others cannot load it is expected
pytestmark = pytest.mark.filterwarnings("ignore:the saved config names the local path")
WAYS, ROUNDS = 4, 3  # 6 unseen classes: one full task and a filled-up one per round


@pytest.fixture(scope="module")
def styles():
    return two_styles()


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    """One fixed random backbone in a file: each generator the benchmark loads builds the same one (with
    ``random`` weights every ``create_backbone`` would draw new ones, and no reference could be recomputed)."""
    from safetensors.torch import save_file

    from lang2net.backbones import create_backbone

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("backbone") / "test_resnet.safetensors"
    save_file({k: v.contiguous() for k, v in create_backbone("test_resnet").state_dict().items()}, path)
    return str(path)


def fixed(mode: str, weights: str) -> lang2net.LanguageConditionedAdapter:
    config = make_adapter(mode).config
    torch.manual_seed(1)
    return lang2net.LanguageConditionedAdapter(dataclasses.replace(config, backbone_weights=weights))


@pytest.fixture(scope="module")
def adapter(weights):
    return fixed("core", weights)


@pytest.fixture(scope="module")
def cache(adapter):
    return FeatureCache.for_adapter(adapter, batch_size=16, device="cpu")


@pytest.fixture(scope="module")
def generators(tmp_path_factory, adapter):
    root = tmp_path_factory.mktemp("generators")
    adapter.save_pretrained(root / "full")
    fixed("none", adapter.config.backbone_weights).save_pretrained(root / "head_only")
    return {"full": root / "full", "head_only": root / "head_only"}


@pytest.fixture(scope="module")
def result(styles, adapter, cache, generators):
    split = ClassSplit(fold=0, seen=TRAIN + VALIDATION, unseen=UNSEEN, validation=VALIDATION)
    return run_benchmark(
        split,
        *styles,
        adapter,
        generators,
        features=cache,
        img_size=SIZE,
        batch_size=16,
        categories=CATEGORIES,
        n_boot=200,
        few_way=(2, WAYS),
        few_way_rounds=ROUNDS,
        few_way_similar=(WAYS,),
    )


# task sampling


def test_every_class_is_in_every_round_and_no_task_repeats_a_class():
    for n, ways in ((6, 4), (215, 5), (215, 20), (10, 10), (7, 2)):
        tasks = sample_tasks(n, ways, rounds=4, seed=3)
        per_round = -(-n // ways)
        assert tasks.shape == (4 * per_round, ways)
        for r in range(4):
            chunk = tasks[r * per_round : (r + 1) * per_round]
            assert set(chunk.flatten().tolist()) == set(range(n))
            assert all(len(set(t.tolist())) == ways for t in chunk)
    assert torch.equal(sample_tasks(215, 5, 2, seed=1), sample_tasks(215, 5, 2, seed=1))
    assert not torch.equal(sample_tasks(215, 5, 2, seed=1), sample_tasks(215, 5, 2, seed=2))
    with pytest.raises(ValueError, match="ways=7 exceeds the 6 classes"):
        sample_tasks(6, 7, 1)
    with pytest.raises(ValueError, match="ways"):
        sample_tasks(6, 1, 1)


def test_per_class_accuracy_equals_a_loop_over_tasks_and_images():
    g = torch.Generator().manual_seed(0)
    n, labels = 9, torch.randint(0, 9, (60,), generator=g)
    labels[:9] = torch.arange(9)  # every class has an image
    scores = torch.randn(60, n, generator=g)
    tasks = sample_tasks(n, 4, 5, seed=0)
    got = per_class_accuracy(lambda classes, rows: scores[rows][:, classes], tasks, labels, n)
    hits: dict[int, list[float]] = {c: [] for c in range(n)}
    for task in tasks.tolist():
        for j, c in enumerate(task):
            images = [i for i in range(60) if labels[i] == c]
            right = [max(range(len(task)), key=lambda k: scores[i, task[k]]) == j for i in images]
            hits[c].append(sum(right) / len(right))
    want = torch.tensor([sum(h) / len(h) for h in hits.values()], dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-12)
    # fewer competitors never hurt a column-wise scorer: every class scores at least its all-way top-1
    all_way = torch.tensor([(scores[labels == c].argmax(1) == c).double().mean().item() for c in range(n)])
    assert (got >= all_way - 1e-12).all() and got.mean() > all_way.mean()


def test_per_class_accuracy_names_bad_labels_and_scorer_shapes():
    tasks = sample_tasks(4, 2, 1)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        per_class_accuracy(lambda c, r: torch.zeros(len(r), len(c)), tasks, torch.tensor([0, 4]), 4)
    with pytest.raises(ValueError, match="returned"):
        per_class_accuracy(lambda c, r: torch.zeros(len(r), 3), tasks, torch.arange(4), 4)
    with pytest.raises(ValueError, match=r"classes \[3\] have no test image"):
        per_class_accuracy(lambda c, r: torch.zeros(len(r), len(c)), tasks, torch.tensor([0, 1, 2]), 4)


def test_paired_difference():
    a = [0.9, 0.8, 0.7, 0.95, 0.85, 0.9, 0.75, 0.8, 0.9, 0.85]
    same = paired_difference(a, a)
    assert same["diff"] == 0 and same["p"] == 1.0 and same["ci"] == [0.0, 0.0]
    lower = [x - 0.3 for x in a]
    shifted = paired_difference(a, lower)
    assert shifted["diff"] == pytest.approx(0.3)
    assert shifted["ci"][0] == pytest.approx(0.3) and shifted["ci"][1] == pytest.approx(0.3)
    assert shifted["p"] < 0.01  # ten classes all +0.3: 2 of 1024 sign patterns are as extreme
    noisy = paired_difference(a, [x + (0.05 if i % 2 else -0.05) for i, x in enumerate(a)])
    assert noisy["p"] > 0.5 and noisy["ci"][0] < 0 < noisy["ci"][1]
    with pytest.raises(ValueError, match="equal-length"):
        paired_difference([0.1, 0.2], [0.1])


def test_similar_tasks_group_the_nearest_classes_and_keep_every_class_in_every_round():
    torch.manual_seed(0)
    cluster = torch.arange(12) // 4  # three groups of four, close within and far across
    similarity = (cluster[:, None] == cluster[None]).float() + 0.01 * torch.rand(12, 12)
    tasks = similar_tasks(similarity, 4, rounds=5, seed=3)
    assert tasks.shape == (15, 4)
    assert all(len(set(cluster[t].tolist())) == 1 for t in tasks)  # each task is one group
    odd = similar_tasks(similarity[:10, :10], 4, rounds=3)  # 10 classes: a filled-up last task per round
    assert odd.shape == (9, 4)
    for r in range(3):
        round_tasks = odd[3 * r : 3 * r + 3]
        assert set(round_tasks.flatten().tolist()) == set(range(10))
        assert all(len(set(t.tolist())) == 4 for t in round_tasks)
    assert torch.equal(similar_tasks(similarity, 4, 2, seed=1), similar_tasks(similarity, 4, 2, seed=1))
    with pytest.raises(ValueError, match=r"ways=13 exceeds the 12 classes"):
        similar_tasks(similarity, 13, 1)
    with pytest.raises(ValueError, match=r"similarity must be square \(n, n\), got \(12, 3\)"):
        similar_tasks(similarity[:, :3], 2, 1)


# the benchmark's protocol C


def test_protocol_c_result(result, styles, adapter):
    c = result["protocol_c"]
    assert set(c) == {"2", str(WAYS), f"{WAYS}-similar"}
    descriptions = {k: list(styles[0].descriptions[k]) for k in UNSEEN}
    emb = torch.nn.functional.normalize(adapter.text_encoder.encode_classes(descriptions).float(), dim=1)
    tasks = similar_tasks(emb @ emb.T, WAYS, ROUNDS)  # the tasks of similar classes, from the fold's class texts
    assert c[f"{WAYS}-similar"]["n_tasks"] == len(tasks) == 2 * ROUNDS
    entry = c[str(WAYS)]
    assert entry["n_tasks"] == 2 * ROUNDS and entry["chance"] == 1 / WAYS
    assert set(entry["methods"]) == {"eszsl", "devise", "conse", "full", "head_only"}
    assert set(entry["paired"]) == {"full_vs_head_only"}
    for method in entry["methods"].values():
        assert list(method["per_class_top1"]) == UNSEEN
        assert method["top1"] == pytest.approx(sum(method["per_class_top1"].values()) / len(UNSEEN))
    pair = entry["paired"]["full_vs_head_only"]
    full, head = entry["methods"]["full"]["per_class_top1"], entry["methods"]["head_only"]["per_class_top1"]
    assert pair["diff"] == pytest.approx(sum(full[k] - head[k] for k in UNSEEN) / len(UNSEEN))
    json.dumps(result, allow_nan=False)
    assert {f"protocol_c_{WAYS}:full", f"protocol_c_{WAYS}:head_only"} <= set(result["timings"])


def test_baselines_are_their_protocol_a_columns(result):
    """A closed-form baseline's few-way top-1 per class is never below its all-way top-1 (a subset of the columns)."""
    for method in ("eszsl", "devise", "conse"):
        all_way = result["protocol_a"][method]["per_class_top1"]
        for key in ("2", f"{WAYS}-similar"):
            few = result["protocol_c"][key]["methods"][method]["per_class_top1"]
            assert all(few[c] >= all_way[c] - 1e-12 for c in UNSEEN), (method, key)


@pytest.mark.parametrize("method", ["full", "head_only"])
def test_generators_write_one_classifier_per_task(result, styles, generators, cache, method):
    """Each task's classifier, written by the saved generator and run bound on the images, gives the reported values
    (head_only reads plain features computed once; full runs its deltas per task)."""
    generator = lang2net.LanguageConditionedAdapter.from_pretrained(generators[method])
    backbone = generator.create_backbone()
    hits: dict[str, list[float]] = {c: [] for c in UNSEEN}
    for task_classes in sample_tasks(len(UNSEEN), WAYS, ROUNDS).tolist():
        names = [UNSEEN[i] for i in task_classes]
        task = generator.generate({c: styles[0].descriptions[c] for c in names})
        logits, labels = [], []
        with torch.no_grad():
            for data in styles:
                rows, y = local_order(data, names)
                logits.append(task.bind(backbone)(to_backbone_input(data.images[rows], cache.data_config, SIZE)))
                labels.append(y)
        pred, truth = torch.cat(logits).argmax(1), torch.cat(labels)
        for j, c in enumerate(names):
            hits[c].append((pred[truth == j] == j).double().mean().item())
    got = result["protocol_c"][str(WAYS)]["methods"][method]["per_class_top1"]
    assert got == pytest.approx({c: sum(h) / len(h) for c, h in hits.items()}, abs=1e-12)


@pytest.mark.parametrize("method", ["full", "head_only"])
def test_task_logits_equal_the_bound_classifier(styles, adapter, cache, generators, method):
    """The scorer's logits per task equal the task bound to a fresh backbone on the same images. The random
    generators here put every image in one class, so accuracies alone would not tell tasks apart; logits do."""
    from lang2net.workflows import benchmark

    split = ClassSplit(fold=0, seen=TRAIN + VALIDATION, unseen=UNSEEN, validation=VALIDATION)
    options = BenchmarkOptions(img_size=SIZE, batch_size=16, few_way=(WAYS,), few_way_rounds=ROUNDS)
    run = benchmark._start(split, dict(zip(options.styles, styles, strict=True)), adapter, cache, options, {}, ({}, {}))
    test = run.fold.parts("unseen")
    images, labels = benchmark._images(run.fold, test), run.fold.gather(test)[1] - len(TRAIN + VALIDATION)
    scorer = benchmark._Generator.load(generators[method], run).task_scorer(UNSEEN, images)
    generator = lang2net.LanguageConditionedAdapter.from_pretrained(generators[method])
    backbone = generator.create_backbone()
    for task_classes in sample_tasks(len(UNSEEN), WAYS, ROUNDS):
        rows = torch.nonzero(torch.isin(labels, task_classes)).flatten()
        task = generator.generate({UNSEEN[i]: styles[0].descriptions[UNSEEN[i]] for i in task_classes})
        assert bool(task.deltas) == (method == "full")
        with torch.no_grad():
            want = task.bind(backbone)(to_backbone_input(images[rows], cache.data_config, SIZE))
        got = scorer(task_classes, rows)
        assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
        assert want.std(1).min() > 1e-3  # the classes' logits differ: a column swap would be seen


def test_report_and_aggregate(result):
    second = {**result, "fold": 1}
    summary = aggregate_protocol_c([result, second])
    top1 = result["protocol_c"]["2"]["methods"]["full"]["top1"]
    assert summary["2"]["methods"]["full"]["top1"] == {"mean": pytest.approx(top1), "std": 0.0, "n": 2}
    assert [e["fold"] for e in summary["2"]["paired"]["full_vs_head_only"]] == [0, 1]
    text = markdown_report([result, second], "colours")
    assert f"## Protocol C: {WAYS}-way tasks among the unseen classes" in text
    assert f"## Protocol C: {WAYS}-way tasks of similar classes among the unseen classes" in text
    assert f"| full | {100 * top1:.1f} ± 0.0 |" in text
    assert "- full - head_only: fold 0:" in text
    without = {k: v for k, v in result.items() if k != "protocol_c"}
    assert "Protocol C" not in markdown_report([without], "colours")


def test_options_are_checked():
    with pytest.raises(ValueError, match="few_way"):
        BenchmarkOptions(few_way=(1,))
    with pytest.raises(ValueError, match="few_way_rounds"):
        BenchmarkOptions(few_way_rounds=0)
    with pytest.raises(ValueError, match=r"eval.few_way must be a list of class counts >= 2, got \[5, 1\]"):
        EvalConfig(few_way=[5, 1])
    assert EvalConfig(few_way=[5, 20]).few_way == [5, 20]
    with pytest.raises(ValueError, match=r"eval.few_way_similar must be a list of class counts >= 2, got \[1\]"):
        EvalConfig(few_way_similar=[1])
    with pytest.raises(ValueError, match="few_way"):
        BenchmarkOptions(few_way_similar=(1,))
