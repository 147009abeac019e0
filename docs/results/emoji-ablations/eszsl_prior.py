"""Probe behind the "closed-form prior" lever row of docs/RESULTS.md: would adding ESZSL's text-to-classifier map to
the generated head help? Both are linear heads written from class text (ESZSL's class row is ``V @ text``), so their
weighted sum is still one linear head a generator could emit.

On emoji folds 0-2, protocol A, with the generators of a ``lang2net reproduce`` run of the published recipe (its
feature cache and folds; ``train.refit: true``): the logits of the generated head plus ``a * scale`` times ESZSL's
scores, ``scale`` = the ratio of their standard deviations on the validation images. ``a`` is chosen on the
validation classes with the *selected* generators and ESZSL fitted on the training classes only (neither has seen
those classes); the test then uses the refit generator and ESZSL refit on training + validation, as the benchmark
does. Every grid point's test score is printed too, for information only (choosing on it would tune on the test).

    python docs/results/emoji-ablations/eszsl_prior.py runs/emoji_pub

Output: eszsl_prior.txt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from lang2net.adapter import LanguageConditionedAdapter
from lang2net.data import class_splits, load_dataset
from lang2net.data.emoji import STYLES
from lang2net.workflows.benchmark import FeatureCache
from lang2net.workflows.benchmark_report import DEFAULT_GRIDS
from lang2net.workflows.recipe import load_recipe
from lang2net.workflows.zsl import center_normalize, eszsl_fit, eszsl_scores, select_by_validation

GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


def per_class_top1(scores: torch.Tensor, labels: torch.Tensor) -> float:
    pred = scores.argmax(1)
    return 100 * torch.stack([(pred[labels == c] == c).float().mean() for c in labels.unique()]).mean().item()


def head_logits(folder: Path, texts: dict[str, list[str]], x: torch.Tensor) -> torch.Tensor:
    """The generated linear head on cached pooled features (centring and scale are folded into its weight and bias)."""
    task = LanguageConditionedAdapter.from_pretrained(folder).eval().generate(texts)
    with torch.no_grad():
        return x @ task.head_weight.T.float() + task.head_bias.float()


def fold_result(runs: Path, fold: int, feats, data, encoder) -> str:
    split = class_splits("emoji")[fold]
    names = data[STYLES[0]].class_names
    order = [*split.train_classes, *split.validation, *split.unseen]
    local = torch.full((len(names),), -1)
    local[torch.tensor([names.index(c) for c in order])] = torch.arange(len(order))
    texts = {c: data[STYLES[0]].descriptions[c] for c in order}
    emb = F.normalize(encoder.encode_classes(texts).float(), dim=1)
    t, v = len(split.train_classes), len(split.train_classes) + len(split.validation)

    def gather(lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        keep = {s: (local[data[s].labels] >= lo) & (local[data[s].labels] < hi) for s in STYLES}
        x = torch.cat([feats[s][keep[s]] for s in STYLES])
        return x, torch.cat([local[data[s].labels][keep[s]] for s in STYLES]) - lo

    (xf, yf), (xv, yv), (xt, yt) = gather(0, t), gather(t, v), gather(v, len(order))
    mean = xf.mean(0)
    cf, cv = center_normalize(xf, mean), center_normalize(xv, mean)
    params, _ = select_by_validation(eszsl_fit, eszsl_scores, DEFAULT_GRIDS["eszsl"], cf, yf, cv, yv + t, emb)
    # validation: the selected generator and ESZSL on the training classes only
    val_names = {c: texts[c] for c in order[t:v]}
    g_val = head_logits(runs / f"fold{fold}" / "head_only" / "generator", val_names, xv)
    e_val = eszsl_scores(cv, eszsl_fit(cf, yf, emb, **params), emb[t:v])
    scale = (g_val.std() / e_val.std()).item()
    val = {a: per_class_top1(g_val + a * scale * e_val, yv) for a in GRID}
    best = max(GRID, key=lambda a: (val[a], -a))  # ties go to the smaller prior
    # test: the refit generator and ESZSL refit on training + validation
    test_names = {c: texts[c] for c in order[v:]}
    g_test = head_logits(runs / f"fold{fold}" / "head_only" / "refit" / "generator", test_names, xt)
    model = eszsl_fit(torch.cat([cf, cv]), torch.cat([yf, yv + t]), emb, **params)
    e_test = eszsl_scores(center_normalize(xt, mean), model, emb[v:])
    test = {a: per_class_top1(g_test + a * scale * e_test, yt) for a in GRID}
    grid = "  ".join(f"a={a:g}: val {val[a]:.1f} test {test[a]:.1f}" for a in GRID)
    return (
        f"fold {fold}: chosen a={best:g} -> test {test[best]:.1f} (head alone {test[0.0]:.1f}, "
        f"ESZSL alone {per_class_top1(e_test, yt):.1f})\n  {grid}"
    )


def main(argv: list[str]) -> None:
    runs = Path(argv[0])
    torch.set_num_threads(2)
    recipe = load_recipe("hub_configs/emoji-effnet-lite0.yaml")
    adapter = LanguageConditionedAdapter(recipe.adapter)
    cache = FeatureCache.for_adapter(adapter, cache_dir=str(runs / "features"), batch_size=64)
    size = recipe.data.img_size
    data = {s: load_dataset("emoji", s, img_size=size) for s in STYLES}
    feats = {s: cache.features(d, s, size) for s, d in data.items()}
    for fold in (0, 1, 2):
        print(fold_result(runs, fold, feats, data, adapter.text_encoder), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
