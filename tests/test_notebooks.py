"""The notebooks run top to bottom in a fresh python3 kernel (cwd notebooks/, as Jupyter starts it), each prints the
value it exists to show, and they are stored executed: the outputs a reader sees on the Hub or GitHub pass the same
checks as a fresh run (``python -m tests.test_notebooks`` re-executes and stores them)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT_S = 120  # per cell; the longest is notebook 03's training + evaluation (~20 s on 1 busy CPU core)


def _execute(name: str, store: bool = False) -> str:
    """Run a notebook and return the text it printed (stdout streams and text results, in cell order); with
    ``store``, write it back with its outputs."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # small-batch CPU work; extra threads only contend on a shared machine
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute(env=env)  # raises CellExecutionError with the cell's traceback on any error
    if store:
        nbformat.write(nb, NOTEBOOKS / name)
    return _printed(nb)


def _printed(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                parts.append(out["text"])
            elif out.get("output_type") == "execute_result":
                parts.append(out["data"].get("text/plain", "") + "\n")
    return "".join(parts)


def _quickstart(text: str) -> None:
    n = int(re.search(r"input: \((\d+), 3, 64, 64\)", text).group(1))
    header = text.index("image  true")
    rows = [line for line in text[header:].splitlines()[1:] if re.match(r"\s*\d+  \S", line)]
    assert n >= 2 and len(rows) == n, text
    assert [int(r.split()[0]) for r in rows] == list(range(n))
    fashion = [r.split() for r in rows if r.split()[1] in ("Trouser", "Sandal", "Sneaker", "Bag")]
    if not fashion:  # only the documented fallback (no Fashion-MNIST on the machine) may skip the accuracy check
        assert {r.split()[1] for r in rows} <= {"cat", "coffee"}, text
        assert "per-class rates skipped" in text, text
    else:  # Fashion-MNIST images of described classes: the published generator gets most of them
        right = [float(r[-1]) for r in fashion if r[1] == r[2]]
        assert len(right) >= 0.75 * len(fashion), text
        assert min(right) > 2 / 6, text  # its right answers are well above the 1-in-6 chance of six classes
        # the rates over 100 test images per class (fold 0's generator, refit on all four). Measured: Trouser 0.98,
        # Sandal 0.61 (32 sandals called "cat"), Sneaker 1.00, Bag 0.99; mean 0.895. The shown rows: 7 of 8 right
        rates = dict(re.findall(r"^(Trouser|Sandal|Sneaker|Bag)\s+100\s+(\d\.\d\d)\s", text, flags=re.M))
        assert sorted(rates) == ["Bag", "Sandal", "Sneaker", "Trouser"], text
        rates = {k: float(v) for k, v in rates.items()}
        assert sum(rates.values()) / 4 >= 0.85 and min(rates.values()) >= 0.5, rates


def _byo_backbone(text: str) -> None:
    assert "Injection into ResNet (preset: " in text
    assert "deltas change the logits: True" in text and "outside apply() the model is untouched: True" in text
    assert "peft logits match bind: True" in text and "timm logits match bind: True" in text
    assert "['sandal', 'sneaker', 'bag']" in text


def _train(text: str) -> None:
    assert "trained 30 steps" in text
    zsl = dict(re.findall(r"^(\w+)\s+ZSL (\d\.\d{3})", text, flags=re.M))
    assert set(zsl) == {"chance", "text_similarity", "full"}, text
    assert zsl["chance"] == "0.500"  # 2 unseen digits in fold 0
    # a per-class mean over 2 classes of 20 test images each is a multiple of 1/40: the printed value is that mean
    assert all(abs(float(v) * 40 - round(float(v) * 40)) < 0.05 for v in zsl.values()), zsl


def _explain(text: str) -> None:
    assert "Sneaker: 'a sports shoe with laces and a thick rubber sole'" in text
    rho = re.search(r"agreement of gradient and occlusion \(Spearman rank correlation\): ([+-]\d\.\d{3})", text)
    assert rho, text
    assert ("the two methods disagree" in text) == (float(rho.group(1)) < 0.3), text  # warned exactly when below 0.3
    header = re.search(r"^word\s+gradient\s+occlusion\s+bar$", text, flags=re.M)
    assert header, text
    words = ["a", "sports", "shoe", "with", "laces", "and", "a", "thick", "rubber", "sole"]
    table = [line.split() for line in text[header.end() :].splitlines()[1 : 1 + len(words)]]
    assert [row[0] for row in table] == words, text
    if "mean over 4 image(s)" in text:  # Fashion-MNIST sneakers: the sharp objective
        # both methods name the same most important word. Measured with fold 0's refit generator (Sneaker trained):
        # "sports" first by both, Spearman +0.176 (so the report warns); before the refit (Sneaker never trained on):
        # +0.455
        assert max(table, key=lambda row: float(row[1]))[0] == max(table, key=lambda row: float(row[2]))[0], text
    else:  # only the documented fallback (no Fashion-MNIST on the machine) may use the no-image objective
        assert "objective (separation of the target's head row" in text, text


CASES: list[tuple[str, Callable[[str], None]]] = [
    ("01_quickstart.ipynb", _quickstart),
    ("02_bring_your_own_backbone.ipynb", _byo_backbone),
    ("03_train_a_small_generator.ipynb", _train),
    ("04_explain.ipynb", _explain),
]


def test_every_notebook_is_tested():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(name for name, _ in CASES)


@pytest.mark.parametrize(("name", "check"), CASES, ids=[name for name, _ in CASES])
def test_notebook_is_stored_executed(name, check):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4 and nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), "store the notebook executed, with outputs"
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "run it top to bottom once"
    check(_printed(nb))  # what a reader sees passes the same checks as a fresh run


@pytest.mark.parametrize(("name", "check"), CASES, ids=[name for name, _ in CASES])
def test_notebook_runs_and_prints_its_result(name, check):
    check(_execute(name))


if __name__ == "__main__":  # re-execute every notebook and store it with its outputs
    for notebook, check_printed in CASES:
        check_printed(_execute(notebook, store=True))
        print("stored", notebook)
