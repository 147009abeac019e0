"""Keyword attribution (N3's keyword identification): which words of a class description drove the generated weights.

Axis legend: n tokens of one description, h text-model width, c classes, e text-embedding width, f pooled-feature
width, b images, w words.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .adapter import LanguageConditionedAdapter
from .backbones import feature_dim, pooled_features
from .heads import head_logits
from .task import attach
from .text import TextEncoder, normalize_descriptions
from .utils.checks import check_int

__all__ = ["AGREEMENT_WARNING", "METHODS", "Explanation", "explain"]

METHODS = ("gradient", "occlusion", "both")
SHOWN_ORDER = ("gradient", "occlusion")
AGREEMENT_WARNING = 0.3  # below this rank correlation, gradient and occlusion tell different stories


# helpers


@contextmanager
def _eval_mode(*modules: nn.Module | None) -> Iterator[None]:
    """Run with every module in eval mode (dropout off: the objective must be a function), restoring modes after."""
    modes = [(m, m.training) for m in modules if m is not None]
    for m, _ in modes:
        m.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.train(mode)


def _average_ranks(x: Tensor) -> Tensor:
    """Ranks 0..n-1 of a 1-D tensor, tied values sharing their mean rank (as Spearman's correlation needs)."""
    ranks = torch.empty_like(x, dtype=torch.float64)
    ranks[x.argsort()] = torch.arange(len(x), dtype=torch.float64)
    for value in x.unique():
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman rank correlation of two score lists; None when undefined (under two words, or a constant list)."""
    if len(a) != len(b):
        raise ValueError(f"score lists differ in length: {len(a)} and {len(b)}")
    if len(a) < 2:
        return None
    ra = _average_ranks(torch.tensor(a, dtype=torch.float64))
    rb = _average_ranks(torch.tensor(b, dtype=torch.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return None if denom == 0.0 else float((ra * rb).sum()) / denom


def _without(text: str, start: int, end: int) -> str:
    """``text`` with the characters [start, end) removed and the whitespace at the cut closed up."""
    left, right = text[:start].rstrip(), text[end:].lstrip()
    return f"{left} {right}" if left and right else left + right


def _check_images(images: Tensor | None, backbone: nn.Module | None, width: int) -> None:
    if (images is None) != (backbone is None):
        raise ValueError(
            "pass images and backbone together (the objective is then the target's mean logit), or neither"
        )
    if images is None:
        return
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point() or len(images) == 0:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor (b, C, H, W) with b >= 1, got {got}")
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"backbone must be a timm nn.Module, got {type(backbone).__name__}")
    if feature_dim(backbone) != width:
        raise ValueError(
            f"the generator writes heads for {width} pooled features but {type(backbone).__name__} gives "
            f"{feature_dim(backbone)}: use the backbone named in the generator's config"
        )


def _validate(
    descriptions: Mapping[str, str | Sequence[str]], target_class: str, description_index: int, method: str
) -> dict[str, list[str]]:
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    descriptions = normalize_descriptions(descriptions)
    if target_class not in descriptions:
        raise ValueError(f"target_class {target_class!r} is not among the described classes {list(descriptions)}")
    if len(descriptions) < 2:
        raise ValueError("explaining needs at least two classes: the objective is the target's margin over the others")
    count = len(descriptions[target_class])
    if isinstance(description_index, bool) or not isinstance(description_index, int):
        raise TypeError(f"description_index must be an int, got {type(description_index).__name__}")
    if not 0 <= description_index < count:
        raise ValueError(
            f"description_index {description_index} is out of range: class {target_class!r} has {count} "
            f"description(s), valid indices 0..{count - 1}"
        )
    return descriptions


# the objective


class _Objective:
    """The scalar being explained, as a function of one description's token embeddings (or text): how much the
    generated classifier prefers the target class over the other classes, so a positive word score means the word
    makes the classifier pick the target more.

    With images: the mean over images of the target's log-odds against the rest, ``logit_t - logsumexp(other
    logits)``, through the backbone under the generated deltas (activation space, differentiable). Without images:
    how far the target's generated head row stands from the other classes' rows, ``-logsumexp(cos(w_t, w_c) / tau) *
    tau`` over the other classes c (tau = 0.1, a smooth minimum of the angular margin); the deltas do not enter.
    """

    TAU = 0.1

    def __init__(
        self,
        adapter: LanguageConditionedAdapter,
        descriptions: dict[str, list[str]],
        target_class: str,
        description_index: int,
        images: Tensor | None,
        backbone: nn.Module | None,
    ) -> None:
        self.encoder: TextEncoder = adapter.text_encoder
        if not self.encoder.tokenizer.is_fast:
            raise TypeError(f"{self.encoder.name}: keyword attribution needs a fast tokenizer (word offsets)")
        self.adapter = adapter
        self.class_index = list(descriptions).index(target_class)
        self.index = description_index
        self.images, self.backbone = images, backbone
        param = next(adapter.parameters())
        self.device, self.dtype = param.device, param.dtype
        with torch.no_grad():
            self.class_embeddings = self.encoder.encode_classes(descriptions)  # (c, e), cached per text
            self.paraphrases = self.encoder.encode(descriptions[target_class])  # (p, e)
        self.injection = None
        if backbone is not None:
            specs = adapter.config.target_specs
            has_deltas = adapter.generator.deltas is not None and bool(specs)
            self.injection = attach(backbone, specs) if has_deltas else None
            self.images = images.to(next(backbone.parameters()).device)
            if self.injection is None:  # the features do not depend on the text: compute them once
                with torch.no_grad():
                    self.features = pooled_features(backbone, self.images)  # (b, f)

    @property
    def kind(self) -> str:
        if self.backbone is not None:
            return f"log-odds of the target vs the other classes, mean over {self.images.shape[0]} image(s)"
        return "separation of the target's head row from the other classes' rows (no images)"

    def tokenize(self, text: str) -> dict[str, Any]:
        """One text as the encoder tokenises it (truncated to its max_length), with word ids and offsets."""
        batch = self.encoder.tokenizer(
            [text],
            truncation=True,
            max_length=self.encoder.max_length,
            return_tensors="pt",
            return_offsets_mapping=True,
        )
        words = batch.word_ids(0)
        offsets = batch.pop("offset_mapping")[0].tolist()
        return {"inputs": batch.to(self.encoder.device), "word_ids": words, "offsets": offsets}

    def sentence_embedding(self, inputs: Mapping[str, Tensor], inputs_embeds: Tensor | None = None) -> Tensor:
        """(e,) embedding of one tokenised text, pooled exactly as ``TextEncoder`` pools it.

        ``inputs_embeds`` (1, n, h) replaces the token-embedding lookup so that gradients reach the tokens.
        """
        model = self.encoder.model
        args = dict(inputs)
        if inputs_embeds is not None:
            args.pop("input_ids")
            args["inputs_embeds"] = inputs_embeds
        hidden = model(**args).last_hidden_state.float()  # (1, n, h)
        if self.encoder.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (1, n, 1)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        if self.encoder.normalize:
            pooled = F.normalize(pooled, p=2, dim=-1)
        return pooled[0]

    def class_embeddings_with(self, sentence: Tensor) -> Tensor:
        """(c, e): the class set with the target's embedding rebuilt from ``sentence`` in place of its description."""
        p = self.paraphrases
        group = torch.cat([p[: self.index], sentence[None].to(p), p[self.index + 1 :]])  # (p, e)
        row = group.mean(dim=0)
        if self.encoder.normalize:
            row = F.normalize(row, p=2, dim=-1)
        ci = self.class_index
        return torch.cat([self.class_embeddings[:ci], row[None], self.class_embeddings[ci + 1 :]])

    def __call__(self, sentence: Tensor) -> Tensor:
        """Scalar objective for the target class when its chosen description embeds as ``sentence`` (e,)."""
        embeddings = self.class_embeddings_with(sentence).to(self.device, self.dtype)
        deltas, weight, bias = self.adapter.generator(embeddings[None])  # weight (1, c, f), bias (1, c)
        ci = self.class_index
        others = [c for c in range(weight.shape[1]) if c != ci]
        if self.backbone is None:
            rows = F.normalize(weight[0].float(), dim=-1)  # (c, f)
            cosine = rows[others] @ rows[ci]  # (c-1,)
            return -self.TAU * torch.logsumexp(cosine / self.TAU, dim=0)
        if self.injection is None:
            features = self.features
        else:
            with self.injection.apply({n: d.select(0) for n, d in deltas.items()}, strategy="activation"):
                features = pooled_features(self.backbone, self.images)  # (b, f)
        logits = head_logits(features.to(weight.dtype), weight[0], bias[0]).float()  # (b, c)
        return (logits[:, ci] - torch.logsumexp(logits[:, others], dim=-1)).mean()

    def of_text(self, text: str) -> float:
        with torch.no_grad():
            return float(self(self.sentence_embedding(self.tokenize(text)["inputs"])))


def _words(tokens: Mapping[str, Any], text: str) -> tuple[list[str], list[tuple[int, int]], list[list[int]]]:
    """Words of a tokenised text (special tokens dropped): their text, character span and token positions."""
    positions: dict[int, list[int]] = {}
    for position, word in enumerate(tokens["word_ids"]):
        if word is not None:
            positions.setdefault(word, []).append(position)
    groups = list(positions.values())
    spans = [(tokens["offsets"][g[0]][0], tokens["offsets"][g[-1]][1]) for g in groups]
    return [text[s:e] for s, e in spans], spans, groups


def _gradient_scores(
    objective: _Objective, tokens: Mapping[str, Any], groups: list[list[int]], steps: int
) -> tuple[list[float], float]:
    """Gradient x input on the token embeddings, summed over each word's tokens; also the objective's value.

    With ``steps`` > 1 the gradient is averaged over the straight path that scales the words' token embeddings from
    zero (special tokens kept) to their values, at the midpoints ``(k + 0.5) / steps``: integrated gradients, whose
    word scores sum to objective(description) - objective(no word embeddings), up to the quadrature error.
    """
    inputs = tokens["inputs"]
    with torch.no_grad():
        token_embeddings = objective.encoder.model.get_input_embeddings()(inputs["input_ids"])  # (1, n, h)
    in_words = torch.zeros(token_embeddings.shape[1], 1, dtype=token_embeddings.dtype, device=token_embeddings.device)
    in_words[[p for g in groups for p in g]] = 1.0  # (n, 1)
    total = torch.zeros_like(token_embeddings)
    # one step: at the description itself (gradient x input); more: the midpoint rule on [0, 1]
    alphas = [1.0] if steps == 1 else [(k + 0.5) / steps for k in range(steps)]
    for alpha in alphas:
        scaled = (token_embeddings * (1.0 + (alpha - 1.0) * in_words)).requires_grad_(True)  # (1, n, h)
        with torch.enable_grad():
            value = objective(objective.sentence_embedding(inputs, scaled))
            (grad,) = torch.autograd.grad(value, scaled)
        total += grad
    if steps > 1:
        with torch.no_grad():
            value = objective(objective.sentence_embedding(inputs, token_embeddings))
    per_token = (total / steps * token_embeddings).sum(-1)[0].double()  # (n,)
    return [float(per_token[g].sum()) for g in groups], value.item()


# classes


@dataclass
class Explanation:
    """Which words of one description drove what the generator wrote for its class.

    Attributes:
        class_name: the explained class.
        description: the explained description (one paraphrase of the class).
        words: the description's words as the text encoder's tokenizer splits them (punctuation is a word).
        spans: (start, end) character span of each word in ``description``.
        scores: method -> one score per word. "gradient": gradient x input on the token embeddings, summed over
            the word's word pieces (the first-order estimate of how much the objective drops when the word's
            embeddings shrink to zero), or integrated gradients along that shrinking when ``steps`` > 1;
            "occlusion": objective(description) - objective(description without the word).
        objective: the objective's value on the full description.
        objective_kind: what the objective is (the target's log-odds on images, or its head row's separation).
        rank_correlation: Spearman correlation between the gradient and occlusion scores (None unless both ran, or
            when undefined); below ``AGREEMENT_WARNING`` the two methods disagree (see :attr:`disagree`).
        steps: points on the integration path of the gradient scores (1: plain gradient x input).
    """

    class_name: str
    description: str
    words: list[str]
    spans: list[tuple[int, int]]
    scores: dict[str, list[float]]
    objective: float
    objective_kind: str
    rank_correlation: float | None = None
    steps: int = 1
    image_names: list[str] = field(default_factory=list)  # what the images were (files), for legends; set by callers

    @property
    def disagree(self) -> bool:
        """Both methods ran and rank the words differently (Spearman below ``AGREEMENT_WARNING``)."""
        return self.rank_correlation is not None and self.rank_correlation < AGREEMENT_WARNING

    def method(self, method: str | None) -> str:
        if method is None:
            return next(m for m in SHOWN_ORDER if m in self.scores)
        if method not in self.scores:
            raise ValueError(f"method {method!r} was not run; this explanation has {list(self.scores)}")
        return method

    def top(self, k: int = 3, method: str | None = None) -> list[tuple[str, float]]:
        """The ``k`` highest-scoring words with their scores (``method``: default the gradient when it ran)."""
        scores = self.scores[self.method(method)]
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return [(self.words[i], scores[i]) for i in order[:k]]


def explain(
    adapter: LanguageConditionedAdapter,
    descriptions: Mapping[str, str | Sequence[str]],
    target_class: str,
    *,
    images: Tensor | None = None,
    backbone: nn.Module | None = None,
    description_index: int = 0,
    method: str = "gradient",
    steps: int = 1,
) -> Explanation:
    """Attribute what the generator writes for ``target_class`` to the words of one of its descriptions.

    The generator sees the whole class set (as ``adapter.generate(descriptions)`` does); only the chosen description
    of ``target_class`` is varied. The target's embedding is rebuilt as ``TextEncoder.encode_classes`` builds it (its
    paraphrases averaged, then normalised).

    Args:
        adapter: the generator (its text encoder is used as is).
        descriptions: class -> description(s), the task to generate.
        target_class: the class to explain.
        images: (b, C, H, W) backbone input; with ``backbone``, the objective is the target's mean log-odds against
            the other classes on them, through the backbone under the generated deltas. Without, it is how far the
            target's generated head row stands from the other classes' rows (the deltas do not enter). Either way a
            positive word score means the word makes the classifier prefer the target class.
        backbone: the timm backbone the generator was made for; it is injected as ``TaskAdaptation.bind`` injects it
            (an existing injection is reused, and the hooks stay, as after ``bind``).
        description_index: which of the class's descriptions to explain.
        method: "gradient" (gradient x input on token embeddings, see ``steps``), "occlusion" (leave one word out
            and regenerate: one generation per word, plus a backbone pass each when there are images and deltas) or
            "both" (also reports their rank correlation).
        steps: for the gradient: 1 is gradient x input at the description; more averages the gradient over that
            many points of the path from no word embeddings to the description (integrated gradients), which does not
            miss a word whose effect has saturated (a word that matters can have a near-zero or opposite-signed local
            gradient). Each step is one backward pass through the text model, the generator and, with images, the
            backbone.

    Returns:
        An :class:`Explanation` with one score per word for each method run.

    Raises:
        ValueError: unknown ``target_class`` or ``method``, ``description_index`` out of range, images without a
            backbone (or the reverse), a backbone of another feature width.
        TypeError: a bad ``descriptions`` mapping, an adapter that is not a LanguageConditionedAdapter.
    """
    if not isinstance(adapter, LanguageConditionedAdapter):
        raise TypeError(f"adapter must be a LanguageConditionedAdapter, got {type(adapter).__name__}")
    descriptions = _validate(descriptions, target_class, description_index, method)
    check_int("steps", steps)
    _check_images(images, backbone, adapter.config.feature_dim)
    text = descriptions[target_class][description_index]
    with _eval_mode(adapter, backbone):
        objective = _Objective(adapter, descriptions, target_class, description_index, images, backbone)
        tokens = objective.tokenize(text)
        length = len(objective.encoder.tokenizer(text, verbose=False)["input_ids"])
        if length > objective.encoder.max_length:
            warnings.warn(
                f"the description has {length} tokens; only the first {objective.encoder.max_length} reach the text "
                "encoder, so only their words are scored",
                stacklevel=2,
            )
        words, spans, groups = _words(tokens, text)
        scores: dict[str, list[float]] = {}
        if method in ("gradient", "both"):
            scores["gradient"], value = _gradient_scores(objective, tokens, groups, steps)
        if method in ("occlusion", "both"):
            value = objective.of_text(text)
            scores["occlusion"] = [value - objective.of_text(_without(text, s, e)) for s, e in spans]
    bad = [m for m, values in scores.items() if not all(math.isfinite(v) for v in values)]
    if bad or not math.isfinite(value):
        raise ValueError(f"non-finite attribution ({bad or 'objective'}): the generator or text encoder gives inf/nan")
    correlation = spearman(scores["gradient"], scores["occlusion"]) if method == "both" else None
    return Explanation(target_class, text, words, spans, scores, value, objective.kind, correlation, steps)
