"""How much a delta generator's deltas depend on the task it is asked for: for the fold's unseen classes cut into
the same random tasks as protocol C (5- and 20-way, 10 partitions, seed 0) and the one ~215-way task of protocol A,
each target layer's dense delta ``scale * B @ A`` per task, then

- spread: mean over tasks of ||dW_task - mean dW||_F / ||mean dW||_F (0: the same deltas for every task);
- size: ||mean dW||_F / ||W||_F (the delta against the layer's pretrained weight);
- versus all: ||dW_task - dW_all||_F / ||dW_all||_F, the task's deltas against those written for every unseen class;
- for "core" generators, the size of the core's pre-activations (entry-wise tanh saturates above about 3).

Generation only (no images):

    python docs/results/emoji-ablations/delta_spread.py runs/emoji_convhead/fold0/full/refit/generator \
        runs/full224/fold0/full/best 0

Output: delta_spread.txt (the runs' numbers, the command in its first line).
"""

from __future__ import annotations

import sys

import torch

from lang2net import LanguageConditionedAdapter
from lang2net.data import class_splits, load_dataset
from lang2net.workflows.few_way import sample_tasks


def dense(delta) -> torch.Tensor:
    return delta.scale * (delta.B @ delta.A.flatten(1))


def spread(adapter: LanguageConditionedAdapter, descriptions: dict[str, list[str]], names: list[str]) -> None:
    backbone = adapter.create_backbone()
    weights = dict(backbone.named_modules())
    core = getattr(adapter.generator.deltas, "core", None)  # "core" mode: the layer whose output is bounded
    seen: list[torch.Tensor] = []
    hook = core.register_forward_hook(lambda _m, _i, out: seen.append(out.detach())) if core is not None else None
    whole = {n: dense(d) for n, d in adapter.generate({c: descriptions[c] for c in names}).deltas.items()}
    if hook is not None:
        hook.remove()
        z = seen[0].abs().flatten()
        print(f"  core pre-activations |z| for all unseen classes: median {z.median():.2f}, min {z.min():.2f}, "
              f"share above 3 (tanh > 0.995) {(z > 3).float().mean():.2f}")  # fmt: skip
    if not whole:
        print("  no deltas (a head-only generator)")
        return
    for ways in (5, 20):
        per_task: dict[str, list[torch.Tensor]] = {n: [] for n in whole}
        for task in sample_tasks(len(names), ways, rounds=10).tolist():
            for n, d in adapter.generate({names[i]: descriptions[names[i]] for i in task}).deltas.items():
                per_task[n].append(dense(d))
        rows = []
        for n, deltas in per_task.items():
            stack = torch.stack(deltas)
            mean = stack.mean(0)
            w = weights[n].weight.flatten(1)
            rows.append((
                ((stack - mean).flatten(1).norm(dim=1) / mean.norm()).mean().item(),
                (mean.norm() / w.norm()).item(),
                ((stack - whole[n]).flatten(1).norm(dim=1) / whole[n].norm()).mean().item(),
            ))  # fmt: skip
        avg = [sum(r[k] for r in rows) / len(rows) for k in range(3)]
        print(f"  {ways}-way ({len(deltas)} tasks, {len(rows)} layers): spread {avg[0]:.3f}, size {avg[1]:.3f}, "
              f"versus all {avg[2]:.3f}; largest spread {max(r[0] for r in rows):.3f}")  # fmt: skip


def main() -> None:
    *folders, fold = sys.argv[1:]
    names = list(class_splits("emoji")[int(fold)].unseen)
    descriptions = load_dataset("emoji", "twitter", img_size=64).descriptions
    print("python docs/results/emoji-ablations/delta_spread.py " + " ".join(sys.argv[1:]))
    for folder in folders:
        print(f"{folder} (fold {fold}, {len(names)} unseen classes):")
        spread(LanguageConditionedAdapter.from_pretrained(folder), descriptions, names)


if __name__ == "__main__":
    main()
