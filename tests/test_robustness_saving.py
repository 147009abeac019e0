"""Saving is atomic: a full disk or an interrupt at any point of a save leaves the previous artifact byte for byte, and
no temporary file or folder behind, for generator, task, peft and timm folders, description files and training
checkpoints (see docs/ROBUSTNESS.md)."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path

import peft.peft_model
import pytest
import torch
from _robustness import IMG, backbone, listing, make_task, one_torch_thread, snapshot, tiny_adapter
from huggingface_hub import ModelCard

from lang2net import LanguageConditionedAdapter, TaskAdaptation
from lang2net.data import load_descriptions, save_descriptions
from lang2net.io import folders as hub
from lang2net.workflows import training


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_torch_thread()


# helpers


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def _half_then_full(write: Callable) -> Callable:
    """A safetensors writer that gets half the file onto the disk, then finds it full."""

    def writer(tensors, path, *args, **kwargs):
        write(tensors, path, *args, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
        _disk_full()

    return writer


class _HalfFile:
    """A text file whose writes stop halfway with ENOSPC."""

    def __init__(self, f) -> None:
        self.f = f

    def write(self, text: str) -> int:
        self.f.write(text[: len(text) // 2])
        self.f.flush()
        _disk_full()

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


def _nth_replace_fails(n: int) -> Callable:
    real, calls = os.replace, {"n": 0}

    def replace(src, dst, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            _disk_full()
        return real(src, dst, *args, **kwargs)

    return replace


@pytest.fixture(scope="module")
def versions():
    """Two versions of everything that can be saved (old, new)."""
    adapters = [tiny_adapter(seed=0), tiny_adapter(seed=5)]
    tasks = [make_task(adapters[0], 3, seed=0), make_task(adapters[1], 4, seed=1)]
    descriptions = [{"a": ["first version"]}, {"a": ["second version"], "b": ["another class"]}]
    return adapters, tasks, descriptions, backbone()


def _checkpoint(adapter: LanguageConditionedAdapter, step: int) -> Callable[[Path], None]:
    """What lang2net.training writes into a checkpoint folder (through the module's own save_file / torch.save)."""

    def write(folder: Path) -> None:
        training.save_file(adapter.state_dict(), folder / "generator.safetensors")
        torch.save({"state": {}, "param_groups": [{"lr": 0.1 * step}]}, folder / "optimizer.pt")
        (folder / "trainer_state.json").write_text(json.dumps({"step": step}))

    return write


def _save(kind: str, versions, v: int, path: Path) -> None:
    adapters, tasks, descriptions, model = versions
    if kind == "generator":
        adapters[v].save_pretrained(path)
    elif kind == "task":
        tasks[v].save_pretrained(path)
    elif kind == "peft":
        tasks[v].to_peft(path)
    elif kind == "timm":
        tasks[v].to_timm(path, model, model_args={"img_size": IMG})
    elif kind.startswith("descriptions"):
        save_descriptions(descriptions[v], path)
    else:
        with training.atomic_folder(path) as tmp:  # the writer training's checkpoints and best/ go through
            _checkpoint(adapters[v], v + 1)(tmp)


def _check_loads(kind: str, path: Path, versions, v: int) -> None:
    """The artifact at ``path`` is a complete version ``v``."""
    adapters, tasks, descriptions, _ = versions
    if kind == "generator":
        loaded = LanguageConditionedAdapter.from_pretrained(path).state_dict()
        assert all(torch.equal(t, loaded[k]) for k, t in adapters[v].state_dict().items())
    elif kind == "task":
        assert TaskAdaptation.from_pretrained(path).class_names == tasks[v].class_names
    elif kind.startswith("descriptions"):
        assert load_descriptions(path) == descriptions[v]
    elif kind == "checkpoint":
        assert json.loads((path / "trainer_state.json").read_text())["step"] == v + 1


WRITERS = {  # where each artifact's bytes reach the disk
    "generator": (hub, "save_file"),
    "task": (hub, "save_file"),
    "timm": (hub, "save_file"),
    "peft": (peft.peft_model, "safe_save_file"),
    "checkpoint": (training, "save_file"),
}
INTERRUPTS = {  # a step in the middle of each save
    "generator": (ModelCard, "save"),
    "task": (ModelCard, "save"),
    "timm": (ModelCard, "save"),
    "peft": (ModelCard, "save"),
    "checkpoint": (torch, "save"),
    "descriptions.yaml": (os, "fsync"),
    "descriptions.json": (os, "fsync"),
}
FAILURES = ["ENOSPC in the writer", "ENOSPC in os.replace #1", "ENOSPC in os.replace #2", "interrupt mid-save"]
CASES = [
    pytest.param(kind, failure)
    for kind in ["generator", "task", "peft", "timm", "descriptions.yaml", "descriptions.json", "checkpoint"]
    for failure in FAILURES
    if not (kind.startswith("descriptions") and failure == "ENOSPC in os.replace #2")  # a file: one rename only
]


def _fail(monkeypatch, kind: str, failure: str) -> None:
    if failure == "ENOSPC in the writer":
        if kind.startswith("descriptions"):  # the atomic writer hands the text writer a temporary path
            real = Path.open
            monkeypatch.setattr(Path, "open", lambda self, *a, **k: _HalfFile(real(self, *a, **k)))
        else:
            module, name = WRITERS[kind]
            monkeypatch.setattr(module, name, _half_then_full(getattr(module, name)))
    elif failure.startswith("ENOSPC in os.replace"):
        monkeypatch.setattr(os, "replace", _nth_replace_fails(int(failure[-1])))
    else:
        monkeypatch.setattr(*INTERRUPTS[kind], _interrupt)


# tests


@pytest.mark.parametrize(("kind", "failure"), CASES)
def test_a_failed_save_leaves_the_old_artifact_intact(tmp_path, versions, monkeypatch, kind, failure):
    parent = tmp_path / "parent"
    parent.mkdir()
    path = parent / kind
    _save(kind, versions, 0, path)
    old = snapshot(parent)
    before = listing(parent)
    with monkeypatch.context() as m:
        _fail(m, kind, failure)
        with pytest.raises((OSError, KeyboardInterrupt)):
            _save(kind, versions, 1, path)
    assert listing(parent) == before, "a temporary or half-written file was left behind"
    assert snapshot(parent) == old
    _check_loads(kind, path, versions, 0)
    _save(kind, versions, 1, path)  # and the next save that succeeds replaces it completely
    assert listing(parent) == before and snapshot(parent) != old
    _check_loads(kind, path, versions, 1)


@pytest.mark.parametrize(("kind", "failure"), [c for c in CASES if c.values[1] != "ENOSPC in os.replace #2"])
def test_a_failed_first_save_leaves_nothing(tmp_path, versions, monkeypatch, kind, failure):
    with monkeypatch.context() as m:
        _fail(m, kind, failure)
        with pytest.raises((OSError, KeyboardInterrupt)):
            _save(kind, versions, 0, tmp_path / kind)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_files_follow_the_umask(tmp_path, umask):
    """Every file lang2net writes gets the permissions a plain open() would give under the user's umask (safetensors
    alone would leave 0600 weights behind a 0022 umask)."""
    from lang2net.apps import explain_render
    from lang2net.explain import Explanation

    adapter = tiny_adapter()
    task = make_task(adapter)
    previous = os.umask(umask)
    try:
        adapter.save_pretrained(tmp_path / "generator")
        task.save_pretrained(tmp_path / "task")
        task.to_peft(tmp_path / "peft")
        task.to_timm(tmp_path / "timm", backbone(), model_args={"img_size": IMG})
        e = Explanation("a", "an apple", ["an", "apple"], [(0, 2), (3, 8)], {"gradient": [0.1, 0.9]}, 1.0, "test")
        explain_render.to_html(e, tmp_path / "explain" / "a.html")
        explain_render.to_png(e, tmp_path / "explain" / "a.png")
        save_descriptions({"a": ["an apple"], "b": ["a pear"]}, tmp_path / "d.yaml")
    finally:
        os.umask(previous)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 14 and any(p.name == "model.safetensors" for p in files)
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes
