"""Keyword attribution: the token-embedding path reproduces the text encoder, gradient scores match finite
differences, integrated gradients are complete, occlusion equals regenerating through the public API, a generator that
reads one keyword has that keyword on top by both methods, renderings, bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import make_model

from lang2net import PACKAGED_MINILM, AdapterConfig, LanguageConditionedAdapter, TextEncoder
from lang2net.apps import explain_render as render
from lang2net.data import packaged_descriptions
from lang2net.explain import Explanation, _Objective, _validate, _without, _words, explain, spearman

TEXT = "A photo of a smoking volcano above a quiet village."
WORDS = ["A", "photo", "of", "a", "smoking", "volcano", "above", "a", "quiet", "village", "."]
DESCRIPTIONS = {
    "house": "A red brick house with a garden.",
    "volcano": [TEXT, "A mountain that erupts lava."],
    "sneaker": "A sports shoe with laces and a thick rubber sole.",
}
SMALL = {"backbone": "test_vit", "backbone_weights": "random", "text_dim": 384, "d_model": 32, "n_heads": 2}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Single-sentence forwards are latency-bound: two intra-op threads on a shared 2-core machine are ~50x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(PACKAGED_MINILM)


@pytest.fixture(scope="module")
def adapter(encoder):
    """An untrained generator with its delta cores moved off zero (as meta-training would): text-dependent deltas."""
    torch.manual_seed(0)
    adapter = LanguageConditionedAdapter(AdapterConfig(n_layers=1, **SMALL), text_encoder=encoder)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in adapter.generator.named_parameters():
            if name.startswith("deltas.core"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return adapter.eval()


@pytest.fixture(scope="module")
def backbone():
    return make_model("test_vit", img_size=32)


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _log_odds(logits: torch.Tensor) -> torch.Tensor:
    """The objective with images, from the public path: volcano's (class 1) mean log-odds against the others."""
    return (logits[:, 1] - logits[:, [0, 2]].logsumexp(-1)).mean()


def _objective(adapter, images=None, backbone=None, descriptions=DESCRIPTIONS, target="volcano") -> _Objective:
    return _Objective(adapter, _validate(descriptions, target, 0, "both"), target, 0, images, backbone)


def _scaled(objective: _Objective, text: str, scale_of) -> float:
    """The objective with each token's input embedding multiplied by ``scale_of(word index or None)``."""
    tokens = objective.tokenize(text)
    ids = tokens["inputs"]["input_ids"]
    scales = torch.tensor([scale_of(w) for w in tokens["word_ids"]])[None, :, None]  # (1, n, 1)
    with torch.no_grad():
        embeddings = objective.encoder.model.get_input_embeddings()(ids) * scales
        return float(objective(objective.sentence_embedding(tokens["inputs"], embeddings)))


def test_token_embedding_path_reproduces_the_text_encoder(adapter, encoder):
    objective = _objective(adapter)
    embed = encoder.model.get_input_embeddings()
    for text in [TEXT, "A sneaker's thick rubber-sole, with laces.", ""]:
        inputs = objective.tokenize(text)["inputs"]
        with torch.no_grad():
            ours = objective.sentence_embedding(inputs, embed(inputs["input_ids"]))
        assert (ours - encoder.encode([text])[0]).abs().max() < 1e-5, text
    with torch.no_grad():
        sentence = objective.sentence_embedding(objective.tokenize(TEXT)["inputs"])
        rebuilt = objective.class_embeddings_with(sentence)
    assert (rebuilt - encoder.encode_classes(DESCRIPTIONS)).abs().max() < 1e-5


def test_scores_are_per_word_and_the_objective_is_the_bound_tasks_logit(adapter, backbone, images):
    e = explain(adapter, DESCRIPTIONS, "volcano", images=images, backbone=backbone, method="both")
    assert e.words == WORDS and [TEXT[s:t] for s, t in e.spans] == WORDS
    for method in ("gradient", "occlusion"):
        scores = torch.tensor(e.scores[method])
        assert scores.shape == (len(WORDS),) and torch.isfinite(scores).all() and scores.std() > 0, method
    with torch.no_grad():  # the public path: generate, bind (weight space), mean target logit
        reference = _log_odds(adapter.generate(DESCRIPTIONS).bind(backbone)(images))
    assert abs(e.objective - float(reference)) < 1e-4 * max(1.0, abs(float(reference)))
    assert e.rank_correlation is not None and -1.0 <= e.rank_correlation <= 1.0


@pytest.mark.parametrize("with_images", [False, True], ids=["head-row", "image-logits"])
def test_gradient_scores_match_finite_differences(adapter, backbone, images, with_images):
    """A word's gradient x input is the derivative of the objective when that word's token embeddings are scaled."""
    pair = {"images": images, "backbone": backbone} if with_images else {}
    e = explain(adapter, DESCRIPTIONS, "volcano", **pair)
    objective = _objective(adapter, **pair)
    scale = max(abs(s) for s in e.scores["gradient"])
    h = 1e-2
    for word in sorted(range(len(WORDS)), key=lambda i: -abs(e.scores["gradient"][i]))[:3]:
        up = _scaled(objective, TEXT, lambda w, word=word: 1.0 + h if w == word else 1.0)
        down = _scaled(objective, TEXT, lambda w, word=word: 1.0 - h if w == word else 1.0)
        finite_difference = (up - down) / (2 * h)
        assert abs(finite_difference - e.scores["gradient"][word]) < 0.03 * scale, (WORDS[word], finite_difference)


def test_integrated_gradients_sum_to_the_change_from_no_words(adapter):
    e = explain(adapter, DESCRIPTIONS, "volcano", steps=32)
    objective = _objective(adapter)
    baseline = _scaled(objective, TEXT, lambda w: 1.0 if w is None else 0.0)  # special tokens kept
    full = _scaled(objective, TEXT, lambda w: 1.0)
    assert abs(e.objective - full) < 1e-5
    change = full - baseline
    assert abs(change) > 1e-3
    assert abs(sum(e.scores["gradient"]) - change) < 0.03 * abs(change), (sum(e.scores["gradient"]), change)


def test_occlusion_equals_regenerating_without_the_word(adapter, backbone, images):
    e = explain(adapter, DESCRIPTIONS, "volcano", images=images, backbone=backbone, method="occlusion")
    with torch.no_grad():
        base = _log_odds(adapter.generate(DESCRIPTIONS).bind(backbone)(images))
        for (start, end), score in zip(e.spans, e.scores["occlusion"], strict=True):
            shorter = {**DESCRIPTIONS, "volcano": [_without(TEXT, start, end), DESCRIPTIONS["volcano"][1]]}
            occluded = _log_odds(adapter.generate(shorter).bind(backbone)(images))
            assert abs(score - float(base - occluded)) < 1e-4, TEXT[start:end]
    assert _without(TEXT, 0, 1) == TEXT[2:] and _without(TEXT, TEXT.index("volcano"), TEXT.index(" above")) == (
        "A photo of a smoking above a quiet village."
    )


def test_a_keyword_the_generator_reads_is_top_by_both_methods(encoder):
    """Fit a head-only generator so that its image-free objective (the angular separation of the volcano head row
    from the house row, here -cos(w_volcano, w_house)) tracks the cosine of the class embedding with 'volcano'; then
    removing 'volcano' must matter most, and integrated gradients must say so too."""
    torch.manual_seed(0)
    adapter = LanguageConditionedAdapter(
        AdapterConfig(n_layers=1, delta_mode="none", **{**SMALL, "d_model": 16}), text_encoder=encoder
    )
    descriptions = {"volcano": TEXT, "house": DESCRIPTIONS["house"]}
    objective = _objective(adapter, descriptions=descriptions)
    _, spans, _ = _words(objective.tokenize(TEXT), TEXT)
    pool = [t for name in ("digits", "fashion_mnist") for texts in packaged_descriptions(name).values() for t in texts]
    texts = [TEXT, *(_without(TEXT, s, t) for s, t in spans), *pool[::4]]
    with torch.no_grad():
        sentences = encoder.encode(texts)  # (n, e)
    goal = 1.8 * sentences @ encoder.encode(["volcano"])[0] - 0.9  # inside the objective's range [-1, 1]
    tasks = torch.stack([sentences, objective.class_embeddings[1].expand_as(sentences)], dim=1)  # (n, 2, e)
    optimizer = torch.optim.Adam(adapter.generator.parameters(), lr=1e-2)
    for _ in range(80):
        _, weight, _ = adapter.generator(tasks)
        separation = -torch.nn.functional.cosine_similarity(weight[:, 0], weight[:, 1], dim=-1)  # one other class
        loss = ((separation - goal) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.01
    e = explain(adapter.eval(), descriptions, "volcano", method="both", steps=16)
    (top_occlusion, drop), (_, second_drop) = e.top(2, "occlusion")
    (top_gradient, score), (_, second_score) = e.top(2, "gradient")
    assert top_occlusion == "volcano" and drop > 5 * abs(second_drop), render.to_terminal(e, color=False)
    assert top_gradient == "volcano" and score > 2 * abs(second_score), render.to_terminal(e, color=False)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1, 2, 3, 4], [10, 20, 30, 40], 1.0),
        ([1, 2, 3, 4], [4, 3, 2, 1], -1.0),
        ([1, 2, 2, 3], [1, 3, 2, 4], 0.9486832980505138),  # scipy.stats.spearmanr: ties share their mean rank
        ([1, 2, 3], [5, 5, 5], None),
        ([1], [2], None),
    ],
)
def test_spearman_table(a, b, expected):
    got = spearman(a, b)
    assert got == expected if expected is None else abs(got - expected) < 1e-12


def test_terminal_html_and_png_renderings(tmp_path):
    text = "Fish & chips <hot> in a cone."
    words = ["Fish", "&", "chips", "<", "hot", ">", "in", "a", "cone", "."]
    spans, cursor = [], 0
    for w in words:
        cursor = text.index(w, cursor)
        spans.append((cursor, cursor + len(w)))
        cursor += len(w)
    grad = [0.5, -0.1, 0.3, 0.0, 0.9, 0.0, -0.2, 0.0, 0.4, 0.05]
    e = Explanation("snack", text, words, spans, {"gradient": grad, "occlusion": grad[::-1]}, 1.25, "test", 0.1)
    colored, plain = render.to_terminal(e), render.to_terminal(e, color=False)
    assert "\x1b[" in colored and "\x1b[" not in plain
    assert plain.count("\n") == 4 + len(words) and all(w in plain for w in words)
    assert "agreement of gradient and occlusion (Spearman rank correlation): +0.100" in plain
    assert e.disagree and "warning: the two methods disagree" in plain  # 0.1 is below AGREEMENT_WARNING
    agreeing = dataclasses.replace(e, rank_correlation=0.8, image_names=["a.png", "b.png"])
    assert not agreeing.disagree and "warning" not in render.to_terminal(agreeing, color=False)
    assert "images: a.png, b.png" in render.to_terminal(agreeing, color=False)
    assert e.top(2) == [("hot", 0.9), ("Fish", 0.5)] and e.top(1, "occlusion") == [(">", 0.9)]
    page = render.to_html(e, tmp_path / "out" / "snack.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "Fish" in page and "&amp;" in page and "&lt;" in page and "<hot>" not in page
    assert page.count("<mark") == len(words) and "+0.9000" in page
    assert "Legend." in page and "green: the word makes the classifier prefer this class" in page
    png = render.to_png(e, tmp_path / "out" / "snack.png")
    render.to_png(e, png)  # overwriting an existing file goes through the same rename
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["snack.html", "snack.png"]  # no temp files left
    with pytest.raises(ValueError, match="'integrated' was not run"):
        render.to_terminal(e, "integrated")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"target_class": "zebra"}, ValueError, r"'zebra' is not among .*'house', 'volcano', 'sneaker'"),
        ({"description_index": 2}, ValueError, r"description_index 2 is out of range.*valid indices 0..1"),
        ({"description_index": -1}, ValueError, r"description_index -1 is out of range"),
        (
            {"method": "saliency"},
            ValueError,
            r"method must be one of \['gradient', 'occlusion', 'both'\], got 'saliency'",
        ),
        ({"steps": 0}, ValueError, r"steps must be a positive int, got 0"),
        ({"images": torch.zeros(1, 3, 32, 32)}, ValueError, "images and backbone together"),
        ({"descriptions": {"volcano": []}}, ValueError, "class 'volcano' has an empty list"),
        ({"descriptions": {"volcano": "a mountain"}}, ValueError, "at least two classes"),
    ],
)
def test_bad_input_raises_naming_the_value(adapter, kwargs, error, match):
    args = {"descriptions": DESCRIPTIONS, "target_class": "volcano", **kwargs}
    with pytest.raises(error, match=match):
        explain(adapter, **args)


def test_wrong_backbone_or_adapter_is_refused(adapter, images):
    with pytest.raises(ValueError, match="64 pooled features but ResNet gives"):
        explain(adapter, DESCRIPTIONS, "volcano", images=images, backbone=make_model("test_resnet"))
    with pytest.raises(TypeError, match="LanguageConditionedAdapter, got Linear"):
        explain(torch.nn.Linear(2, 2), DESCRIPTIONS, "volcano")


def test_truncated_description_warns_and_train_mode_is_restored(adapter, encoder):
    long = " ".join(["volcano"] * 300)
    adapter.train()
    try:
        with pytest.warns(UserWarning) as record:  # the encoder's own truncation warning, then explain's
            e = explain(adapter, {**DESCRIPTIONS, "volcano": long}, "volcano")
        assert f"302 tokens; only the first {encoder.max_length} reach" in str(record[-1].message)
        assert adapter.training  # evaluated in eval mode (no dropout), then put back
    finally:
        adapter.eval()
    assert e.words == ["volcano"] * (encoder.max_length - 2)  # [CLS] and [SEP] take two of the slots
