"""Closed-form checks behind two lever rows of docs/RESULTS.md: image size, and extra training drawings per class.

ESZSL and DeViSE (as the benchmark fits them: centred, L2-normalised pooled features of the frozen backbone,
hyperparameters chosen on the fold's validation classes, then refitted on train + validation) on emoji folds 0-2,
protocol A (per-class mean top-1 on both base styles of the unseen classes):

    python docs/results/emoji-ablations/closed_form_checks.py sizes 128 192 224 256 288
    python docs/results/emoji-ablations/closed_form_checks.py styles 128

``sizes`` fits on Twemoji + Noto at each size; ``styles`` adds the extra training styles (OpenMoji, Fluent) to the
fit, one at a time, test images unchanged. Features are cached under runs/features. Output: closed_form_checks.txt.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from lang2net.adapter import LanguageConditionedAdapter
from lang2net.data import class_splits, load_dataset
from lang2net.data.emoji import ALL_STYLES, STYLES
from lang2net.workflows.benchmark import FeatureCache
from lang2net.workflows.benchmark_report import DEFAULT_GRIDS
from lang2net.workflows.recipe import load_recipe
from lang2net.workflows.zsl import (
    center_normalize,
    devise_fit,
    devise_scores,
    eszsl_fit,
    eszsl_scores,
    select_by_validation,
)

FITS = {"eszsl": (eszsl_fit, eszsl_scores), "devise": (devise_fit, devise_scores)}


def fold_scores(feats, data, encoder, fold: int, fit_styles, descriptions=None) -> dict[str, float]:
    """Per-class mean top-1 (%) of each closed-form method on one fold's unseen classes (``descriptions``: class ->
    texts replacing the dataset's)."""
    split = class_splits("emoji")[fold]
    names = data[STYLES[0]].class_names
    order = [*split.train_classes, *split.validation, *split.unseen]
    local = torch.full((len(names),), -1)
    local[torch.tensor([names.index(c) for c in order])] = torch.arange(len(order))
    texts = {c: (descriptions or data[STYLES[0]].descriptions)[c] for c in order}
    emb = F.normalize(encoder.encode_classes(texts).float(), dim=1)
    t, v = len(split.train_classes), len(split.train_classes) + len(split.validation)

    def gather(styles, lo, hi):
        xs, ys = [], []
        for s in styles:
            y = local[data[s].labels]
            keep = (y >= lo) & (y < hi)
            xs.append(feats[s][keep])
            ys.append(y[keep])
        return torch.cat(xs), torch.cat(ys)

    xt, yt = gather(STYLES, v, len(order))
    xf, yf = gather(fit_styles, 0, t)
    xv, yv = gather(fit_styles, t, v)
    mean = xf.mean(0)
    xf, xv = center_normalize(xf, mean), center_normalize(xv, mean)
    out = {}
    for kind, (fit, score) in FITS.items():
        params, _ = select_by_validation(fit, score, DEFAULT_GRIDS[kind], xf, yf, xv, yv, emb)
        model = fit(torch.cat([xf, xv]), torch.cat([yf, yv]), emb, **params)
        pred = score(center_normalize(xt, mean), model, emb[v:]).argmax(1)
        y = yt - v
        out[kind] = 100 * torch.stack([(pred[y == c] == c).float().mean() for c in range(len(order) - v)]).mean().item()
    return out


def main(argv: list[str]) -> None:
    mode, sizes = argv[0], [int(s) for s in argv[1:]]
    torch.set_num_threads(2)
    adapter = LanguageConditionedAdapter(load_recipe("hub_configs/emoji-effnet-lite0.yaml").adapter)
    cache = FeatureCache.for_adapter(adapter, cache_dir="runs/features", batch_size=64)
    styles = ALL_STYLES if mode == "styles" else STYLES
    settings = [STYLES] if mode == "sizes" else [ALL_STYLES[: len(STYLES) + k] for k in range(len(ALL_STYLES) - 1)]
    for size in sizes:
        data = {s: load_dataset("emoji", s, img_size=size) for s in styles}
        feats = {s: cache.features(d, s, size) for s, d in data.items()}
        for fit_styles in settings:
            per_fold = [fold_scores(feats, data, adapter.text_encoder, k, fit_styles) for k in (0, 1, 2)]
            row = "  ".join(
                f"{kind} {' / '.join(f'{f[kind]:.1f}' for f in per_fold)} (mean {sum(f[kind] for f in per_fold) / 3:.1f})"
                for kind in FITS
            )
            print(f"{size} px, fit on {'+'.join(fit_styles)}: {row}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
