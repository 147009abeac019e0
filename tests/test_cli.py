"""The ``lang2net`` command: help, the generate -> export -> predict round trip, and one-line errors for bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import yaml
from conftest import assert_close
from PIL import Image

import lang2net
from lang2net.apps.cli import build_parser, main

SUBCOMMANDS = [
    "demo",
    "generate",
    "predict",
    "export",
    "push",
    "train",
    "eval",
    "reproduce",
    "bench",
    "bench-generation",
]


def test_every_subcommand_has_help_with_an_example(capsys):
    choices = build_parser()._subparsers._group_actions[0].choices
    assert set(SUBCOMMANDS) <= set(choices)
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert f"usage: lang2net {name}" in out
        assert "example:" in out, name


def test_unknown_subcommand_and_flag_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["frobnicate"])
    assert exit_.value.code == 2 and "invalid choice: 'frobnicate'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--colour", "red"])
    assert exit_.value.code == 2


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = lang2net.AdapterConfig(
        backbone="test_resnet", backbone_weights="random", text_encoder=lang2net.PACKAGED_MINILM, d_model=32, n_heads=2
    )
    adapter = lang2net.LanguageConditionedAdapter(config)
    with torch.no_grad():
        adapter.generator.deltas.core.weight.normal_(0, 0.05)
    folder = tmp_path_factory.mktemp("gen") / "generator"
    adapter.save_pretrained(folder)
    return folder


def _descriptions(tmp_path):
    path = tmp_path / "classes.yaml"
    path.write_text(
        yaml.safe_dump({"sandal": ["An open shoe with straps."], "bag": ["A handbag with a handle."]}, sort_keys=False)
    )
    return path


def test_generate_export_predict_round_trip(generator_dir, tmp_path, capsys):
    assert (
        main(
            [
                "generate",
                "--adapter",
                str(generator_dir),
                "--descriptions",
                str(_descriptions(tmp_path)),
                "--output",
                str(tmp_path / "task"),
            ]
        )
        == 0
    )
    task = lang2net.TaskAdaptation.from_pretrained(str(tmp_path / "task"))
    assert task.class_names == ["sandal", "bag"] and task.backbone_weights == "random"
    assert (
        main(["export", "--task", str(tmp_path / "task"), "--format", "peft", "--output", str(tmp_path / "peft")]) == 0
    )
    assert (tmp_path / "peft" / "adapter_model.safetensors").is_file()
    images = []
    for i in range(3):
        array = np.random.default_rng(i).integers(0, 255, (40, 50, 3), dtype=np.uint8)
        Image.fromarray(array).save(tmp_path / f"img{i}.png")
        images.append(str(tmp_path / f"img{i}.png"))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    capsys.readouterr()
    torch.manual_seed(5)  # the task's backbone weights are "random": seed them for a comparable reference
    assert main(["predict", "--task", str(tmp_path / "task"), *images, "--json", "--top-k", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image"] for r in rows] == images and all(len(r["labels"]) == 2 for r in rows)
    assert all(abs(sum(r["probabilities"]) - 1) < 1e-3 for r in rows)
    torch.manual_seed(5)
    backbone = lang2net.create_backbone("test_resnet", "random")
    library = task.bind(backbone).predict(images)  # the Python path: same preprocessing, same numbers
    top2 = library.top(2)
    assert [r["labels"] for r in rows] == [[label for label, _ in t] for t in top2]
    assert_close(torch.tensor([r["probabilities"] for r in rows]), torch.tensor([[p for _, p in t] for t in top2]),
                 1e-3, "CLI vs library")  # fmt: skip
    assert main(["predict", "--task", str(tmp_path / "task"), str(tmp_path / "broken.png")]) == 1
    assert "cannot read image" in capsys.readouterr().err
    assert (
        main(["predict", "--task", str(tmp_path / "task"), str(tmp_path / "broken.png"), images[0], "--skip-bad"]) == 0
    )
    captured = capsys.readouterr()
    assert "skipped" in captured.err and images[0] in captured.out


def test_bad_input_is_one_line_and_nonzero(generator_dir, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sandal: [an open shoe\nbag: a handbag\n")
    assert (
        main(["generate", "--adapter", str(generator_dir), "--descriptions", str(bad), "--output", str(tmp_path / "t")])
        == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("lang2net generate: error:") and "line" in err and "Traceback" not in err
    assert (
        main(
            [
                "generate",
                "--adapter",
                str(tmp_path / "nowhere"),
                "--descriptions",
                str(_descriptions(tmp_path)),
                "--output",
                str(tmp_path / "t"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "nowhere" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(FileNotFoundError):
        main(
            ["--debug", "generate", "--adapter", str(tmp_path / "nowhere"), "--descriptions", str(bad), "--output", "x"]
        )
    with pytest.raises(SystemExit):
        main(["demo", "--describe"])  # the flag needs a value
    assert main(["demo", "--adapter", str(generator_dir), "--describe", "no colon here"]) == 1
    assert "expected 'class name: description'" in capsys.readouterr().err


def test_explain_prints_every_word_and_writes_html(generator_dir, tmp_path, capsys):
    path = _descriptions(tmp_path)
    html = tmp_path / "why.html"
    args = ["explain", "--adapter", str(generator_dir), "--descriptions", str(path), "--class", "sandal"]
    assert main([*args, "--html", str(html), "--steps", "2", "--no-color"]) == 0
    out = capsys.readouterr().out
    for word in ("open", "shoe", "straps"):
        assert word in out and word in html.read_text()
    assert main([*args[:-1], "boot"]) == 1
    assert "boot" in capsys.readouterr().err


PUBLISHED = "adapters/fashion-mnist-effnet-lite0"


def test_demo_on_the_published_generator(tmp_path, capsys, monkeypatch):
    """The main job: unseen classes written from words, measured on real Fashion-MNIST test images."""
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    assert main(["demo", "--adapter", PUBLISHED, "--limit-per-class", "30", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| chance | 50.0 |" in out and "| generated |" in out and "| text_similarity |" in out
    zsl = float(out.split("| generated |")[1].split("|")[1])
    assert zsl > 50.0, out  # better than chance on the two classes it never saw
    assert (tmp_path / "predictions.png").stat().st_size > 10_000


def test_demo_without_fashion_mnist_runs_on_photos(tmp_path, capsys, monkeypatch):
    from pathlib import Path

    import lang2net.data

    def absent(*args, **kwargs):
        raise FileNotFoundError("Fashion-MNIST not found (apt-get install dataset-fashion-mnist)")

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    monkeypatch.setattr(lang2net.data, "load_dataset", absent)
    assert main(["demo", "--adapter", PUBLISHED, "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "not installed" in out and "cat" in out and (tmp_path / "predictions.png").is_file()


def test_help_is_fast_and_imports_no_torch():
    """`lang2net --help` and `--version` import neither torch nor the heavy subcommand modules."""
    import subprocess
    import sys

    code = (
        "import sys; from lang2net.apps.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'timm', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    version = subprocess.run(
        [sys.executable, "-m", "lang2net.apps.cli", "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == f"lang2net {lang2net.__version__}"


def test_examples_stay_pasteable_and_every_option_has_help(capsys):
    parser = build_parser()
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        if getattr(sub, "fill", None):
            sub.parse_known_args([])  # fills the lazy parser (bench, bench-generation)
        undocumented = [a.dest for a in sub._actions if not a.help]
        assert undocumented == [], (name, undocumented)
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = capsys.readouterr().out
    # the example is printed as written: one line, not re-wrapped by argparse
    assert (
        "example: lang2net bench --device cuda --model vit_base_patch16_224 --batch-size 128 --dtype bf16 --compile"
        in out
    )


def test_verbose_and_debug_work_after_the_subcommand(generator_dir, tmp_path, capsys):
    args = ["generate", "--adapter", str(generator_dir), "--descriptions", str(tmp_path / "none.yaml"), "--output", "x"]
    assert main([*args, "-v"]) == 1  # parsed, ran, failed with a one-line error (no "unrecognized arguments")
    assert "lang2net generate: error:" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        main([*args, "--debug"])  # --debug after the subcommand shows the exception


def test_single_string_descriptions_in_a_file(generator_dir, tmp_path, capsys):
    path = tmp_path / "classes.yaml"
    path.write_text("coat: a long warm coat\nbag: [a handbag, a tote with two handles]\n")
    assert main(["generate", "--adapter", str(generator_dir), "--descriptions", str(path), "--output",
                 str(tmp_path / "t")]) == 0  # fmt: skip
    task = lang2net.TaskAdaptation.from_pretrained(str(tmp_path / "t"))
    assert task.descriptions == {"coat": ["a long warm coat"], "bag": ["a handbag", "a tote with two handles"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty; write one line per class"),
        ("a: '   '\nb: a pear\n", "class 'a': description 0 is blank"),
        ("Cat: a cat\n'cat ': another cat\n", "'Cat' and 'cat ' are the same class"),
        ("apple: a red apple\n", "one class ('apple') makes a classifier that gives every image probability 1.0"),
    ],
)
def test_bad_descriptions_are_one_line(generator_dir, tmp_path, capsys, text, message):
    path = tmp_path / "classes.yaml"
    path.write_text(text)
    assert main(["generate", "--adapter", str(generator_dir), "--descriptions", str(path), "--output",
                 str(tmp_path / "t")]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "t").exists()


@pytest.fixture(scope="module")
def task_dir(generator_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("task") / "task"
    adapter = lang2net.LanguageConditionedAdapter.from_pretrained(str(generator_dir))
    adapter.generate({"sandal": "an open shoe", "bag": "a handbag", "cat": "a cat"}).save_pretrained(folder)
    return folder


def test_predict_streams_in_batches_and_checks_flags_first(task_dir, tmp_path, capsys, monkeypatch):
    paths = []
    for i in range(5):
        array = np.random.default_rng(i).integers(0, 255, (30 + i, 20 + 3 * i, 3), dtype=np.uint8)
        Image.fromarray(array).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    rows = {}
    for batch in (2, 5):
        torch.manual_seed(5)
        assert (
            main(["predict", "--task", str(task_dir), *paths, "--json", "--top-k", "3", "--batch-size", str(batch)])
            == 0
        )
        rows[batch] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image"] for r in rows[2]] == paths and rows[2] == rows[5]  # batching changes nothing
    from lang2net.apps import predict

    batches = list(predict.read_batches(paths, {"mean": [0.5] * 3, "std": [0.5] * 3}, 16, 2, False))
    assert [len(names) for names, _ in batches] == [2, 2, 1] and batches[0][1].shape == (2, 3, 16, 16)
    for flag, value in (("--top-k", "0"), ("--batch-size", "-1"), ("--img-size", "0")):
        assert main(["predict", "--task", "no-such-task", paths[0], flag, value]) == 1
        err = capsys.readouterr().err
        assert f"{flag} must be a positive int" in err, err  # checked before the task is even looked up
    # a huge image: one line from its header, no PIL DecompressionBombWarning, nothing decoded
    monkeypatch.setattr("lang2net.data.images.MAX_PIXELS", 500)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["predict", "--task", str(task_dir), paths[4]]) == 1
    err = capsys.readouterr().err
    assert "is 32x34 = 1,088 pixels, over the limit of 500" in err and err.count("\n") == 1


def test_errors_name_the_cli_flags(generator_dir, tmp_path, capsys):
    path = tmp_path / "classes.yaml"
    path.write_text("sandal: an open shoe\nbag: a handbag\n")
    args = ["explain", "--adapter", str(generator_dir), "--descriptions", str(path), "--class", "zebra"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "--class 'zebra' is not among the described classes" in err and "target_class" not in err


EMOJI = "adapters/emoji-effnet-lite0"


def _emoji_or_skip():
    from _emoji_fixtures import _real_data_or_skip

    _real_data_or_skip()


def test_demo_on_the_emoji_generator(tmp_path, capsys, monkeypatch):
    """The default demo: the fold's 215 unseen classes, every baseline on the same icons, the recorded fold numbers."""
    from pathlib import Path

    _emoji_or_skip()
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    assert main(["demo", "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): float(line.split("|")[2]) for line in out.splitlines() if line.startswith("| ")
            and line.split("|")[2].strip().replace(".", "").isdigit()}  # fmt: skip
    assert {"chance", "conse", "eszsl", "devise", "generated"} <= set(rows), out
    assert rows["chance"] == 0.5 and rows["generated"] > 10 * rows["chance"], rows  # 215-way: chance 0.47%
    recorded = json.loads((Path(EMOJI) / "metrics.json").read_text())[0]["metric_value"]
    assert "recorded when this generator was published (fold 0" in out and f"{100 * recorded:.1f}" in out
    assert rows["generated"] == pytest.approx(100 * recorded, abs=0.051)  # today's run reproduces the recorded fold
    assert (tmp_path / "out" / "examples.png").stat().st_size > 10_000


def test_demo_describe_matches_emoji_names_ignoring_case(tmp_path, capsys, monkeypatch):
    from pathlib import Path

    _emoji_or_skip()
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    args = ["demo", "--describe", "Dog Face: a dog, pet", "--describe", "PIZZA: a slice of pizza with cheese",
            "--describe", "spaceship: a ship flying to the stars", "--output", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "matched to emoji classes: {'Dog Face': 'dog face', 'PIZZA': 'pizza'}" in out
    assert "top-1 accuracy on the 4 images of those classes:" in out  # two styles each; spaceship has no icon
    assert (tmp_path / "predictions.png").is_file()


def test_recipe_commands_take_set_overrides(tmp_path, capsys):
    import json

    from test_training import _recipe

    recipe = str(_recipe(tmp_path))
    out = tmp_path / "run"
    assert main(["train", "--config", recipe, "--output", str(out), "--set", "train.kway=3"]) == 1
    err = capsys.readouterr().err
    assert "train has no key 'kway'" in err and "'batch_size'" in err and len(err.strip().splitlines()) == 1
    args = ["train", "--config", recipe, "--output", str(out), "--head-only"]
    assert main([*args, "--set", "train.steps=2", "--set", "train.k_way=3", "--set", "train.feature_views=2"]) == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == [1, 2]
