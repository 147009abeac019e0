"""The descriptions lever of docs/RESULTS.md: which of the generated emoji descriptions carry the signal.

The emoji loader describes each class by up to five templates (``lang2net.data.emoji.emoji_descriptions``): its name
("an emoji of dog face"), name and CLDR keywords ("dog face: pet"), Unicode name and short names ("an icon of dog
face (dog)"), subcategory and category. This script writes, for every emoji class, the subsets below as description
files that ``reproduce`` reads through ``data.descriptions`` (they replace the generated descriptions class by class):

    name           the name only
    name_short     name + Unicode name and short names
    name_keywords  name + keywords
    (all)          the recipe's five templates: no file, the default

    python docs/results/emoji-ablations/description_variants.py write runs/descriptions
    python docs/results/emoji-ablations/description_variants.py closed 224 runs/descriptions

``closed`` fits ESZSL and DeViSE (as closed_form_checks.py does) on each variant over folds 0-2 at the given size.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from lang2net.data import load_dataset
from lang2net.data.descriptions import load_descriptions, save_descriptions
from lang2net.data.emoji import STYLES, emoji_classes, emoji_descriptions

VARIANTS = ("name", "name_short", "name_keywords")


def variant_texts(kind: str) -> dict[str, list[str]]:
    """class name -> the descriptions of variant ``kind``, cut from the generated ones by their templates."""
    out = {}
    for c in emoji_classes():
        texts = emoji_descriptions([c])[c.name]
        title = c.tts or c.emoji_name
        name = texts[0]  # "an emoji of {title}"
        keywords = [t for t in texts if t.startswith(f"{title}: ")]
        short = [t for t in texts if t.startswith("an icon of ")]
        out[c.name] = {"name": [name], "name_short": [name, *short], "name_keywords": [name, *keywords]}[kind]
    return out


def write(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for kind in VARIANTS:
        texts = variant_texts(kind)
        path = save_descriptions(texts, folder / f"{kind}.yaml")
        print(f"{path}: {len(texts)} classes, {sum(map(len, texts.values())) / len(texts):.2f} descriptions each")


def closed(size: int, folder: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from closed_form_checks import FITS, fold_scores

    from lang2net.adapter import LanguageConditionedAdapter
    from lang2net.workflows.benchmark import FeatureCache
    from lang2net.workflows.recipe import load_recipe

    torch.set_num_threads(2)
    adapter = LanguageConditionedAdapter(load_recipe("hub_configs/emoji-effnet-lite0.yaml").adapter)
    cache = FeatureCache.for_adapter(adapter, cache_dir="runs/features", batch_size=64)
    data = {s: load_dataset("emoji", s, img_size=size) for s in STYLES}
    feats = {s: cache.features(d, s, size) for s, d in data.items()}
    for kind in (*VARIANTS, "all"):
        texts = None if kind == "all" else load_descriptions(folder / f"{kind}.yaml")
        per_fold = [fold_scores(feats, data, adapter.text_encoder, k, STYLES, texts) for k in (0, 1, 2)]
        row = "  ".join(
            f"{m} {' / '.join(f'{f[m]:.1f}' for f in per_fold)} (mean {sum(f[m] for f in per_fold) / 3:.1f})"
            for m in FITS
        )
        print(f"{size} px, descriptions {kind}: {row}", flush=True)


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    if mode == "write":
        write(Path(rest[0]))
    elif mode == "closed":
        closed(int(rest[0]), Path(rest[1]))
    else:
        raise SystemExit(f"unknown mode {mode!r}; valid: write, closed")
