"""Tests for lang2net.workflows.benchmark: the two-style zero-shot benchmark on a tiny fake colour dataset."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import lang2net
from lang2net.backbones import pooled_features
from lang2net.data import ClassSplit, LabeledImages, to_backbone_input
from lang2net.workflows.benchmark import BenchmarkOptions, FeatureCache, run_benchmark
from lang2net.workflows.benchmark_report import aggregate_benchmark, markdown_report, write_benchmark_report
from lang2net.workflows.evaluation import text_similarity_scorer
from lang2net.workflows.metrics import bootstrap_ci, gzsl_metrics, mcnemar, per_class_topk
from lang2net.workflows.zsl import calibrated_stacking, choose_calibration, eszsl_fit, eszsl_scores

COLOURS = {
    "red": (220, 30, 30),
    "orange": (250, 140, 0),
    "yellow": (245, 230, 40),
    "lime": (150, 240, 40),
    "green": (20, 140, 40),
    "teal": (0, 128, 128),
    "cyan": (40, 220, 230),
    "blue": (30, 60, 220),
    "navy": (10, 20, 100),
    "purple": (120, 40, 160),
    "magenta": (230, 40, 200),
    "pink": (250, 170, 200),
    "brown": (120, 70, 20),
    "maroon": (110, 10, 30),
    "olive": (120, 120, 20),
    "black": (10, 10, 10),
}
NAMES = list(COLOURS)
TRAIN, VALIDATION, UNSEEN = NAMES[:7], NAMES[7:10], NAMES[10:]
CATEGORIES = {name: ("warm" if i % 3 == 0 else "cool" if i % 3 == 1 else "dark") for i, name in enumerate(NAMES)}
PER_CLASS, SIZE = 3, 32


def two_styles() -> tuple[LabeledImages, LabeledImages]:
    """16 colour classes, 3 noisy images per class per style: a filled square ("twitter") or a disc ("google")."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    shapes = {
        "twitter": (yy - 15.5).abs().maximum((xx - 15.5).abs()) < 10,
        "google": (yy - 15.5) ** 2 + (xx - 15.5) ** 2 < 12**2,
    }
    descriptions = {c: [f"a {c} emoji", f"a small picture coloured {c}"] for c in NAMES}
    out = []
    for mask in shapes.values():
        images = torch.full((len(NAMES) * PER_CLASS, SIZE, SIZE, 3), 235.0)
        for k in range(len(NAMES) * PER_CLASS):
            images[k][mask] = torch.tensor(COLOURS[NAMES[k // PER_CLASS]], dtype=torch.float)
        images = (images + 12 * torch.randn(images.shape, generator=g)).clamp(0, 255).to(torch.uint8)
        labels = torch.arange(len(NAMES)).repeat_interleave(PER_CLASS)
        out.append(LabeledImages(images, labels, list(NAMES), descriptions, "colours"))
    return out[0], out[1]


def make_adapter(mode: str = "core") -> lang2net.LanguageConditionedAdapter:
    torch.manual_seed(0)
    config = lang2net.AdapterConfig(
        backbone="test_resnet",
        backbone_weights="random",
        text_encoder=lang2net.PACKAGED_MINILM,
        d_model=32,
        n_heads=2,
        delta_mode=mode,
    )
    return lang2net.LanguageConditionedAdapter(config)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small float64 solves thrash with several BLAS threads on a shared machine (60x slower); restore afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def styles():
    return two_styles()


@pytest.fixture(scope="module")
def split():
    return ClassSplit(fold=0, seen=TRAIN + VALIDATION, unseen=UNSEEN, validation=VALIDATION)


@pytest.fixture(scope="module")
def adapter():
    return make_adapter()


@pytest.fixture(scope="module")
def cache(adapter):
    return FeatureCache.for_adapter(adapter, batch_size=16, device="cpu")


@pytest.fixture(scope="module")
def generators(tmp_path_factory, adapter):
    root = tmp_path_factory.mktemp("generators")
    adapter.save_pretrained(root / "full")
    make_adapter("none").save_pretrained(root / "head_only")
    return {"full": root / "full", "head_only": root / "head_only"}


@pytest.fixture(scope="module")
def result(styles, split, adapter, cache, generators):
    twitter, google = styles
    return run_benchmark(
        split,
        twitter,
        google,
        adapter,
        generators,
        {"full": generators["full"]},
        features=cache,
        img_size=SIZE,
        batch_size=16,
        categories=CATEGORIES,
        n_boot=200,
    )


def direct_features(cache: FeatureCache, data: LabeledImages) -> torch.Tensor:
    """Pooled features of all images in one batch, without the cache."""
    with torch.no_grad():
        return pooled_features(cache.backbone, to_backbone_input(data.images, cache.data_config, SIZE))


def local_order(data: LabeledImages, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``data`` whose class is in ``classes`` and their labels as positions in ``classes``."""
    keep = torch.tensor([data.class_names[int(y)] in classes for y in data.labels])
    labels = torch.tensor([classes.index(data.class_names[int(y)]) for y in data.labels[keep]])
    return torch.nonzero(keep).flatten(), labels


def class_embeddings(adapter, data: LabeledImages, classes: list[str]) -> torch.Tensor:
    return F.normalize(adapter.text_encoder.encode_classes({c: data.descriptions[c] for c in classes}), dim=1)


# protocol A


def test_result_shape_and_counts(result):
    assert result["fold"] == 0 and result["n_unseen"] == 6
    assert (result["n_train"], result["n_validation"]) == (7, 3)
    assert result["n_test_a"] == 2 * PER_CLASS * 6
    assert set(result["protocol_a"]) == {"chance", "eszsl", "devise", "conse", "full", "head_only"}
    assert set(result["protocol_b"]) == {"chance", "eszsl", "devise", "conse", "full"}
    json.dumps(result, allow_nan=False)  # JSON-able, no NaN
    assert all(t > 0 for t in result["timings"].values()), result["timings"]  # every stage did work, and was timed
    assert {"features_and_text", "protocol_a:eszsl", "protocol_a:full", "protocol_b:full"} <= set(result["timings"])


def test_protocol_a_equals_a_direct_recomputation(result, styles, adapter, cache):
    """ESZSL refitted by hand on train + validation classes (both styles) gives the reported numbers."""
    twitter, google = styles
    entry = result["protocol_a"]["eszsl"]
    classes = TRAIN + VALIDATION + UNSEEN
    emb = class_embeddings(adapter, twitter, classes)
    fit_x, fit_y, test_x, test_y = [], [], [], []
    for data in (twitter, google):
        feats = direct_features(cache, data)
        rows, labels = local_order(data, TRAIN + VALIDATION)
        fit_x.append(feats[rows])
        fit_y.append(labels)
        rows, labels = local_order(data, UNSEEN)
        test_x.append(feats[rows])
        test_y.append(labels)
    # centred on the train classes' images (the fit set before the refit adds validation), then L2-normalised
    train_only = torch.cat([direct_features(cache, d)[local_order(d, TRAIN)[0]] for d in (twitter, google)])
    mean = train_only.mean(0)
    fit = torch.nn.functional.normalize(torch.cat(fit_x) - mean, dim=1)
    test = torch.nn.functional.normalize(torch.cat(test_x) - mean, dim=1)
    v = eszsl_fit(fit, torch.cat(fit_y), emb, **entry["params"])
    scores = eszsl_scores(test, v, emb[len(TRAIN) + len(VALIDATION) :])
    direct = per_class_topk(scores, torch.cat(test_y), k=(1, 5))
    assert entry["top1"] == pytest.approx(direct["top1"], abs=1e-12)
    assert entry["top5"] == pytest.approx(direct["top5"], abs=1e-12)
    assert entry["top1_ci"] == pytest.approx(list(bootstrap_ci(direct["per_class_top1"], n_boot=200)))
    assert list(entry["per_class_top1"]) == [UNSEEN[i] for i in direct["classes"].tolist()]


def test_top5_covers_top1_and_cis_are_ordered(result):
    for name, entry in result["protocol_a"].items():
        assert 0 <= entry["top1"] <= entry["top5"] <= 1, name
        lo, hi = entry["top1_ci"]
        assert 0 <= lo <= hi <= 1, name
    # 6 unseen classes: a top-5 miss needs the true class ranked last, so every method's top-5 is well above chance top-1
    assert all(e["top5"] > 1 / 6 for e in result["protocol_a"].values())


def test_per_category_is_the_mean_of_its_classes(result):
    for name, entry in result["protocol_a"].items():
        if name == "chance":
            assert entry["per_category"] == {"cool": 1 / 6, "dark": 1 / 6, "warm": 1 / 6}
            continue
        expected: dict[str, list[float]] = {}
        for c, acc in entry["per_class_top1"].items():
            expected.setdefault(CATEGORIES[c], []).append(acc)
        assert entry["per_category"] == pytest.approx({k: sum(v) / len(v) for k, v in expected.items()})


def test_chance_rows(result):
    a, b = result["protocol_a"]["chance"], result["protocol_b"]["chance"]
    assert (a["top1"], a["top5"]) == (1 / 6, 5 / 6)
    assert all(b[k] == 1 / 16 for k in ("seen", "unseen", "h", "seen_cal", "unseen_cal", "h_cal"))
    assert b["gamma"] == 0.0


def test_generator_method_matches_its_task_on_the_images(result, styles, generators, cache):
    """The "full" row equals the task the saved generator writes for the unseen classes, run on the test images."""
    twitter, google = styles
    generator = lang2net.LanguageConditionedAdapter.from_pretrained(generators["full"])
    backbone = generator.create_backbone()
    task = generator.generate({c: twitter.descriptions[c] for c in UNSEEN})
    scores, labels = [], []
    with torch.no_grad():
        for data in (twitter, google):
            rows, y = local_order(data, UNSEEN)
            scores.append(task.bind(backbone)(to_backbone_input(data.images[rows], cache.data_config, SIZE)))
            labels.append(y)
    direct = per_class_topk(torch.cat(scores), torch.cat(labels), k=(1, 5))
    entry = result["protocol_a"]["full"]
    assert entry["top1"] == pytest.approx(direct["top1"], abs=1e-12)
    assert entry["top5"] == pytest.approx(direct["top5"], abs=1e-12)
    assert len(entry["correct"]) == result["n_test_a"]


def test_mcnemar_full_vs_head_only(result):
    a = result["protocol_a"]
    expected = mcnemar(a["full"]["correct"], a["head_only"]["correct"])
    assert result["mcnemar_full_vs_head_only"] == expected
    assert 0 < expected <= 1


def test_conse_on_cached_features_equals_conse_on_images(result, styles, adapter, cache):
    """ConSE runs on the feature cache through the backbone's own classifier; the image path gives the same hits."""
    twitter, google = styles
    scorer = text_similarity_scorer(cache.backbone, adapter.text_encoder, twitter.descriptions, 10)
    correct = []
    with torch.no_grad():
        for data in (twitter, google):
            rows, y = local_order(data, UNSEEN)
            scores = scorer(to_backbone_input(data.images[rows], cache.data_config, SIZE), UNSEEN)
            correct.append((scores >= scores.gather(1, y[:, None])).sum(1) <= 1)
    assert torch.cat(correct).int().tolist() == result["protocol_a"]["conse"]["correct"]


def test_examples_point_at_real_test_images(result, styles):
    twitter, google = styles
    examples = result["examples"]
    assert examples["method"] == "full"
    assert len(examples["items"]) == 24
    data = {"twitter": twitter, "google": google}
    for item in examples["items"]:
        assert twitter.class_names[int(data[item["style"]].labels[item["index"]])] == item["true"]
        assert item["true"] in UNSEEN and item["predicted"] in UNSEEN
        assert 1 / 6 <= item["confidence"] <= 1
        assert item["description"] == twitter.descriptions[item["true"]][0]
    assert {item["style"] for item in examples["items"]} == {"twitter", "google"}


# protocol B


def test_calibration_does_not_lower_h_where_it_was_chosen(result):
    for name, entry in result["protocol_b"].items():
        assert entry["h_val_cal"] >= entry["h_val_raw"], name
    # ties in H go to the smallest |gamma|: a calibration that gains nothing on validation is no calibration
    for name, entry in result["protocol_b"].items():
        if name != "chance" and entry["h_val_cal"] == entry["h_val_raw"]:
            assert entry["gamma"] == 0 and entry["h_cal"] == entry["h"], name


def test_train_classes_are_recognised_across_styles(result):
    """Fitted on squares, tested on discs of the same colours: the cached features separate the train classes."""
    assert result["protocol_b"]["eszsl"]["seen"] == 1.0
    assert result["protocol_b"]["devise"]["seen"] > 0.9


def test_protocol_b_equals_a_direct_recomputation(result, styles, adapter, cache):
    """ESZSL fitted on twitter images of the train classes, gamma from google train + validation images only."""
    twitter, google = styles
    entry = result["protocol_b"]["eszsl"]
    classes = TRAIN + VALIDATION + UNSEEN
    emb = class_embeddings(adapter, twitter, classes)
    rows, labels = local_order(twitter, TRAIN)
    v = eszsl_fit(direct_features(cache, twitter)[rows], labels, emb, **entry["params"])
    rows, labels = local_order(google, classes)
    scores = eszsl_scores(direct_features(cache, google)[rows], v, emb)
    seen = torch.arange(len(classes)) < len(TRAIN)
    calib = labels < len(TRAIN) + len(VALIDATION)
    gamma, h_val = choose_calibration(scores[calib], labels[calib], seen)
    test = ~calib | (labels < len(TRAIN))
    raw = gzsl_metrics(scores[test], labels[test], seen)
    cal = gzsl_metrics(calibrated_stacking(scores[test], seen, gamma), labels[test], seen)
    assert entry["gamma"] == pytest.approx(gamma, rel=1e-5, abs=1e-7)
    assert entry["h_val_cal"] == pytest.approx(h_val)
    assert [entry[k] for k in ("seen", "unseen", "h")] == pytest.approx([raw["seen"], raw["unseen"], raw["h"]])
    assert [entry[k] for k in ("seen_cal", "unseen_cal", "h_cal")] == pytest.approx(
        [cal["seen"], cal["unseen"], cal["h"]]
    )


# feature cache


def test_feature_cache_round_trips_bit_identically(tmp_path, styles, cache):
    twitter, _ = styles
    kwargs = {"backbone_name": "test_resnet", "weights": "random", "cache_dir": tmp_path, "batch_size": 16}
    first = FeatureCache(cache.backbone, cache.data_config, **kwargs)
    features = first.features(twitter, "twitter", SIZE)
    path = first.path("colours", "twitter", SIZE)
    assert path.is_file() and path.name == "colours__twitter__32px__test_resnet__random.safetensors"
    assert first.computed == 1 and features.shape == (len(twitter), cache.backbone.num_features)
    second = FeatureCache(cache.backbone, cache.data_config, **kwargs)
    loaded = second.features(twitter, "twitter", SIZE)
    assert second.computed == 0 and loaded.dtype == features.dtype and torch.equal(loaded, features)
    assert torch.allclose(features, direct_features(cache, twitter), atol=1e-5)
    changed = LabeledImages(
        twitter.images.flip(1), twitter.labels, twitter.class_names, twitter.descriptions, "colours"
    )
    recomputed = second.features(changed, "twitter", SIZE)  # same key, other images: stale file, recomputed
    assert second.computed == 1 and not torch.equal(recomputed, features)
    again = FeatureCache(cache.backbone, cache.data_config, **kwargs)
    assert torch.equal(again.features(changed, "twitter", SIZE), recomputed) and again.computed == 0
    torch.manual_seed(1)
    other = FeatureCache(lang2net.create_backbone("test_resnet", "random"), cache.data_config, **kwargs)
    assert other.weights_digest != first.weights_digest
    assert not torch.equal(other.features(changed, "twitter", SIZE), recomputed)  # other weights: not reused
    assert other.computed == 1


def test_feature_cache_rejects_bad_sizes(cache, styles):
    with pytest.raises(ValueError, match="img_size"):
        cache.features(styles[0], "twitter", 0)
    with pytest.raises(ValueError, match="batch_size"):
        FeatureCache(cache.backbone, cache.data_config, backbone_name="x", weights="random", batch_size=0)


# arguments


def test_bad_arguments_are_named(styles, split, adapter, cache):
    twitter, google = styles
    with pytest.raises(ValueError, match="clash"):
        run_benchmark(split, twitter, google, adapter, {"eszsl": "somewhere"}, features=cache)
    with pytest.raises(ValueError, match="no validation classes"):
        no_val = ClassSplit(fold=1, seen=TRAIN, unseen=UNSEEN)
        run_benchmark(no_val, twitter, google, adapter, features=cache, img_size=SIZE, conse_top_k=None)
    with pytest.raises(ValueError, match="styles"):
        BenchmarkOptions(styles=("a", "a"))
    with pytest.raises(ValueError, match="n_boot"):
        BenchmarkOptions(n_boot=0)


# fit-only styles


def third_style() -> LabeledImages:
    """The same 16 colour classes drawn as a diamond: a training-only style ("openmoji")."""
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    mask = (yy - 15.5).abs() + (xx - 15.5).abs() < 13
    twitter, _ = two_styles()
    images = torch.full((len(NAMES) * PER_CLASS, SIZE, SIZE, 3), 235.0)
    for k in range(len(NAMES) * PER_CLASS):
        images[k][mask] = torch.tensor(COLOURS[NAMES[k // PER_CLASS]], dtype=torch.float)
    images = (images + 12 * torch.randn(images.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    return LabeledImages(images, twitter.labels, list(NAMES), twitter.descriptions, "colours")


def test_fit_only_styles_join_the_baselines_fits_not_the_tests(styles, split, adapter, cache):
    """ESZSL refitted by hand on train + validation classes of all three styles gives the reported protocol A."""
    twitter, google = styles
    third = third_style()
    result = run_benchmark(split, twitter, google, adapter, features=cache, img_size=SIZE, conse_top_k=None,
                           n_boot=50, fit_a={"openmoji": third}, fit_b={"openmoji": third})  # fmt: skip
    assert result["fit_styles_a"] == ["twitter", "google", "openmoji"]
    assert result["fit_styles_b"] == ["twitter", "openmoji"]
    assert result["n_test_a"] == 2 * PER_CLASS * len(UNSEEN)  # the test images stay the two styles'
    entry = result["protocol_a"]["eszsl"]
    classes = TRAIN + VALIDATION + UNSEEN
    emb = class_embeddings(adapter, twitter, classes)
    feats = {name: direct_features(cache, data) for name, data in (("t", twitter), ("g", google), ("o", third))}
    data = {"t": twitter, "g": google, "o": third}
    mean = torch.cat([feats[k][local_order(data[k], TRAIN)[0]] for k in "tgo"]).mean(0)
    fit = [(feats[k][local_order(data[k], TRAIN + VALIDATION)[0]], local_order(data[k], TRAIN + VALIDATION)[1])
           for k in "tgo"]  # fmt: skip
    x = F.normalize(torch.cat([f for f, _ in fit]) - mean, dim=1)
    v = eszsl_fit(x, torch.cat([y for _, y in fit]), emb, **entry["params"])
    test = [(feats[k][local_order(data[k], UNSEEN)[0]], local_order(data[k], UNSEEN)[1]) for k in "tg"]
    scores = eszsl_scores(F.normalize(torch.cat([f for f, _ in test]) - mean, dim=1), v, emb[-len(UNSEEN) :])
    assert entry["top1"] == pytest.approx(per_class_topk(scores, torch.cat([y for _, y in test]))["top1"], abs=1e-12)
    text = markdown_report([result], "t")
    assert "Baselines fitted on twitter+google+openmoji (protocol A) and twitter+openmoji (protocol B)." in text
    assert "Baselines fitted" not in markdown_report([run_benchmark(split, twitter, google, adapter, features=cache,
        img_size=SIZE, conse_top_k=None, n_boot=50)], "t")  # fmt: skip
    with pytest.raises(ValueError, match=r"fit-only styles \['google'\] must differ from the test styles"):
        run_benchmark(split, twitter, google, adapter, features=cache, img_size=SIZE, fit_a={"google": google})
    shuffled = LabeledImages(third.images, third.labels, NAMES[::-1], third.descriptions, "colours")
    with pytest.raises(ValueError, match="the twitter and openmoji data must list the same classes"):
        run_benchmark(split, twitter, google, adapter, features=cache, img_size=SIZE, fit_b={"openmoji": shuffled})


def test_zsl_across_styles_fits_on_the_first_and_tests_on_the_second(styles, split, adapter, cache):
    """A train/test-split dataset: protocol A's ESZSL refitted by hand on the first style's train + validation
    classes and scored on the second style's unseen images gives the reported numbers; protocol B is unchanged."""
    twitter, google = styles
    result = run_benchmark(split, twitter, google, adapter, features=cache, img_size=SIZE, conse_top_k=None,
                           n_boot=50, styles=("train", "test"), zsl_across_styles=True)  # fmt: skip
    assert (result["fit_styles_a"], result["test_styles_a"]) == (["train"], ["test"])
    assert result["n_test_a"] == PER_CLASS * len(UNSEEN)
    entry = result["protocol_a"]["eszsl"]
    classes = TRAIN + VALIDATION + UNSEEN
    emb = class_embeddings(adapter, twitter, classes)
    ft, fg = direct_features(cache, twitter), direct_features(cache, google)
    mean = ft[local_order(twitter, TRAIN)[0]].mean(0)
    index, labels = local_order(twitter, TRAIN + VALIDATION)
    v = eszsl_fit(F.normalize(ft[index] - mean, dim=1), labels, emb, **entry["params"])
    index, labels = local_order(google, UNSEEN)
    scores = eszsl_scores(F.normalize(fg[index] - mean, dim=1), v, emb[-len(UNSEEN) :])
    assert entry["top1"] == pytest.approx(per_class_topk(scores, labels)["top1"], abs=1e-12)
    both = run_benchmark(split, twitter, google, adapter, features=cache, img_size=SIZE, conse_top_k=None, n_boot=50,
                         styles=("train", "test"))  # fmt: skip
    assert both["n_test_a"] == 2 * PER_CLASS * len(UNSEEN) and both["protocol_a"] != result["protocol_a"]
    assert both["protocol_b"]["eszsl"]["h_cal"] == result["protocol_b"]["eszsl"]["h_cal"]
    text = markdown_report([result], "t")
    assert "## Protocol A: zero-shot, unseen classes only (test images)" in text
    assert "Baselines fitted on train (protocol A) and train (protocol B)." in text


# aggregation and report


@pytest.fixture(scope="module")
def second_fold(styles, adapter, cache):
    """Another fold, baselines only and no ConSE (cheap: features are memoised in the shared cache)."""
    twitter, google = styles
    split = ClassSplit(fold=1, seen=NAMES[6:], unseen=NAMES[:6], validation=NAMES[6:9])
    return run_benchmark(split, twitter, google, adapter, features=cache, img_size=SIZE, conse_top_k=None, n_boot=100)


def test_aggregate_means_and_spreads_over_folds(result, second_fold):
    summary = aggregate_benchmark([result, second_fold])
    values = [result["protocol_a"]["eszsl"]["top1"], second_fold["protocol_a"]["eszsl"]["top1"]]
    stats = summary["protocol_a"]["eszsl"]["top1"]
    assert stats["mean"] == pytest.approx(sum(values) / 2)
    assert stats["std"] == pytest.approx(abs(values[0] - values[1]) / 2)
    assert stats["n"] == 2 and summary["protocol_a"]["full"]["top1"]["n"] == 1
    h = [result["protocol_b"]["devise"]["h_cal"], second_fold["protocol_b"]["devise"]["h_cal"]]
    assert summary["protocol_b"]["devise"]["h_cal"]["mean"] == pytest.approx(sum(h) / 2)
    assert summary["mcnemar_full_vs_head_only"] == [result["mcnemar_full_vs_head_only"], None]
    assert list(summary["protocol_a"])[:4] == ["chance", "conse", "eszsl", "devise"]


def test_report_files(tmp_path, result, second_fold, styles):
    twitter, google = styles
    images = {"twitter": twitter, "google": google}
    out = write_benchmark_report([result, second_fold], tmp_path / "report", "Colours", images=images)
    folder = tmp_path / "report"
    assert set(out["files"]) == {"results.json", "results.md", "per_category.png", "examples.png"}
    text = (folder / "results.md").read_text(encoding="utf-8")
    for method in ("chance", "conse", "eszsl", "devise", "full", "head_only"):
        assert f"| {method} |" in text, method
    assert "## Protocol A" in text and "## Protocol B" in text and "## Per fold" in text and "## Timings" in text
    top1 = out["summary"]["protocol_a"]["eszsl"]["top1"]
    assert f"| eszsl | {100 * top1['mean']:.1f} ± {100 * top1['std']:.1f} |" in text
    assert f"p = {result['mcnemar_full_vs_head_only']:.3g}" in text
    saved = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    assert saved["summary"]["protocol_a"]["eszsl"]["top1"]["mean"] == pytest.approx(top1["mean"])
    assert len(saved["folds"]) == 2
    for name in ("per_category.png", "examples.png"):
        with Image.open(folder / name) as image:
            assert image.format == "PNG" and min(image.size) > 200
    assert not list(folder.glob(".*"))  # no temporary files left behind


def test_markdown_without_generators_or_categories(second_fold):
    text = markdown_report([second_fold], "Baselines")
    assert "full" not in text and "| devise |" in text and "McNemar" not in text
    assert not math.isnan(second_fold["protocol_b"]["eszsl"]["h_cal"])
