"""Probe behind the "ImageNet classifier rows" lever row of docs/RESULTS.md: would the backbone's own 1000 ImageNet
(label text, classifier row) pairs help learn the text-to-classifier map from the ~580 emoji training classes?

Closed form, emoji folds 0-2, protocol A, on the feature cache of a `lang2net reproduce` run of the published recipe
(224 px): a ridge map from class text embeddings to unit class directions (training-class prototypes in the centred
feature space), with the 1000 ImageNet rows (label descriptions -> normalised classifier weights) added at weight w.
lam and w are chosen on the validation classes (map fitted on the training classes); the test refits on training +
validation classes. w = 0 is the same map without ImageNet.

    python docs/results/emoji-ablations/imagenet_rows.py runs/emoji_pub

Output: imagenet_rows.txt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.data import ImageNetInfo

from lang2net.adapter import LanguageConditionedAdapter
from lang2net.data import class_splits, load_dataset
from lang2net.data.emoji import STYLES
from lang2net.workflows.benchmark import FeatureCache
from lang2net.workflows.recipe import load_recipe
from lang2net.workflows.zsl import center_normalize

LAMS = (0.01, 0.03, 0.1, 0.3, 1.0)
WS = (0.0, 0.1, 0.25, 0.5, 1.0)


def pc_top1(scores, labels):
    pred = scores.argmax(1)
    return 100 * torch.stack([(pred[labels == c] == c).float().mean() for c in labels.unique()]).mean().item()


def protos(x, y, n):
    s = torch.zeros(n, x.shape[1]).index_add_(0, y, x)
    return F.normalize(s, dim=1)


def ridge(E, Y, wts, lam):
    # weighted ridge: min sum_i w_i ||E_i M - Y_i||^2 + lam ||M||^2
    Ew = E * wts[:, None]
    A = E.T @ Ew + lam * torch.eye(E.shape[1])
    return torch.linalg.solve(A, Ew.T @ Y)


def rows(emb, protos_, ein, win, n, w):
    """The fitting pairs: n emoji classes (text, prototype) at weight 1, the ImageNet rows at weight w."""
    return torch.cat([emb[:n], ein]), torch.cat([protos_, win]), torch.cat([torch.ones(n), torch.full((len(ein),), w)])


def predict(pairs, lam, queries, x):
    """Scores of images x against the directions the ridge map writes for the query texts."""
    directions = F.normalize(queries @ ridge(*pairs, lam), dim=1)
    return x @ directions.T


def gather(data, feats, local, lo, hi):
    keep = {s: (local[data[s].labels] >= lo) & (local[data[s].labels] < hi) for s in STYLES}
    x = torch.cat([feats[s][keep[s]] for s in STYLES]).float()
    return x, torch.cat([local[data[s].labels][keep[s]] for s in STYLES]) - lo


def fold_result(fold, data, feats, enc, ein, win):
    split = class_splits("emoji")[fold]
    names = data[STYLES[0]].class_names
    order = [*split.train_classes, *split.validation, *split.unseen]
    local = torch.full((len(names),), -1)
    local[torch.tensor([names.index(c) for c in order])] = torch.arange(len(order))
    texts = {c: data[STYLES[0]].descriptions[c] for c in order}
    emb = F.normalize(enc.encode_classes(texts).float(), dim=1)
    t, v = len(split.train_classes), len(split.train_classes) + len(split.validation)
    (xf, yf), (xv, yv), (xt, yt) = (gather(data, feats, local, a, b) for a, b in ((0, t), (t, v), (v, len(order))))
    mean = xf.mean(0)
    cf, cv, ct = (center_normalize(a, mean) for a in (xf, xv, xt))
    pf = protos(cf, yf, t)
    val = {(lam, w): pc_top1(predict(rows(emb, pf, ein, win, t, w), lam, emb[t:v], cv), yv) for lam in LAMS for w in WS}
    best0 = max(LAMS, key=lambda lam: val[lam, 0.0])
    bestw = max(val, key=lambda k: val[k])
    # test: refit on training + validation classes
    pfv = protos(torch.cat([cf, cv]), torch.cat([yf, yv + t]), v)
    test = {
        k: pc_top1(predict(rows(emb, pfv, ein, win, v, k[1]), k[0], emb[v:], ct), yt) for k in (bestw, (best0, 0.0))
    }
    grid = "  ".join(f"{k[0]}/{k[1]}:{r:.1f}" for k, r in val.items())
    return (
        f"fold {fold}: emoji only (lam {best0}) val {val[best0, 0.0]:.1f} test {test[best0, 0.0]:.1f}; "
        f"+ImageNet chosen (lam {bestw[0]}, w {bestw[1]}) val {val[bestw]:.1f} test {test[bestw]:.1f}\n"
        f"   val grid (lam/w:top-1): {grid}"
    )


def main(runs):
    torch.set_num_threads(2)
    recipe = load_recipe("hub_configs/emoji-effnet-lite0.yaml")
    adapter = LanguageConditionedAdapter(recipe.adapter)
    cache = FeatureCache.for_adapter(adapter, cache_dir=str(Path(runs) / "features"), batch_size=64)
    size = recipe.data.img_size
    data = {s: load_dataset("emoji", s, img_size=size) for s in STYLES}
    feats = {s: cache.features(d, s, size) for s, d in data.items()}
    enc = adapter.text_encoder
    win = F.normalize(adapter.create_backbone().get_classifier().weight.detach().float(), dim=1)
    ein = F.normalize(enc.encode(ImageNetInfo().label_descriptions(detailed=True)).float(), dim=1)
    for fold in (0, 1, 2):
        print(fold_result(fold, data, feats, enc, ein, win), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
