"""Compare one method between two reproduce reports, fold by fold, on the same test images.

    python docs/results/emoji-ablations/compare_reports.py BASE/results.json OTHER/results.json [--method head_only]

Prints each fold's protocol A top-1 / top-5 for both reports, the McNemar p-value on the paired per-image hits, and
the means ± population std over the folds both reports hold. Refuses reports whose folds were scored on different
images (a different split, image size or test style).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from lang2net.workflows.metrics import mcnemar


def _folds(path: Path, method: str) -> dict[int, dict]:
    report = json.loads(path.read_text())
    out = {}
    for fold in report["folds"]:
        if method not in fold["protocol_a"]:
            raise SystemExit(f"{path}: fold {fold['fold']} has no protocol A result for {method!r}")
        out[fold["fold"]] = fold
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("other", type=Path)
    parser.add_argument("--method", default="head_only")
    args = parser.parse_args(argv)
    base, other = _folds(args.base, args.method), _folds(args.other, args.method)
    shared = sorted(set(base) & set(other))
    if not shared:
        raise SystemExit(f"no fold in both reports: {sorted(base)} vs {sorted(other)}")
    rows = {"base": [], "other": [], "base5": [], "other5": []}
    print(f"method {args.method}: {args.base} -> {args.other}")
    for k in shared:
        a, b = base[k]["protocol_a"][args.method], other[k]["protocol_a"][args.method]
        if (base[k]["n_test_a"], base[k]["img_size"]) != (other[k]["n_test_a"], other[k]["img_size"]):
            raise SystemExit(f"fold {k}: the reports scored different test images")
        p = mcnemar(a["correct"], b["correct"])
        rows["base"].append(a["top1"])
        rows["other"].append(b["top1"])
        rows["base5"].append(a["top5"])
        rows["other5"].append(b["top5"])
        print(
            f"fold {k}: top-1 {100 * a['top1']:.1f} -> {100 * b['top1']:.1f}, "
            f"top-5 {100 * a['top5']:.1f} -> {100 * b['top5']:.1f}, McNemar p = {p:.2g}"
        )

    def ms(xs: list[float]) -> str:
        return f"{100 * statistics.mean(xs):.1f} ± {100 * statistics.pstdev(xs):.1f}"

    print(
        f"mean over folds {shared}: top-1 {ms(rows['base'])} -> {ms(rows['other'])}, "
        f"top-5 {ms(rows['base5'])} -> {ms(rows['other5'])}"
    )


if __name__ == "__main__":
    main()
