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
import dataclasses
import json
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import EntryNotFoundError, HFValidationError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.utils import validate_repo_id
from safetensors.torch import load_file, save_file
from torch import Tensor

from . import cards
from .config import CONFIG_VERSION, AdapterConfig, TargetSpec, reject_unknown_keys
from .lowrank import LowRankDelta

if TYPE_CHECKING:
    from .adapter import LanguageConditionedAdapter, TaskAdaptation

__all__ = [
    "CONFIG_NAME",
    "TASK_CONFIG_NAME",
    "TASK_FORMAT_VERSION",
    "WEIGHTS_NAME",
    "load_generator",
    "load_task",
    "push_folder",
    "save_generator",
    "save_task",
]

CONFIG_NAME = "config.json"
TASK_CONFIG_NAME = "task_config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
METRICS_NAME = "metrics.json"
TASK_FORMAT_VERSION = "1.0"  # task_config.json; same rule as CONFIG_VERSION: a new major is unreadable
LIBRARY = "lang2net"
_TASK_KEYS = {
    "library", "kind", "format_version", "class_names", "descriptions", "backbone", "target_specs", "generator",
    "deltas", "num_classes", "feature_dim", "backbone_weights",
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


def _save_tensors(path: Path, tensors: Mapping[str, Tensor]) -> None:
    # one metadata key: safetensors writes its metadata map in no fixed order, and equal weights should be equal bytes
    state = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(state, str(path), metadata={"format": "pt"})


def _few(names: Sequence[str], n: int = 4) -> str:
    more = f" (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def _check_tensors(expected: Mapping[str, tuple[int, ...]], got: Mapping[str, Tensor], label: str, what: str) -> None:
    """Missing / unexpected keys and shape mismatches as one readable ValueError."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = [
        f"{k} is {tuple(got[k].shape)} in the file, {tuple(expected[k])} in {what}"
        for k in sorted(set(expected) & set(got))
        if tuple(got[k].shape) != tuple(expected[k])
    ]
    problems = [f"missing {_few(missing)}"] * bool(missing) + [f"unexpected {_few(unexpected)}"] * bool(unexpected)
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
def _writing(directory: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty sibling folder to write into; on success it replaces ``directory`` (old one removed last).

    Files of an existing folder that this save does not write (a .gitattributes, notes) are carried over. A failure at
    any point before the final rename leaves ``directory`` untouched and removes the temporary folder.
    """
    dest = Path(directory)
    if dest.exists() and not dest.is_dir():
        raise ValueError(f"{dest} exists and is a file; pass a folder path")
    if dest.is_dir() and any(dest.iterdir()) and not _is_ours(dest):
        raise ValueError(
            f"{dest} exists, is not empty and is not a lang2net folder: refusing to replace it; choose a new or empty "
            "folder"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()  # plain mkdir (not mkdtemp): the folder gets the user's usual permissions
    try:
        yield tmp
        if dest.is_dir():
            for entry in dest.iterdir():
                if not (tmp / entry.name).exists() and entry.name not in _OWN_FILES:
                    copy = shutil.copytree if entry.is_dir() else shutil.copy2
                    copy(entry, tmp / entry.name)
            old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(dest, old)
            try:
                os.replace(tmp, dest)
            except BaseException:
                os.replace(old, dest)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_OWN_FILES = {CONFIG_NAME, TASK_CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, METRICS_NAME, "adapter_config.json",
              "adapter_model.safetensors"}  # fmt: skip


# helpers: where a folder comes from (a local folder, or a Hub repo through huggingface_hub and its cache)


@dataclasses.dataclass(frozen=True)
class _Source:
    name: str  # the folder as given, or the repo id
    local: bool
    revision: str | None = None
    hub: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # cache_dir, token, force/local_files_only

    @property
    def label(self) -> str:
        """What adapter.source / task.generator record: the folder, the repo id, or repo@revision."""
        return self.name if self.local or self.revision is None else f"{self.name}@{self.revision}"

    def where(self, filename: str) -> str:
        return os.path.join(self.name, filename) if self.local else f"{self.label}/{filename}"

    def find(self, filename: str) -> str | None:
        """Local path of ``filename`` (downloaded or from the Hub cache), or None when the folder/repo lacks it."""
        if self.local:
            path = os.path.join(self.name, filename)
            return path if os.path.isfile(path) else None
        try:
            return hf_hub_download(repo_id=self.name, filename=filename, revision=self.revision, **self.hub)
        except EntryNotFoundError:  # the repo has no such file, or (offline) the cache does not hold it
            return None
        except (RepositoryNotFoundError, RevisionNotFoundError) as e:
            raise FileNotFoundError(f"{self.label}: {type(e).__name__} on the Hub ({str(e).splitlines()[0]})") from None

    def require(self, filename: str, layout: str) -> str:
        path = self.find(filename)
        if path is not None:
            return path
        if self.local:
            raise FileNotFoundError(f"{self.where(filename)} not found: {layout}")
        cache = self.hub.get("cache_dir") or hf_constants.HF_HUB_CACHE
        offline = bool(hf_constants.HF_HUB_OFFLINE or self.hub.get("local_files_only"))
        raise FileNotFoundError(
            f"{self.where(filename)} not found on the Hub nor in the Hub cache {cache} (offline: {offline}; there is "
            f"no local folder {self.name} either): {layout}"
        )


def _source(name_or_path: str | os.PathLike, revision: str | None, **hub: Any) -> _Source:
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        if revision is not None:
            raise ValueError(f"revision={revision!r} selects a Hub commit, but {path} is a local folder")
        return _Source(path, True)
    if os.path.exists(path):
        raise ValueError(f"{path} is a file: pass the folder that holds it")
    repo_id = path
    if revision is None and "@" in path:  # "owner/name@revision", as adapter.source records a pinned load
        repo_id, revision = path.split("@", 1)
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise FileNotFoundError(f"{path}: no such folder, and not a Hub repo id ('owner/name')") from None
    return _Source(repo_id, False, revision, {k: v for k, v in hub.items() if v is not None})


# generator


def generator_card(adapter: LanguageConditionedAdapter, *, name: str, metrics: Any = None, **card: Any) -> tuple:
    """(model card, normalised metrics) of a generator; ``card``: datasets, recipe (see ``cards.generator_card``)."""
    results = cards.read_metrics(metrics)
    n_params = sum(p.numel() for p in adapter.parameters())
    base = type(adapter)._hub_mixin_info.model_card_data  # the mixin's library_name / license / tags
    return cards.generator_card(
        adapter.config, name=name, n_params=n_params, results=results, base=base, **card
    ), results


def write_generator(adapter: LanguageConditionedAdapter, folder: Path, **card: Any) -> None:
    """config.json, model.safetensors, README.md (and metrics.json when given) into an existing ``folder``."""
    config = adapter.config
    if not config.resolved:
        raise ValueError("only a built generator (resolved config) can be saved")
    for what, value in (("backbone_weights", config.backbone_weights), ("text_encoder", config.text_encoder)):
        if os.path.exists(value):
            warnings.warn(
                f"the saved config names the local path {what}={value!r}: others cannot load it", stacklevel=4
            )
    _write_json(folder / CONFIG_NAME, {"library": LIBRARY, "kind": "generator", **config.to_dict()})
    _save_tensors(folder / WEIGHTS_NAME, adapter.state_dict())
    model_card, results = generator_card(adapter, **card)
    if results:
        (folder / METRICS_NAME).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    model_card.save(folder / CARD_NAME)


def save_generator(
    adapter: LanguageConditionedAdapter,
    directory: str | os.PathLike,
    *,
    repo_id: str | None = None,
    metrics: str | os.PathLike | Mapping | Sequence | None = None,
    datasets: Sequence[str] | None = None,
    recipe: str | os.PathLike | None = None,
) -> Path:
    """Write a generator folder atomically; the card's usage snippet loads ``repo_id`` (else ``directory``)."""
    name = repo_id or os.fspath(directory)
    recipe = recipe if recipe is not None else cards.find_recipe(directory)
    with _writing(directory) as tmp:
        write_generator(adapter, tmp, name=name, metrics=metrics, datasets=datasets, recipe=recipe)
    return Path(directory)


def load_generator(
    cls: type[LanguageConditionedAdapter],
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    map_location: str | torch.device = "cpu",
    text_encoder: Any = None,
    **hub: Any,
) -> LanguageConditionedAdapter:
    """A generator from a folder or a Hub repo (any revision, or offline from the cache); strict in every respect."""
    src = _source(name_or_path, revision, **hub)
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
            raise ValueError(f"{src.where(WEIGHTS_NAME)}: {what} in {_few(keys)}; the file is corrupt")
    if config.n_layers > len(state):  # every layer holds tensors: the loop below is bounded by the file, not the config
        raise ValueError(f"{label}: n_layers={config.n_layers}, but {WEIGHTS_NAME} holds only {len(state)} tensors")
    # shapes first, on the meta device: a config that declares a huge generator must not allocate it (a stranger's
    # rank=10**7 would take the process down), and the real build below is no larger than the file just read
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in cls(config, text_encoder=text_encoder).state_dict().items()}
    except (RuntimeError, OverflowError, TypeError, ValueError) as e:  # sizes past what torch can describe, no targets
        raise ValueError(f"{label}: describes a generator that cannot be built ({e})") from None
    _check_tensors(expected, state, src.where(WEIGHTS_NAME), f"the generator that {label} describes")
    adapter = cls(config, text_encoder=text_encoder)  # resolved config: builds neither a backbone nor a text encoder
    adapter.load_state_dict(state, strict=True)
    adapter.source = src.label
    return adapter.to(map_location).eval()


# task


def write_task(task: TaskAdaptation, folder: Path, *, name: str, backbone_weights: str | None = None) -> None:
    specs = {s.name: s for s in task.target_specs}
    unknown = sorted(set(task.deltas) - set(specs))
    if unknown:
        raise ValueError(f"deltas for {_few(unknown)} have no target spec in this task; cannot describe them")
    data = {
        "library": LIBRARY,
        "kind": "task",
        "format_version": TASK_FORMAT_VERSION,
        "backbone": task.backbone,
        "backbone_weights": backbone_weights,
        "generator": task.generator,
        "class_names": list(task.class_names),
        "descriptions": {c: list(d) for c, d in task.descriptions.items()},
        "num_classes": task.num_classes,
        "feature_dim": int(task.head_weight.shape[1]),
        "target_specs": AdapterConfig(target_specs=list(task.target_specs)).to_dict()["target_specs"],
        "deltas": {n: {"scale": d.scale, "rank": d.rank} for n, d in task.deltas.items()},
    }
    _write_json(folder / TASK_CONFIG_NAME, data)
    tensors = {"head.weight": task.head_weight, "head.bias": task.head_bias}
    for n, d in task.deltas.items():
        tensors[f"delta.{n}.A"], tensors[f"delta.{n}.B"] = d.A, d.B
    _save_tensors(folder / WEIGHTS_NAME, tensors)
    cards.task_card(task, name=name, backbone_weights=backbone_weights).save(folder / CARD_NAME)


def save_task(
    task: TaskAdaptation,
    directory: str | os.PathLike,
    *,
    repo_id: str | None = None,
    backbone_weights: str | None = None,
) -> Path:
    with _writing(directory) as tmp:
        write_task(task, tmp, name=repo_id or os.fspath(directory), backbone_weights=backbone_weights)
    return Path(directory)


def _strings(value: Any, what: str) -> list[str]:
    # a string is a sequence too: list("abc") would silently make three classes out of one
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{what} must be a list of strings, got {str(value)[:80]!r}")
    return value


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TypeError(f"{what} must be a positive int, got {value!r}")
    return value


def _a_shape(spec: TargetSpec, rank: int) -> tuple[int, ...]:
    return (rank, spec.in_features) if spec.kind == "linear" else (rank, spec.in_features, *spec.kernel_size)


def load_task(
    cls: type[TaskAdaptation],
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    map_location: str | torch.device = "cpu",
    **hub: Any,
) -> TaskAdaptation:
    src = _source(name_or_path, revision, **hub)
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
            raise ValueError(f"class_names repeat a class: {_few(sorted({n for n in names if names.count(n) > 1}))}")
        if not isinstance(data["descriptions"], dict):
            raise TypeError(f"descriptions must map class names to lists of strings, got {data['descriptions']!r:.80}")
        descriptions = {k: _strings(v, f"descriptions[{k!r}]") for k, v in data["descriptions"].items()}
        c, f = _count(data["num_classes"], "num_classes"), _count(data["feature_dim"], "feature_dim")
        deltas = data["deltas"]
        if not isinstance(deltas, dict):
            raise TypeError(f"deltas must map target names to {{scale, rank}}, got {deltas!r}")
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
            expected[f"delta.{n}.A"], expected[f"delta.{n}.B"] = _a_shape(spec, r), (spec.out_features, r)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{label}: malformed task config ({type(e).__name__}: {e})") from None
    weights = src.where(WEIGHTS_NAME)
    tensors = _read_tensors(src.require(WEIGHTS_NAME, _TASK_LAYOUT), weights)
    _check_tensors(expected, tensors, weights, f"the task that {label} describes")
    try:
        task = cls(
            class_names=names,
            descriptions=descriptions,
            deltas={
                n: LowRankDelta(tensors[f"delta.{n}.A"], tensors[f"delta.{n}.B"], float(meta["scale"]))
                for n, meta in deltas.items()
            },
            head_weight=tensors["head.weight"],
            head_bias=tensors["head.bias"],
            backbone=data["backbone"],
            target_specs=specs,
            generator=data.get("generator"),
            backbone_weights=data.get("backbone_weights"),
        )
    except (TypeError, ValueError) as e:
        raise ValueError(f"{src.label}: {e}") from None
    return task.to(map_location)


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
