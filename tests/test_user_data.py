"""A researcher's own data through the public route: an image folder, a descriptions file and a class-split file
anywhere on disk, named by a recipe; train a tiny generator on it and evaluate it on the same split."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from lang2net.workflows.episode_data import load_recipe_data
from lang2net.workflows.evaluation import evaluate_fold, write_report
from lang2net.workflows.recipe import load_recipe
from lang2net.workflows.training import train

COLOURS = {
    "red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (240, 220, 30),
    "purple": (140, 40, 170), "orange": (250, 140, 20), "black": (10, 10, 10), "cyan": (30, 210, 220),
}  # fmt: skip


def _folder(root, split: str, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for name, rgb in COLOURS.items():
        (root / split / f"{name} disc").mkdir(parents=True)
        for i in range(per_class):
            image = np.full((40, 48, 3), 255, np.uint8)  # non-square on purpose: centre-cropped when read
            yy, xx = np.mgrid[:40, :48]
            r = rng.integers(9, 16)
            cy, cx = rng.integers(14, 26), rng.integers(14, 34)
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = np.clip(np.array(rgb) + rng.integers(-20, 20, 3), 0, 255)
            Image.fromarray(image).save(root / split / f"{name} disc" / f"{i}.png")


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    base = tmp_path_factory.mktemp("mydata")
    _folder(base / "images", "train", 6, 0)
    _folder(base / "images", "test", 4, 1)
    descriptions = {f"{n} disc": [f"a {n} disc on white", f"a round {n} dot"] for n in COLOURS}
    (base / "classes.yaml").write_text(yaml.safe_dump(descriptions))
    seen = ["red disc", "green disc", "blue disc", "yellow disc", "purple disc"]
    fold = {
        "fold": 0,
        "seen": seen,
        "validation": ["purple disc"],
        "unseen": ["orange disc", "black disc", "cyan disc"],
    }
    split = {"version": 1, "folds": [fold]}
    (base / "split.json").write_text(json.dumps(split))
    data = {
        "name": "my-discs",
        "adapter": {"backbone": "tf_efficientnet_lite0", "backbone_weights": "packaged:efficientnet_lite0",
                    "d_model": 32, "n_heads": 2, "n_layers": 1},
        "data": {"dataset": "imagefolder", "root": str(base / "images"), "descriptions": str(base / "classes.yaml"),
                 "split_file": str(base / "split.json"), "img_size": 32},
        "train": {"steps": 30, "k_way": 4, "batch_size": 16, "warmup_steps": 3, "checkpoint_every": 10,
                  "log_every": 5, "augment": 0.3},
        "eval": {"batch_size": 64},
    }  # fmt: skip
    path = base / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_recipe(path)


def test_image_folder_is_decoded_once_at_the_recipe_size(recipe):
    train_data = load_recipe_data(recipe, "train", None)
    assert tuple(train_data.images.shape) == (8 * 6, 32, 32, 3)  # not 224 px: the recipe's size
    assert train_data.class_names == sorted(f"{n} disc" for n in COLOURS)


def test_train_and_evaluate_on_a_user_split(recipe, tmp_path):
    result = train(recipe, tmp_path / "full", progress=False)
    lines = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    validation = [x["val_top1"] for x in lines if "val_top1" in x]
    assert len(validation) == 3  # every checkpoint scored the held-out validation class set
    fold = evaluate_fold(recipe, 0, {"full": result.generator_dir})
    assert fold["unseen"] == ["orange disc", "black disc", "cyan disc"]
    full = fold["methods"]["full"]
    assert fold["methods"]["chance"]["zsl"] == pytest.approx(1 / 3)
    # trained on the seen discs: their test images are told apart far above the 1-in-8 chance
    assert full["gzsl_seen"] > 0.5, full
    payload = write_report([fold], tmp_path / "report", "my discs")
    assert payload["summary"]["full"]["zsl"]["mean"] == full["zsl"]
    assert (tmp_path / "report" / "confusion_full_fold0.png").is_file()
