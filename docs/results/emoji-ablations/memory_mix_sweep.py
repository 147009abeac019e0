"""How much the head memory's mix choice matters: every (gate, beta) of the grid that training chooses from, scored on
the validation classes (what the choice sees) and on the unseen classes (what it is for), per fold, for the generators
of a reproduce run of the published recipe:

    lang2net reproduce --config hub_configs/emoji-effnet-lite0.yaml --folds 0 1 2 --runs runs/emoji-effnet-lite0
    python docs/results/emoji-ablations/memory_mix_sweep.py runs/emoji-effnet-lite0 [FOLD ...]

Protocol A accuracy (per-class mean top-1 %, both base styles) with the run's cached 224 px features. Output:
memory_mix_sweep.txt; the validation cross-entropy of each point is there too. Last per fold: the chosen mix with the validation classes added to the memory. Reading the test column to pick a mix would be tuning on the test classes: this is a
diagnostic of the selection, not a result.
"""

from __future__ import annotations

import sys

import torch

from lang2net.adapter import LanguageConditionedAdapter
from lang2net.data import class_splits, load_dataset
from lang2net.data.emoji import STYLES
from lang2net.workflows.benchmark import FeatureCache
from lang2net.workflows.head_memory import MEMORY_BETAS, MEMORY_GATES


def top1(generator, feats, labels, data, classes, nll: bool = False) -> float:
    """Per-class mean top-1 (%) of the generator's head for ``classes`` on their images of both base styles (with
    ``nll``: the images' mean cross-entropy instead)."""
    names = data[STYLES[0]].class_names
    index = torch.tensor([names.index(c) for c in classes])
    position = torch.full((len(names),), -1)
    position[index] = torch.arange(len(index))
    keep = position[labels] >= 0
    y = position[labels[keep]]
    task = generator.generate({c: data[STYLES[0]].descriptions[c] for c in classes})
    logits = feats[keep] @ task.head_weight.T + task.head_bias
    if nll:
        return torch.nn.functional.cross_entropy(logits, y).item()
    pred = logits.argmax(1)
    return 100 * torch.stack([(pred[y == c] == c).float().mean() for c in range(len(index))]).mean().item()


def main(run: str, folds: tuple[int, ...] = (0, 1, 2), size: int = 224) -> None:
    torch.set_num_threads(2)
    data = {s: load_dataset("emoji", s, img_size=size) for s in STYLES}
    names = data[STYLES[0]].class_names
    labels = torch.cat([d.labels for d in data.values()])
    for fold in folds:
        generator = LanguageConditionedAdapter.from_pretrained(f"{run}/fold{fold}/head_only/generator")
        cache = FeatureCache.for_adapter(generator, cache_dir=f"{run}/features", batch_size=64)
        feats = torch.cat([cache.features(d, s, size) for s, d in data.items()])
        split = class_splits("emoji")[fold]
        head = generator.generator.head
        chosen = (head.memory_gate.item(), head.memory_beta.item())

        rows = []
        for beta in MEMORY_BETAS:
            for gate in MEMORY_GATES:
                if gate or beta == MEMORY_BETAS[0]:
                    head.set_memory_mix(gate, beta)
                    rows.append(
                        (
                            gate,
                            beta,
                            top1(generator, feats, labels, data, split.validation),
                            top1(generator, feats, labels, data, split.unseen),
                            top1(generator, feats, labels, data, split.validation, nll=True),
                        )
                    )
        best = max(rows, key=lambda r: r[3])
        by_nll = min(rows, key=lambda r: r[4])  # the validation cross-entropy instead of top-1 (a diagnostic)
        at = next(r for r in rows if r[:2] == chosen)
        print(
            f"fold {fold}: chosen gate {chosen[0]:g} beta {chosen[1]:g}: validation {at[2]:.1f}, unseen {at[3]:.1f}; "
            f"best unseen {best[3]:.1f} at gate {best[0]:g} beta {best[1]:g}; lowest validation cross-entropy at gate "
            f"{by_nll[0]:g} beta {by_nll[1]:g}: unseen {by_nll[3]:.1f}",
            flush=True,
        )
        for gate, beta, val, test, ce in rows:
            print(
                f"  gate {gate:<4g} beta {beta:<3g} validation {val:5.1f} (cross-entropy {ce:.3f}) unseen {test:5.1f}"
            )
        # the validation classes added to the memory after the choice (as the baselines refit on train + validation)
        head.set_memory_mix(*chosen)
        memory = [*split.train_classes, *split.validation]
        rows_of = torch.full((len(names),), -1)
        rows_of[torch.tensor([names.index(c) for c in memory])] = torch.arange(len(memory))
        keep = rows_of[labels] >= 0
        keys = generator.encode({c: data[STYLES[0]].descriptions[c] for c in memory})
        head.set_memory(keys, feats[keep], rows_of[labels[keep]])
        print(
            f"  validation classes added to the memory: unseen {top1(generator, feats, labels, data, split.unseen):.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1], tuple(int(f) for f in sys.argv[2:]) or (0, 1, 2))
