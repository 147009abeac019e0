"""Hub I/O: generator and task folders (atomic save, strict load from a folder, a Hub repo or the cache, push).

A generator folder holds ``config.json`` (the AdapterConfig plus a lang2net marker), ``model.safetensors`` (the
generator's own state_dict: the backbone and text encoder are referenced by name, never copied) and a model card
``README.md``. A task folder holds ``task_config.json``, ``model.safetensors`` (``delta.<layer>.A/B``, ``head.weight``,
``head.bias``) and ``README.md``. Every folder is written into a sibling temporary folder and renamed into place, so a
failed save leaves the previous artifact as it was. Loading is strict and names the path and what is wrong. Model cards
are written by ``cards.py``; peft and timm folders by ``export.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import HfApi, ModelCard
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..config import CONFIG_VERSION, AdapterConfig
from ..engine.lowrank import LowRankDelta
from ..utils.atomic import atomic_folder
from ..utils.checks import check_positive_int, reject_unknown_keys
from . import cards
from .records import TaskData
from .sources import CARD_NAME, resolve_source

__all__ = [
    "CONFIG_NAME",
    "TASK_CONFIG_NAME",
    "TASK_FORMAT_VERSION",
    "WEIGHTS_NAME",
    "check_tensors",
    "push_folder",
    "read_generator",
    "read_task",
    "save_generator",
    "save_task",
    "writing",
]

CONFIG_NAME = "config.json"
TASK_CONFIG_NAME = "task_config.json"
WEIGHTS_NAME = "model.safetensors"

METRICS_NAME = "metrics.json"
TASK_FORMAT_VERSION = "1.0"  # task_config.json; same rule as CONFIG_VERSION: a new major is unreadable
LIBRARY = "lang2net"
_TASK_KEYS = {
    "library", "kind", "format_version", "class_names", "descriptions", "backbone", "target_specs", "generator",
    "deltas", "num_classes", "feature_dim", "backbone_weights", "preprocessing",
}  # fmt: skip
_GENERATOR_LAYOUT = "a lang2net generator folder holds config.json, model.safetensors and README.md"
_TASK_LAYOUT = "a lang2net task folder holds task_config.json, model.safetensors and README.md"


# helpers: files


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _read_json(path: str, label: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{label}: not valid JSON ({e})") from None
    except RecursionError:  # e.g. "[[[[...": a hostile file must not escape as a non-ValueError
        raise ValueError(f"{label}: not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise ValueError(f"{label}: expected a JSON object, got {type(data).__name__}")
    return data


def _read_tensors(path: str, label: str) -> dict[str, Tensor]:
    """Tensors of a safetensors file; any parse failure is a ValueError naming the file (never a pickle fallback)."""
    try:
        return load_file(path, device="cpu")
    except Exception as e:  # safetensors raises its own SafetensorError (and OSError/RuntimeError on short files)
        raise ValueError(
            f"{label}: not a readable safetensors file ({type(e).__name__}: {e}); it is truncated or corrupt, "
            "save or download it again"
        ) from None


def save_tensors(path: Path, tensors: Mapping[str, Tensor]) -> None:
    # one metadata key: safetensors writes its metadata map in no fixed order, and equal weights should be equal bytes
    state = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(state, str(path), metadata={"format": "pt"})


def few(names: Sequence[str], n: int = 4) -> str:
    more = f" (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def check_tensors(expected: Mapping[str, tuple[int, ...]], got: Mapping[str, Tensor], label: str, what: str) -> None:
    """Missing / unexpected keys and shape mismatches as one readable ValueError."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = [
        f"{k} is {tuple(got[k].shape)} in the file, {tuple(expected[k])} in {what}"
        for k in sorted(set(expected) & set(got))
        if tuple(got[k].shape) != tuple(expected[k])
    ]
    problems = [f"missing {few(missing)}"] * bool(missing) + [f"unexpected {few(unexpected)}"] * bool(unexpected)
    problems += shapes[:4]
    if problems:
        raise ValueError(f"{label} does not fit {what}: " + "; ".join(problems))


def _check_version(version: Any, reads: str, label: str) -> None:
    ours = int(reads.split(".")[0])
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        raise ValueError(f"{label}: unreadable format version {version!r}") from None
    if major > ours:
        raise ValueError(
            f"{label} was written by a newer lang2net (format {version}); this lang2net reads {ours}.x: upgrade "
            "lang2net to load it"
        )
    if major < ours:
        raise ValueError(f"{label}: format {version} predates the {ours}.x format this lang2net reads")


def _check_marker(data: Mapping[str, Any], label: str, kind: str) -> None:
    if data.get("library") != LIBRARY:
        hint = (
            " (it looks like a timm model config)"
            if "architecture" in data
            else " (it looks like a transformers config)"
            if "model_type" in data
            else ""
        )
        raise ValueError(f'{label} is not a lang2net {kind} config: it has no "library": "lang2net" marker{hint}')
    if data.get("kind") != kind:
        other = "TaskAdaptation" if data.get("kind") == "task" else "LanguageConditionedAdapter"
        raise ValueError(f"{label} holds a lang2net {data.get('kind')!r}, not a {kind}: load it with {other}")


def _is_ours(folder: Path) -> bool:
    """True for a folder lang2net wrote (any artifact kind), so replacing it loses nothing the user made."""
    for name in (CONFIG_NAME, TASK_CONFIG_NAME):
        with contextlib.suppress(OSError, ValueError):
            data = _read_json(str(folder / name), name)
            if data.get("library") == LIBRARY or LIBRARY in data:
                return True
    card = folder / CARD_NAME
    with contextlib.suppress(OSError, ValueError):
        return card.is_file() and LIBRARY in (ModelCard.load(card).data.tags or [])  # is_file: never a Hub lookup
    return False


@contextlib.contextmanager
def writing(directory: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty sibling folder to write into; on success it replaces ``directory`` (see ``atomic_folder``).

    Refuses a path that is a file, or a non-empty folder lang2net did not write. Files of an existing lang2net folder
    that this save does not write (a .gitattributes, notes) are carried over.
    """
    dest = Path(directory)
    if dest.exists() and not dest.is_dir():
        raise ValueError(f"{dest} exists and is a file; pass a folder path")
    if dest.is_dir() and any(dest.iterdir()) and not _is_ours(dest):
        raise ValueError(
            f"{dest} exists, is not empty and is not a lang2net folder: refusing to replace it; choose a new or empty "
            "folder"
        )
    with atomic_folder(dest, carry_over=lambda entry: entry.name not in _OWN_FILES) as tmp:
        yield tmp


_OWN_FILES = {CONFIG_NAME, TASK_CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, METRICS_NAME, "adapter_config.json",
              "adapter_model.safetensors"}  # fmt: skip


# generator


def generator_card(
    config: AdapterConfig, *, name: str, n_params: int, base: Any = None, metrics: Any = None, **card: Any
) -> tuple:
    """(model card, normalised metrics) of a generator; ``card``: datasets, recipe (see ``cards.generator_card``)."""
    results = cards.read_metrics(metrics)
    return cards.generator_card(config, name=name, n_params=n_params, results=results, base=base, **card), results


def write_generator(folder: Path, config: AdapterConfig, state: Mapping[str, Tensor], **card: Any) -> None:
    """config.json, model.safetensors, README.md (and metrics.json when given) into an existing ``folder``."""
    if not config.resolved:
        raise ValueError("only a built generator (resolved config) can be saved")
    for what, value in (("backbone_weights", config.backbone_weights), ("text_encoder", config.text_encoder)):
        if os.path.exists(value):
            warnings.warn(
                f"the saved config names the local path {what}={value!r}: others cannot load it", stacklevel=4
            )
    _write_json(folder / CONFIG_NAME, {"library": LIBRARY, "kind": "generator", **config.to_dict()})
    save_tensors(folder / WEIGHTS_NAME, state)
    n_params = sum(v.numel() for v in state.values())
    model_card, results = generator_card(config, n_params=n_params, **card)
    if results:
        (folder / METRICS_NAME).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    model_card.save(folder / CARD_NAME)


def save_generator(
    directory: str | os.PathLike,
    config: AdapterConfig,
    state: Mapping[str, Tensor],
    *,
    repo_id: str | None = None,
    **card: Any,
) -> Path:
    """Write a generator folder atomically; the card's usage snippet loads ``repo_id`` (else the folder's name)."""
    name = card_name(directory, repo_id)
    if card.get("recipe") is None:
        card["recipe"] = cards.find_recipe(directory)
    with writing(directory) as tmp:
        write_generator(tmp, config, state, name=name, **card)
    return Path(directory)


def read_generator(
    name_or_path: str | os.PathLike, *, revision: str | None = None, **hub: Any
) -> tuple[AdapterConfig, dict[str, Tensor], str]:
    """(config, state_dict, source label) of a generator folder or Hub repo, checked as far as the files alone allow.

    The caller checks the tensors against the generator the config describes (``check_tensors``).
    """
    src = resolve_source(name_or_path, revision, **hub)
    config_path = src.find(CONFIG_NAME)
    if config_path is None and src.find(TASK_CONFIG_NAME) is not None:
        raise ValueError(f"{src.label} is a lang2net task folder, not a generator: load it with TaskAdaptation")
    config_path = config_path or src.require(CONFIG_NAME, _GENERATOR_LAYOUT)
    label = src.where(CONFIG_NAME)
    data = _read_json(config_path, label)
    _check_marker(data, label, "generator")
    _check_version(data.get("version"), CONFIG_VERSION, label)
    try:
        config = AdapterConfig.from_dict({k: v for k, v in data.items() if k not in ("library", "kind")})
    except (TypeError, ValueError) as e:
        raise ValueError(f"{label}: {e}") from None
    if not config.resolved:
        raise ValueError(f"{label}: text_dim, feature_dim and target_specs must be stored in a saved generator")
    weights = src.find(WEIGHTS_NAME)
    if weights is None:
        others = (
            "pytorch_model.bin" if src.local and os.path.isfile(os.path.join(src.name, "pytorch_model.bin")) else ""
        )
        hint = f"; {others} is there, but lang2net reads safetensors only" if others else ""
        weights = src.require(WEIGHTS_NAME, _GENERATOR_LAYOUT + hint)
    state = _read_tensors(weights, src.where(WEIGHTS_NAME))
    not_float = sorted(k for k, v in state.items() if not v.is_floating_point())  # load_state_dict would cast them
    non_finite = sorted(k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all())
    for keys, what in ((not_float, "integer/bool tensors where the generator holds floats"), (non_finite, "inf/nan")):
        if keys:
            raise ValueError(f"{src.where(WEIGHTS_NAME)}: {what} in {few(keys)}; the file is corrupt")
    if config.n_layers > len(state):  # every layer holds tensors: building is bounded by the file, not the config
        raise ValueError(f"{label}: n_layers={config.n_layers}, but {WEIGHTS_NAME} holds only {len(state)} tensors")
    return config, state, src.label


# task


def write_task(folder: Path, task: TaskData, *, name: str) -> None:
    specs = {s.name: s for s in task.target_specs}
    unknown = sorted(set(task.deltas) - set(specs))
    if unknown:
        raise ValueError(f"deltas for {few(unknown)} have no target spec in this task; cannot describe them")
    data = {
        "library": LIBRARY,
        "kind": "task",
        "format_version": TASK_FORMAT_VERSION,
        "backbone": task.backbone,
        "backbone_weights": task.backbone_weights,
        "generator": task.generator,
        "class_names": list(task.class_names),
        "descriptions": {c: list(d) for c, d in task.descriptions.items()},
        "num_classes": task.num_classes,
        "feature_dim": task.feature_dim,
        "target_specs": [t.to_dict() for t in task.target_specs],
        "deltas": {n: {"scale": d.scale, "rank": d.rank} for n, d in task.deltas.items()},
        **({"preprocessing": dict(task.preprocessing)} if task.preprocessing else {}),
    }
    _write_json(folder / TASK_CONFIG_NAME, data)
    tensors = {"head.weight": task.head_weight, "head.bias": task.head_bias}
    for n, d in task.deltas.items():
        tensors[f"delta.{n}.A"], tensors[f"delta.{n}.B"] = d.A, d.B
    save_tensors(folder / WEIGHTS_NAME, tensors)
    cards.task_card(task, name=name).save(folder / CARD_NAME)


def save_task(task: TaskData, directory: str | os.PathLike, *, repo_id: str | None = None) -> Path:
    with writing(directory) as tmp:
        write_task(tmp, task, name=card_name(directory, repo_id))
    return Path(directory)


def card_name(directory: str | os.PathLike, repo_id: str | None) -> str:
    """What a card's snippet loads: the repo id, else the folder as given when relative, else its name (never an
    absolute path of this machine)."""
    if repo_id:
        return repo_id
    path = Path(directory)
    return path.name if path.is_absolute() else path.as_posix()


def _strings(value: Any, what: str) -> list[str]:
    # a string is a sequence too: list("abc") would silently make three classes out of one
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{what} must be a list of strings, got {str(value)[:80]!r}")
    return value


def _count(value: Any, what: str) -> int:
    check_positive_int(what, value, error=TypeError)
    return value


def read_task(name_or_path: str | os.PathLike, *, revision: str | None = None, **hub: Any) -> dict[str, Any]:
    """The fields of the task in a folder or Hub repo (``TaskData``'s constructor arguments), strictly checked."""
    src = resolve_source(name_or_path, revision, **hub)
    config_path = src.find(TASK_CONFIG_NAME)
    if config_path is None and src.find(CONFIG_NAME) is not None:
        data = _read_json(src.require(CONFIG_NAME, _TASK_LAYOUT), src.where(CONFIG_NAME))
        _check_marker(data, src.where(CONFIG_NAME), "task")  # names what the folder is instead
    label = src.where(TASK_CONFIG_NAME)
    data = _read_json(config_path or src.require(TASK_CONFIG_NAME, _TASK_LAYOUT), label)
    _check_marker(data, label, "task")
    _check_version(data.get("format_version"), TASK_FORMAT_VERSION, label)
    reject_unknown_keys(data, _TASK_KEYS, "{label}: unknown keys {unknown}; valid keys: {known}", label=label)
    try:
        specs = AdapterConfig(target_specs=data["target_specs"]).target_specs
        names = _strings(data["class_names"], "class_names")
        if len(set(names)) != len(names):
            raise ValueError(f"class_names repeat a class: {few(sorted({n for n in names if names.count(n) > 1}))}")
        if not isinstance(data["descriptions"], dict):
            raise TypeError(f"descriptions must map class names to lists of strings, got {data['descriptions']!r:.80}")
        descriptions = {k: _strings(v, f"descriptions[{k!r}]") for k, v in data["descriptions"].items()}
        c, f = _count(data["num_classes"], "num_classes"), _count(data["feature_dim"], "feature_dim")
        deltas = data["deltas"]
        if not isinstance(deltas, dict):
            raise TypeError(f"deltas must map target names to {{scale, rank}}, got {deltas!r}")
        preprocessing = data.get("preprocessing") or {}
        if not isinstance(preprocessing, dict):
            raise TypeError(f"preprocessing must be an object, got {preprocessing!r:.80}")
        optional = (("generator", data.get("generator")), ("backbone_weights", data.get("backbone_weights")))
        for key, value in (("backbone", data["backbone"]), *optional):
            if not isinstance(value, str) and not (key != "backbone" and value is None):
                raise TypeError(f"{key} must be a string, got {value!r}")
        by_name = {s.name: s for s in specs}
        expected = {"head.weight": (c, f), "head.bias": (c,)}
        for n, meta in deltas.items():
            spec, r = by_name.get(n), _count(meta["rank"], f"the rank of {n!r}")
            if spec is None:
                raise ValueError(f"deltas name {n!r}, which target_specs do not describe")
            expected[f"delta.{n}.A"], expected[f"delta.{n}.B"] = spec.a_shape(r), spec.b_shape(r)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{label}: malformed task config ({type(e).__name__}: {e})") from None
    weights = src.where(WEIGHTS_NAME)
    tensors = _read_tensors(src.require(WEIGHTS_NAME, _TASK_LAYOUT), weights)
    check_tensors(expected, tensors, weights, f"the task that {label} describes")
    try:
        lowrank = {
            n: LowRankDelta(tensors[f"delta.{n}.A"], tensors[f"delta.{n}.B"], float(meta["scale"]))
            for n, meta in deltas.items()
        }
    except (TypeError, ValueError) as e:
        raise ValueError(f"{src.label}: {e}") from None
    return {
        "class_names": names,
        "descriptions": descriptions,
        "deltas": lowrank,
        "head_weight": tensors["head.weight"],
        "head_bias": tensors["head.bias"],
        "backbone": data["backbone"],
        "target_specs": specs,
        "generator": data.get("generator"),
        "backbone_weights": data.get("backbone_weights"),
        "preprocessing": preprocessing,
        "source": src.label,
    }


# push (the network boundary: HfApi.create_repo and HfApi.upload_folder)


def push_folder(
    write: Callable[[Path, str], None],
    repo_id: str,
    *,
    commit_message: str,
    private: bool | None = None,
    token: str | None = None,
    branch: str | None = None,
    create_pr: bool | None = None,
    allow_patterns: list[str] | str | None = None,
    ignore_patterns: list[str] | str | None = None,
    delete_patterns: list[str] | str | None = None,
) -> Any:
    """Create the repo if needed, write the folder with ``write(folder, repo_id)`` and upload it in one commit."""
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id=repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / repo_id.split("/")[-1]
        folder.mkdir()
        write(folder, repo_id)
        return api.upload_folder(
            repo_id=repo_id,
            repo_type="model",
            folder_path=folder,
            commit_message=commit_message,
            revision=branch,
            create_pr=create_pr,
            allow_patterns=allow_patterns,
            ignore_patterns=ignore_patterns,
            delete_patterns=delete_patterns,
        )
