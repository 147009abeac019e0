"""Where the classifier memory's gain lands: the unseen classes of each fold grouped by how close their description
embedding comes to one of the backbone's ImageNet label descriptions (the classifier memory's keys; max cosine), with
the per-class protocol A top-1 of the published recipe (head with both memories), the previous recipe (training-class
memory only) and ESZSL, read from the two reproduce reports:

    python docs/results/emoji-ablations/imagenet_overlap.py

Output: imagenet_overlap.txt. The thresholds are fixed here, not chosen on the result.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch.nn.functional as F

from lang2net import LanguageConditionedAdapter
from lang2net.data import class_splits, load_dataset

ROOT = Path(__file__).resolve().parents[3]
GROUPS = ((-1.0, 0.6, "below 0.6"), (0.6, 1.01, "0.6 or more"))


def mean(values: dict[str, float], names: list[str]) -> float:
    return 100 * sum(values[n] for n in names) / max(len(names), 1)


def main() -> None:
    reports = ROOT / "docs" / "results" / "emoji-effnet-lite0"
    new = json.loads((reports / "results.json").read_text())["folds"]
    old = json.loads((reports / "recipe-224px-memory" / "results.json").read_text())["folds"]
    adapter = LanguageConditionedAdapter.from_pretrained(ROOT / "adapters" / "emoji-effnet-lite0")
    keys = adapter.generator.head.classifier_keys
    descriptions = load_dataset("emoji", "twitter", img_size=64).descriptions
    for fn, fo in zip(new, old, strict=True):
        names = list(class_splits("emoji")[fn["fold"]].unseen)  # the keys of each report's per-class top-1
        per_class = {
            label: report["protocol_a"][method]["per_class_top1"]
            for label, report, method in (("both memories", fn, "head_only"), ("training memory", fo, "head_only"),
                                          ("ESZSL", fn, "eszsl"))
        }  # fmt: skip
        cos = (F.normalize(adapter.encode({c: descriptions[c] for c in names}), dim=-1) @ keys.T).max(1).values
        for lo, hi, words in GROUPS:
            group = [n for n, c in zip(names, cos.tolist(), strict=True) if lo <= c < hi]
            scores = ", ".join(f"{label} {mean(values, group):.1f}" for label, values in per_class.items())
            print(f"fold {fn['fold']}: max cosine to an ImageNet label {words}: {len(group)} classes; "
                  f"top-1 % {scores}")  # fmt: skip


if __name__ == "__main__":
    main()
