"""Protocol C: few-way zero-shot tasks among a fold's unseen classes (what a user who describes a handful of classes
gets), next to protocol A's one task over all of them (about 215-way on emoji).

Why it exists: a generator reads the whole set of class descriptions. Asked for 215 classes at once it writes nearly
the same deltas for any such set, so protocol A leaves little room for adaptation written from a task's own words;
a 5-way task is where deltas can differ from task to task.

Design. ``rounds`` rounds; each is a random permutation of the unseen classes cut into tasks of ``ways`` classes, the
last task of a round filled up with classes drawn from the rest of that round, so every class is tested in every
round. A method writes (or fits) one classifier per task; within a task each class's top-1 is the share of its images
whose argmax over the task's classes is right. A class's score is the mean over its appearances, a method's score the
mean over classes (the unit of protocol A), with a bootstrap CI over classes. Methods are compared on the same tasks:
the per-class difference, its bootstrap CI over classes and a two-sided sign-flip permutation p-value.

Closed-form baselines score each class on its own (a class's column does not depend on the other classes), so their
task logits are columns of their protocol A scores; generators are run once per task (the set encoder and the deltas
depend on the task).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..utils.checks import check_int
from .metrics import bootstrap_ci

__all__ = [
    "TaskScorer",
    "aggregate_protocol_c",
    "markdown_protocol_c",
    "paired_difference",
    "per_class_accuracy",
    "protocol_c_entry",
    "sample_tasks",
    "similar_tasks",
]

TaskScorer = Callable[[Tensor, Tensor], Tensor]  # (task classes (w,), test rows (n,)) -> logits (n, w)
SIMILAR = "-similar"  # the suffix of protocol C's keys for tasks of similar classes (``similar_tasks``)
PAIRS = (("full", "head_only"), ("full", "static"), ("static", "head_only"))  # compared when both were measured


def _task_draw(n_classes: int, ways: int, rounds: int, seed: int) -> torch.Generator:
    """Check a task request; the seeded generator its tasks are drawn with."""
    check_int("ways", ways, minimum=2)
    check_int("rounds", rounds)
    if ways > n_classes:
        raise ValueError(f"ways={ways} exceeds the {n_classes} classes to draw tasks from; valid: 2..{n_classes}")
    return torch.Generator().manual_seed(seed)


def sample_tasks(n_classes: int, ways: int, rounds: int, seed: int = 0) -> Tensor:
    """(t, ways) class indices: ``rounds`` random partitions of ``range(n_classes)`` into ``ways``-class tasks.

    A round's last task, when ``ways`` does not divide ``n_classes``, takes its missing classes at random from the
    round's other classes (never twice in one task), so every class appears in every round. Deterministic in ``seed``.
    """
    g, tasks = _task_draw(n_classes, ways, rounds, seed), []
    for _ in range(rounds):
        order = torch.randperm(n_classes, generator=g)
        full, rest = divmod(n_classes, ways)
        tasks += list(order[: full * ways].view(full, ways))
        if rest:
            tail = order[full * ways :]
            others = order[: full * ways][torch.randperm(full * ways, generator=g)[: ways - rest]]
            tasks.append(torch.cat([tail, others]))
    return torch.stack(tasks)


def similar_tasks(similarity: Tensor, ways: int, rounds: int, seed: int = 0) -> Tensor:
    """(t, ways) class indices: ``rounds`` partitions into tasks of classes that are hard to tell apart by their words.

    Each round walks the classes in random order; a class not yet in a task of that round opens one with its
    ``ways - 1`` most similar classes not yet taken (by ``similarity``, (n, n), e.g. cosine of description
    embeddings). A round's short last task is filled up with the most similar of the round's other classes, so every
    class appears in every round. Deterministic in ``seed``.
    """
    n = similarity.shape[0]
    if similarity.ndim != 2 or similarity.shape[1] != n:
        raise ValueError(f"similarity must be square (n, n), got {tuple(similarity.shape)}")
    g, tasks = _task_draw(n, ways, rounds, seed), []
    for _ in range(rounds):
        free = torch.ones(n, dtype=torch.bool)
        for c in torch.randperm(n, generator=g).tolist():
            if not free[c]:
                continue
            free[c] = False
            row = similarity[c].masked_fill(~free, -math.inf)
            take = row.topk(min(ways - 1, int(free.sum()))).indices
            free[take] = False
            task = torch.cat([torch.tensor([c]), take])
            if len(task) < ways:  # the round's last classes: fill up with the nearest of the rest
                fill = similarity[c].clone()
                fill[task] = -math.inf
                task = torch.cat([task, fill.topk(ways - len(task)).indices])
            tasks.append(task)
    return torch.stack(tasks)


def per_class_accuracy(score: TaskScorer, tasks: Tensor, labels: Tensor, n_classes: int) -> Tensor:
    """(n_classes,) float64: each class's top-1 within its tasks, averaged over its appearances.

    Args:
        score: task classes (w,) and the test rows of their images (n,) -> logits (n, w), columns in task order.
        tasks: (t, w) class indices from :func:`sample_tasks`.
        labels: (N,) class index of every test image, in ``[0, n_classes)``.
    """
    if labels.numel() and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got [{int(labels.min())}, {int(labels.max())}]")
    total = torch.zeros(n_classes, dtype=torch.float64)
    count = torch.zeros(n_classes, dtype=torch.float64)
    for task in tasks:
        local = torch.full((n_classes,), -1, dtype=torch.long)
        local[task] = torch.arange(len(task))
        rows = torch.nonzero(local[labels] >= 0).flatten()
        if not len(rows):
            continue
        logits = score(task, rows)
        if logits.shape != (len(rows), len(task)):
            raise ValueError(
                f"a task scorer returned {tuple(logits.shape)} for {len(rows)} images of {len(task)} classes"
            )
        truth = local[labels[rows]]
        hit = (logits.argmax(1).cpu() == truth).double()
        per = torch.zeros(len(task), dtype=torch.float64).index_add_(0, truth, hit)
        per /= torch.bincount(truth, minlength=len(task)).clamp(min=1)
        present = torch.bincount(truth, minlength=len(task)) > 0
        total.index_add_(0, task[present], per[present])
        count.index_add_(0, task[present], torch.ones(int(present.sum()), dtype=torch.float64))
    if (count == 0).any():
        missing = torch.nonzero(count == 0).flatten().tolist()
        raise ValueError(f"classes {missing[:10]} have no test image in any task; protocol C needs images of each")
    return total / count


def paired_difference(a: Sequence[float], b: Sequence[float], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Mean per-class difference ``a - b``, its bootstrap CI over classes and a two-sided sign-flip p-value."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or not x.size:
        raise ValueError(f"a and b must be equal-length 1-D per-class values, got shapes {x.shape} and {y.shape}")
    diff = x - y
    observed = float(diff.mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice((-1.0, 1.0), size=(max(n_boot, 1000) * 10, diff.size))
    flipped = np.abs((signs * diff).mean(1))
    p = float((1 + np.sum(flipped >= abs(observed) - 1e-12)) / (1 + len(flipped)))
    return {"diff": observed, "ci": list(bootstrap_ci(diff, n_boot=n_boot, seed=seed)), "p": p}


def protocol_c_entry(
    per_class: Mapping[str, Tensor], classes: Sequence[str], ways: int, n_tasks: int, n_boot: int
) -> dict[str, Any]:
    """One ``ways`` of protocol C: every method's top-1 (CI over classes; ``per_class_top1`` keyed by the names in
    ``classes``) and the paired comparisons of :data:`PAIRS`."""
    methods = {
        name: {
            "top1": float(v.mean()),
            "top1_ci": list(bootstrap_ci(v, n_boot=n_boot)),
            "per_class_top1": dict(zip(classes, v.tolist(), strict=True)),
        }
        for name, v in per_class.items()
    }
    paired = {
        f"{a}_vs_{b}": paired_difference(per_class[a].tolist(), per_class[b].tolist(), n_boot)
        for a, b in PAIRS
        if a in per_class and b in per_class
    }
    return {"ways": ways, "n_tasks": n_tasks, "chance": 1.0 / ways, "methods": methods, "paired": paired}


# across folds


def _stats(values: Sequence[float]) -> dict[str, float]:
    mean = sum(values) / len(values)
    return {"mean": mean, "std": math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)), "n": len(values)}


def aggregate_protocol_c(folds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """ways -> {"methods": {method: {"top1": stats}}, "paired": {pair: [per-fold entries]}}; {} without protocol C."""
    out: dict[str, Any] = {}
    for fold in folds:
        for ways, entry in fold.get("protocol_c", {}).items():
            slot = out.setdefault(ways, {"methods": {}, "paired": {}, "n_tasks": [], "chance": entry["chance"]})
            slot["n_tasks"].append(entry["n_tasks"])
            for method, m in entry["methods"].items():
                slot["methods"].setdefault(method, []).append(m["top1"])
            for pair, p in entry["paired"].items():
                slot["paired"].setdefault(pair, []).append({"fold": fold["fold"], **p})
    for slot in out.values():
        slot["methods"] = {m: {"top1": _stats(v)} for m, v in slot["methods"].items()}
    return out


def markdown_protocol_c(folds: Sequence[Mapping[str, Any]]) -> list[str]:
    """The report's protocol C section (empty when no fold measured it)."""
    summary = aggregate_protocol_c(folds)
    lines: list[str] = []
    for ways, slot in summary.items():
        n_folds = len(slot["n_tasks"])
        similar = str(ways).endswith(SIMILAR)
        kind = "tasks of similar classes" if similar else "tasks"
        how = (
            "each class with its most similar classes by description, greedily"
            if similar
            else "random partitions of the unseen classes"
        )
        lines += [
            f"## Protocol C: {str(ways).removesuffix(SIMILAR)}-way {kind} among the unseen classes",
            "",
            f"{min(slot['n_tasks'])}-{max(slot['n_tasks'])} tasks per fold ({how}; "
            f"every class in every round); a classifier written or fitted per task; per-class top-1 within its tasks, "
            f"mean over classes, mean ± std over {n_folds} fold(s). Chance {100 * slot['chance']:.1f}%.",
            "",
            "| method | top-1 % |",
            "|---|---|",
        ]
        for method, s in slot["methods"].items():
            t = s["top1"]
            label = method if t["n"] == n_folds else f"{method} ({t['n']} of {n_folds} folds)"
            lines.append(f"| {label} | {100 * t['mean']:.1f} ± {100 * t['std']:.1f} |")
        if slot["paired"]:
            lines += ["", "Paired per-class differences (same tasks), points, 95% CI over classes, sign-flip p:", ""]
            for pair, entries in slot["paired"].items():
                cells = "; ".join(
                    f"fold {e['fold']}: {100 * e['diff']:+.1f} [{100 * e['ci'][0]:+.1f}, {100 * e['ci'][1]:+.1f}], "
                    f"p = {e['p']:.2g}"
                    for e in entries
                )
                lines.append(f"- {pair.replace('_vs_', ' - ')}: {cells}")
        lines.append("")
    return lines
