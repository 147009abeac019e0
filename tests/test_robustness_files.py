"""Robustness of what lang2net reads from strangers: no unpickling, lying safetensors headers, hostile JSON/YAML,
configs with unexpected types or keys, and names that try to leave their folder. Every failure must be a clear
ValueError/TypeError/FileNotFoundError naming the file, and nothing may be written anywhere (see docs/ROBUSTNESS.md).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import pickle
import re
import shutil
import struct
from pathlib import Path

import pytest
import torch
from _robustness import IMG, backbone, embeddings, images, listing, make_task, one_torch_thread, same_task, tiny_adapter
from huggingface_hub import constants as hf_constants
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import lang2net
from lang2net import AdapterConfig, LanguageConditionedAdapter, TaskAdaptation
from lang2net.data import load_descriptions, save_descriptions
from lang2net.io import folders as hub

CLEAR = (ValueError, TypeError, FileNotFoundError)
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
# class names and target names that would escape a folder if lang2net ever made a path of them
ESCAPING = ["../evil", "a/b", "/abs", "..", "nul\x00byte", "C:\\win", "~", ".hidden", "a\nb", "\u202eRTL"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_torch_thread()


# helpers


@pytest.fixture(scope="module")
def adapter() -> LanguageConditionedAdapter:
    return tiny_adapter()


@pytest.fixture(scope="module")
def task(adapter) -> TaskAdaptation:
    return make_task(adapter, 3)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, adapter, task) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("artifacts")
    return {"generator": adapter.save_pretrained(root / "generator"), "task": task.save_pretrained(root / "task")}


def _load(kind: str, folder: Path):
    return (LanguageConditionedAdapter if kind == "generator" else TaskAdaptation).from_pretrained(folder)


def _copy(folders: dict[str, Path], kind: str, parent: Path) -> Path:
    return Path(shutil.copytree(folders[kind], parent / kind))


def _expect_clear_error(kind: str, folder: Path, parent: Path, error=CLEAR) -> Exception:
    """Loading fails with a clear error naming the folder, and writes nothing anywhere under ``parent``."""
    before = listing(parent)
    with pytest.raises(error) as info:
        _load(kind, folder)
    assert str(folder) in str(info.value), f"the error does not name the folder: {info.value}"
    assert listing(parent) == before
    return info.value


def _split(raw: bytes) -> tuple[int, dict, bytes]:
    n = struct.unpack("<Q", raw[:8])[0]
    return n, json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _with_header(header: dict, body: bytes) -> bytes:
    data = json.dumps(header).encode()
    data += b" " * (-len(data) % 8)
    return struct.pack("<Q", len(data)) + data + body


def _edit_first(raw: bytes, **changes) -> bytes:
    _, header, body = _split(raw)
    first = next(k for k in header if k != "__metadata__")
    header[first] = {**header[first], **changes}
    return _with_header(header, body)


def _retensor(raw: bytes, change) -> bytes:
    """The same file with its first tensor replaced by ``change(tensor)`` (a valid safetensors file)."""
    from safetensors.torch import load, save

    tensors = load(raw)
    first = sorted(tensors)[0]
    tensors[first] = change(tensors[first])
    return save(tensors)


# 1. the library never unpickles: a scan of its source, and a loader that would notice


PICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
UNSAFE_YAML = {"Loader", "UnsafeLoader", "FullLoader", "CLoader", "CUnsafeLoader", "CFullLoader"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_loads(source: str) -> list[str]:
    """Lines of ``source`` that could unpickle or run code from a file: torch.load without weights_only=True, any
    pickle-family module, yaml loads without a safe loader, np.load(allow_pickle=True), trust_remote_code, eval/exec."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            if any(m.split(".")[0] in PICKLERS for m in modules):
                found.append(f"line {node.lineno}: imports {modules}")
        elif isinstance(node, ast.Name) and node.id in PICKLERS:
            found.append(f"line {node.lineno}: uses {node.id}")
        elif isinstance(node, ast.Call):
            name, kw = _dotted(node.func), {k.arg: k.value for k in node.keywords}
            if name.split(".")[-1] == "load" and name.split(".")[0] == "torch" and not _is_true(kw.get("weights_only")):
                found.append(f"line {node.lineno}: {name} without weights_only=True")
            if name in ("yaml.unsafe_load", "yaml.full_load", "yaml.load_all") or (
                name == "yaml.load"
                and (kw.get("Loader") is None or _dotted(kw["Loader"]).split(".")[-1] in UNSAFE_YAML)
            ):
                found.append(f"line {node.lineno}: {name} without a safe loader")
            if (
                name.split(".")[-1] == "load"
                and name.split(".")[0] in ("np", "numpy")
                and _is_true(kw.get("allow_pickle"))
            ):
                found.append(f"line {node.lineno}: {name}(allow_pickle=True)")
            if _is_true(kw.get("trust_remote_code")):
                found.append(f"line {node.lineno}: trust_remote_code=True")
            if name in ("eval", "exec", "builtins.eval", "builtins.exec"):
                found.append(f"line {node.lineno}: {name}()")
    return found


SOURCES = sorted(Path(lang2net.__file__).parent.rglob("*.py"))


@pytest.mark.parametrize(
    "path", SOURCES, ids=[str(p.relative_to(Path(lang2net.__file__).parent.parent)) for p in SOURCES]
)
def test_library_source_never_unpickles(path):
    assert unsafe_loads(path.read_text(encoding="utf-8")) == []


SCANNER_CASES = [
    "import torch\ntorch.load(f)",
    "import torch\ntorch.load(f, weights_only=False)",
    "import pickle",
    "from pickle import loads",
    "import dill as d",
    "x = pickle.loads(b)",
    "import yaml\nyaml.load(t)",
    "import yaml\nyaml.load(t, Loader=yaml.Loader)",
    "import yaml\nyaml.unsafe_load(t)",
    "import numpy as np\nnp.load(f, allow_pickle=True)",
    "AutoModel.from_pretrained(x, trust_remote_code=True)",
    "eval(s)",
]


@pytest.mark.parametrize("source", SCANNER_CASES)
def test_the_scan_catches_unsafe_loads(source):  # so that an empty scan above means something
    assert unsafe_loads(source)


class _Payload:
    """Unpickling this creates a file: proof that something unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("kind", ["generator", "task"])
def test_loading_never_unpickles_even_with_a_pickle_beside_the_weights(tmp_path, folders, monkeypatch, kind):
    folder = _copy(folders, kind, tmp_path)
    marker = tmp_path / "pwned"
    for name in ("pytorch_model.bin", "optimizer.pt", "model.pkl"):
        (folder / name).write_bytes(pickle.dumps(_Payload(marker)))

    def refuse(*args, **kwargs):
        raise AssertionError("lang2net unpickled something while loading")

    for module, attr in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(module, attr, refuse)
    loaded = _load(kind, folder)
    assert not marker.exists()
    if kind == "task":
        assert same_task(loaded, TaskAdaptation.from_pretrained(folders["task"]))
    (folder / "model.safetensors").unlink()  # with only the pickle left, it is refused, not read
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        _load(kind, folder)
    assert not marker.exists()


# 2. safetensors files that lie


WEIGHT_CORRUPTIONS = {
    "header declares 10 GB": lambda raw: struct.pack("<Q", 10 * 2**30) + raw[8:],
    "header length 2**64-1": lambda raw: struct.pack("<Q", 2**64 - 1) + raw[8:],
    "header length = file length": lambda raw: struct.pack("<Q", len(raw)) + raw[8:],
    "header is binary": lambda raw: raw[:8] + b"\xff" * _split(raw)[0] + _split(raw)[2],
    "header is a JSON list": lambda raw: raw[:8] + b"[1,2]".ljust(_split(raw)[0]) + _split(raw)[2],
    "offsets past the end": lambda raw: _edit_first(raw, data_offsets=[0, 10**12]),
    "offsets reversed": lambda raw: _edit_first(raw, data_offsets=[8, 0]),
    "offsets negative": lambda raw: _edit_first(raw, data_offsets=[-8, 0]),
    "shape larger than its bytes": lambda raw: _edit_first(raw, shape=[10**6, 10**6]),
    "dtype wider than its bytes": lambda raw: _edit_first(raw, dtype="F64"),
    "dtype unknown": lambda raw: _edit_first(raw, dtype="X99"),
    "empty file": lambda raw: b"",
    "5 bytes": lambda raw: raw[:5],
    "header only": lambda raw: raw[: 8 + _split(raw)[0]],
    "half the file": lambda raw: raw[: len(raw) // 2],
    "last byte missing": lambda raw: raw[:-1],
    "one byte extra": lambda raw: raw + b"\x00",
    "a NaN weight": lambda raw: _retensor(raw, lambda t: t.index_fill(-1, torch.tensor([0]), float("nan"))),
    "an inf weight": lambda raw: _retensor(raw, lambda t: t.index_fill(-1, torch.tensor([0]), float("inf"))),
    "an integer tensor": lambda raw: _retensor(raw, lambda t: t.long()),
    "a bool tensor": lambda raw: _retensor(raw, lambda t: t > 0),
}


@pytest.mark.parametrize("kind", ["generator", "task"])
@pytest.mark.parametrize("corruption", list(WEIGHT_CORRUPTIONS))
def test_lying_safetensors_files_are_clear_errors(tmp_path, folders, kind, corruption):
    folder = _copy(folders, kind, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(WEIGHT_CORRUPTIONS[corruption](weights.read_bytes()))
    error = _expect_clear_error(kind, folder, tmp_path, ValueError)
    assert "model.safetensors" in str(error) or "non-finite" in str(error) or "floating" in str(error)


@pytest.mark.parametrize("kind", ["generator", "task"])
@FUZZ
@given(data=st.data())
def test_mangled_safetensors_bytes_load_or_fail_clearly(tmp_path_factory, folders, kind, data):
    """Random truncations and overwrites of the header: a ValueError naming the file, or (a harmless change) the
    same artifact."""
    parent = tmp_path_factory.mktemp("mangled")
    folder = _copy(folders, kind, parent)
    weights = folder / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    n = _split(bytes(raw))[0]
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="keep")]
    else:
        at = data.draw(st.integers(0, 8 + n - 1), label="at")
        patch = data.draw(st.binary(min_size=1, max_size=8), label="patch")
        raw[at : at + len(patch)] = patch
    weights.write_bytes(bytes(raw))
    before = listing(parent)
    try:
        loaded = _load(kind, folder)
    except ValueError as e:
        event("refused")
        assert str(folder) in str(e)
    else:
        event("loaded")
        reference = _load(kind, folders[kind])
        if kind == "task":
            assert same_task(loaded, reference)
        else:
            loaded_state = loaded.state_dict()
            assert all(torch.equal(v, loaded_state[k]) for k, v in reference.state_dict().items())
    assert listing(parent) == before


# 3. config files that lie: unexpected keys, types and values


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
GENERATOR_KEYS = ["library", "kind", *(f.name for f in dataclasses.fields(AdapterConfig)), "surprise"]
TASK_KEYS = sorted(hub._TASK_KEYS | {"surprise"})

CONFIG_CASES = [  # (key, value, what the error says)
    ("rank", "8", "rank must be a positive int"),
    ("rank", 10**7, "does not fit|exceeds"),  # would allocate ~TBs if the generator were built before the check
    ("rank", 2**62, "does not fit|cannot be built"),
    ("d_model", 2**40, "cannot be built|does not fit"),
    ("n_layers", 10**9, "holds only"),  # would loop a billion times building layers
    ("dropout", "0.5", "dropout"),
    ("dropout", None, "dropout"),
    ("text_dim", 3.0, "text_dim must be a positive int"),
    ("backbone_kwargs", "img_size=32", "backbone_kwargs must be a dict"),
    ("backbone_weights", 5, "backbone_weights"),
    ("target_specs", {"a": 1}, "target_specs must be a list"),
    ("target_specs", [{"name": "x", "kind": "linear", "in_features": -1, "out_features": 4}], "in_features"),
    (
        "target_specs",
        [{"name": "x", "kind": "conv2d", "in_features": 4, "out_features": 4, "kernel_size": 3}],
        "kernel",
    ),
    ("target_specs", [{"name": 5, "kind": "linear", "in_features": 4, "out_features": 4}], "name"),
    ("target_specs", [], "at least one target"),
    ("version", {"a": 1}, "version"),
    ("library", ["lang2net"], "marker"),
    ("surprise", 1, "unknown AdapterConfig keys"),
]


def _rewrite(folder: Path, name: str, change: dict) -> None:
    path = folder / name
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))


@pytest.mark.parametrize(("key", "value", "match"), CONFIG_CASES, ids=[f"{k}={v!r:.30}" for k, v, _ in CONFIG_CASES])
def test_generator_configs_with_bad_types_or_sizes_are_clear_errors(tmp_path, folders, key, value, match):
    folder = _copy(folders, "generator", tmp_path)
    _rewrite(folder, "config.json", {key: value})
    error = _expect_clear_error("generator", folder, tmp_path, ValueError)
    assert re.search(match, str(error)), str(error)


TASK_CASES = [
    ("class_names", "abc", "class_names must be a list of strings"),  # list("abc") would make three classes
    ("class_names", [1, 2, 3], "class_names must be a list of strings"),
    ("class_names", ["a", "a", "b"], "repeat a class"),
    ("descriptions", {"a": "one text"}, r"descriptions\['a'\] must be a list"),
    ("descriptions", [], "descriptions must map class names"),
    ("num_classes", 3.0, "num_classes must be a positive int"),
    ("num_classes", True, "num_classes must be a positive int"),
    ("num_classes", 4, "does not fit"),
    ("feature_dim", -64, "feature_dim must be a positive int"),
    ("deltas", [], "deltas must map"),
    ("deltas", {"blocks.0.attn.qkv": {"scale": 1.0, "rank": "8"}}, "rank of"),
    ("deltas", {"../../etc/passwd": {"scale": 1.0, "rank": 8}}, "target_specs do not describe"),
    ("deltas", {"blocks.0.attn.qkv": {"scale": "nan", "rank": 8}}, "scale must be finite|missing|unexpected"),
    ("backbone", ["test_vit"], "backbone must be a string"),
    ("generator", 5, "generator must be a string"),
    ("backbone_weights", ["timm"], "backbone_weights must be a string"),
    ("target_specs", "blocks", "target spec"),
    ("format_version", "9.0", "newer lang2net"),
    ("kind", "generator", "not a task"),
    ("surprise", 1, "unknown keys"),
]


@pytest.mark.parametrize(("key", "value", "match"), TASK_CASES, ids=[f"{k}={v!r:.30}" for k, v, _ in TASK_CASES])
def test_task_configs_with_bad_types_are_clear_errors(tmp_path, folders, key, value, match):
    folder = _copy(folders, "task", tmp_path)
    _rewrite(folder, "task_config.json", {key: value})
    error = _expect_clear_error("task", folder, tmp_path, ValueError)
    assert re.search(match, str(error)), str(error)


@pytest.mark.parametrize("kind", ["generator", "task"])
@FUZZ
@given(data=st.data())
def test_fuzzed_configs_load_or_fail_clearly(tmp_path_factory, folders, kind, data):
    """Any JSON value for any key (known or not): a ValueError naming the file, or an artifact that still works."""
    parent = tmp_path_factory.mktemp("fuzzed")
    folder = _copy(folders, kind, parent)
    name = "config.json" if kind == "generator" else "task_config.json"
    keys = GENERATOR_KEYS if kind == "generator" else TASK_KEYS
    change = data.draw(st.dictionaries(st.sampled_from(keys), JSON_VALUES, min_size=1, max_size=2), label="change")
    _rewrite(folder, name, change)
    before = listing(parent)
    try:
        loaded = _load(kind, folder)
    except ValueError as e:
        event("refused")
        assert str(folder) in str(e)
    else:
        event("loaded")  # whatever was accepted must still make a working classifier
        task = loaded.generate({"a": "x", "b": "y"}, embeddings=embeddings(2)) if kind == "generator" else loaded
        assert torch.isfinite(task.head_weight).all()
    assert listing(parent) == before


HOSTILE_JSON = {
    "nested 100k deep": b"[" * 100_000 + b"]" * 100_000,
    "unclosed 50k deep": b"{" * 50_000,
    "not UTF-8": b"\xff\xfe junk",
    "empty": b"",
    "null": b"null",
    "a list": b"[1, 2]",
    "a string": b'"text"',
    "NaN": b"NaN",
}


@pytest.mark.parametrize("case", list(HOSTILE_JSON))
@pytest.mark.parametrize("kind", ["generator", "task"])
def test_hostile_json_is_a_clear_error(tmp_path, folders, kind, case):
    folder = _copy(folders, kind, tmp_path)
    (folder / ("config.json" if kind == "generator" else "task_config.json")).write_bytes(HOSTILE_JSON[case])
    _expect_clear_error(kind, folder, tmp_path, ValueError)


# 4. names that try to leave their folder


def test_class_names_that_look_like_paths_stay_data(tmp_path, adapter):
    """Class names with .., /, NUL, ... are saved, loaded and exported as data: only the artifact's own files are
    written, all inside its folder, and the names come back unchanged."""
    parent = tmp_path / "parent"
    parent.mkdir()
    task = make_task(adapter, names=ESCAPING)
    model = backbone()
    files = {
        "task": ["README.md", "model.safetensors", "task_config.json"],
        "peft": ["README.md", "adapter_config.json", "adapter_model.safetensors"],
        "timm": ["README.md", "config.json", "model.safetensors"],
    }
    task.save_pretrained(parent / "task")
    task.to_peft(parent / "peft")
    task.to_timm(parent / "timm", model, model_args={"img_size": IMG})
    save_descriptions(task.descriptions, parent / "descriptions.yaml")
    save_descriptions(task.descriptions, parent / "descriptions.json")
    expected = ["descriptions.json", "descriptions.yaml", *files, *(f"{k}/{f}" for k, fs in files.items() for f in fs)]
    assert listing(parent) == sorted(expected)
    loaded = TaskAdaptation.from_pretrained(parent / "task")
    assert loaded.class_names == ESCAPING and same_task(loaded, task)
    assert load_descriptions(parent / "descriptions.yaml") == load_descriptions(parent / "descriptions.json")
    assert list(load_descriptions(parent / "descriptions.yaml")) == ESCAPING
    with torch.no_grad():
        assert loaded.bind(model)(images(model)).shape == (2, len(ESCAPING))


@pytest.mark.parametrize("name", ["../../etc/passwd", "blocks.0.attn.qkv/../x", "nope\x00", "blocks.9.attn.qkv"])
def test_target_names_that_are_not_modules_are_refused_at_use(tmp_path, adapter, name):
    """A saved generator whose target names are not module names loads (it never builds a backbone), but binding,
    merging and exporting its tasks name the missing layer and write nothing."""
    specs = list(adapter.config.target_specs)
    specs[0] = dataclasses.replace(specs[0], name=name)
    config = dataclasses.replace(adapter.config, target_specs=specs)
    odd = LanguageConditionedAdapter(config)
    parent = tmp_path / "parent"
    folder = odd.save_pretrained(parent / "generator")
    task = LanguageConditionedAdapter.from_pretrained(folder).generate({"a": "x", "b": "y"}, embeddings=embeddings(2))
    assert task.target_specs[0].name == name
    model = backbone()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    before = listing(parent)
    for use in (lambda: task.bind(model), lambda: task.merge(model), lambda: task.to_peft(parent / "peft")):
        with pytest.raises(ValueError, match=r"does not have|does not fit|does not exist"):
            use()
    assert listing(parent) == before
    assert lang2net.engine.injection._INJECTED.get(model) is None and all(
        "forward" not in m.__dict__ for m in model.modules()
    )
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    loaded = TaskAdaptation.from_pretrained(task.save_pretrained(parent / "task"))  # a task of it round-trips as data
    assert loaded.target_specs[0].name == name


@pytest.mark.parametrize("name", ["../../etc", "owner/../../x", "a/b/c/d", "owner/name\x00", "", " ", "owner//name"])
def test_repo_ids_that_try_to_leave_the_cache_are_refused(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    for cls in (LanguageConditionedAdapter, TaskAdaptation):
        with pytest.raises(CLEAR):
            cls.from_pretrained(name)
    assert listing(tmp_path) == []


# 5. description files


_ALIAS_BOMB = (
    "cls: [[&l0 [a,a,a,a,a,a,a,a,a], "
    + ", ".join(f"&l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9))
    + "]]\n"
).encode()
DESCRIPTION_FILES = {  # name: (file name, bytes, error)
    "deep JSON": ("d.json", b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", ValueError),
    "deep YAML": ("d.yaml", b"a: " + b"[" * 20_000 + b"]" * 20_000, ValueError),
    "python tag": ("d.yaml", b"a: !!python/object/apply:os.system ['touch pwned']\n", ValueError),
    "alias bomb": ("d.yaml", _ALIAS_BOMB, TypeError),  # 9 levels of 9 aliases: 9**9 strings if expanded
    "not UTF-8": ("d.yaml", b"a: [\xff\xfe]\n", ValueError),
    "lone surrogate escape": ("d.json", b'{"a": ["\\ud800"]}', ValueError),
    "duplicate class": ("d.yaml", b"a: [x]\na: [y]\n", ValueError),
    "a list": ("d.yaml", b"- a\n- b\n", ValueError),
    "integer class": ("d.yaml", b"1: [x]\n", TypeError),
    "blank description": ("d.json", b'{"a": ["  "]}', ValueError),
    "a number, not text": ("d.json", b'{"a": 3}', TypeError),
    "empty": ("d.yaml", b"", ValueError),
}


@pytest.mark.parametrize("case", list(DESCRIPTION_FILES))
def test_hostile_description_files_are_clear_errors(tmp_path, case):
    name, data, error = DESCRIPTION_FILES[case]
    (tmp_path / name).write_bytes(data)
    with pytest.raises(error) as info:
        load_descriptions(tmp_path / name)
    message = str(info.value)
    assert name in message and len(message) < 1000, message[:300]  # an alias bomb must not become a GB message
    assert listing(tmp_path) == [name]


DESCRIPTION_TEXT = st.text(st.characters(codec="utf-8"), max_size=30)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    descriptions=st.dictionaries(
        DESCRIPTION_TEXT, st.lists(DESCRIPTION_TEXT, min_size=1, max_size=3), min_size=1, max_size=5
    ),
    fmt=st.sampled_from(["yaml", "json"]),
)
def test_description_files_round_trip_any_unicode(tmp_path_factory, descriptions, fmt):
    folder = tmp_path_factory.mktemp("descriptions")
    path = folder / f"classes.{fmt}"
    try:
        save_descriptions(descriptions, path)
    except ValueError as e:  # blank descriptions are refused before anything is written
        assert "blank" in str(e)
        assert listing(folder) == []
        return
    assert load_descriptions(path) == descriptions
    assert listing(folder) == [path.name]
