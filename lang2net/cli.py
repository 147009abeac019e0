"""The ``lang2net`` command: benchmark, meta-train, evaluate and reproduce published generators."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

EPILOG = """examples:
  lang2net bench --model vit_tiny_patch16_224 --batch-size 8
  lang2net train --config hub_configs/fashion-mnist-effnet-lite0.yaml --fold 0 --output runs/fm/fold0/full
  lang2net eval --config hub_configs/fashion-mnist-effnet-lite0.yaml --runs runs/fashion-mnist-effnet-lite0
  lang2net reproduce --config hub_configs/fashion-mnist-effnet-lite0.yaml
"""


# subcommands


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="meta-train a generator on the seen classes of one fold",
        epilog="example: lang2net train --config hub_configs/digits-effnet-lite0.yaml --fold 1 --output runs/d1",
    )
    p.add_argument("--config", required=True, help="recipe YAML (see hub_configs/)")
    p.add_argument("--fold", type=int, default=0, help="class split fold (default 0)")
    p.add_argument("--output", required=True, help="run folder (checkpoints, metrics.jsonl, generator/)")
    p.add_argument("--head-only", action="store_true", help="train the head-only baseline (no backbone deltas)")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--no-resume", action="store_true", help="ignore checkpoints already in --output")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from .recipe import load_recipe
    from .training import train

    recipe = load_recipe(args.config)
    if args.steps is not None:
        recipe.train.steps = args.steps
    result = train(recipe, args.output, fold=args.fold, head_only=args.head_only, resume=not args.no_resume)
    print(f"generator saved to {result.generator_dir}")
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="zero-shot / generalised zero-shot evaluation with baselines",
        epilog="example: lang2net eval --config hub_configs/digits-effnet-lite0.yaml --runs runs/digits-effnet-lite0",
    )
    p.add_argument("--config", required=True, help="recipe YAML")
    p.add_argument("--runs", required=True, help="folder with fold<k>/{full,head_only}/generator from `lang2net train`")
    p.add_argument("--folds", type=int, nargs="*", help="folds to evaluate (default: every fold found in --runs)")
    p.add_argument("--output", help="report folder (default: <runs>/report)")
    p.set_defaults(func=_run_eval)


def _run_eval(args) -> int:
    from .recipe import load_recipe

    recipe = load_recipe(args.config)
    payload = evaluate_runs(recipe, Path(args.runs), args.folds, Path(args.output) if args.output else None)
    print(Path(payload["report"]) / "results.md")
    print((Path(payload["report"]) / "results.md").read_text())
    return 0


def evaluate_runs(recipe, runs: Path, folds: Sequence[int] | None, output: Path | None) -> dict:
    """Evaluate every fold's trained generators (full and head-only) plus the baselines; write the report."""
    from .data import load_dataset
    from .evaluation import evaluate_fold, write_report

    if folds is None:
        folds = sorted(int(p.name[4:]) for p in runs.glob("fold*") if p.name[4:].isdigit())
    if not folds:
        raise FileNotFoundError(f"no fold<k> folders in {runs}; run `lang2net train` first")
    d = recipe.data
    test = load_dataset(
        d.dataset, "test", root=d.root, descriptions=d.descriptions, limit_per_class=d.test_limit_per_class
    )
    results = []
    for fold in folds:
        generators = {m: runs / f"fold{fold}" / m / "generator" for m in ("head_only", "full")}
        missing = [str(p) for p in generators.values() if not (p / "config.json").is_file()]
        if missing:
            raise FileNotFoundError(f"trained generators missing: {missing}")
        results.append(evaluate_fold(recipe, fold, generators, test=test))
    report = output or runs / "report"
    payload = write_report(results, report, f"{recipe.name}: zero-shot on {d.dataset}")
    payload["report"] = str(report)
    return payload


def _add_reproduce(sub) -> None:
    p = sub.add_parser(
        "reproduce",
        help="train full and head-only generators on every fold, evaluate, publish",
        epilog="example: lang2net reproduce --config hub_configs/fashion-mnist-effnet-lite0.yaml",
    )
    p.add_argument("--config", required=True, help="recipe YAML")
    p.add_argument("--runs", help="runs folder (default runs/<recipe name>)")
    p.add_argument("--folds", type=int, nargs="*", help="folds (default: recipe eval.folds, else all)")
    p.add_argument("--publish", help="write the fold-0 full generator with its results here (e.g. adapters/<name>)")
    p.set_defaults(func=_run_reproduce)


def _run_reproduce(args) -> int:
    from .data import class_splits
    from .recipe import load_recipe
    from .training import train

    recipe = load_recipe(args.config)
    runs = Path(args.runs or Path("runs") / recipe.name)
    folds = args.folds or recipe.eval.folds or list(range(len(class_splits(recipe.data.dataset))))
    for fold in folds:
        for method, head_only in (("full", False), ("head_only", True)):
            train(recipe, runs / f"fold{fold}" / method, fold=fold, head_only=head_only)
    payload = evaluate_runs(recipe, runs, folds, None)
    print((Path(payload["report"]) / "results.md").read_text())
    if args.publish:
        publish(recipe, runs / f"fold{folds[0]}" / "full" / "generator", payload, Path(args.publish), args.config)
        print(f"published to {args.publish}")
    return 0


def publish(recipe, generator_dir: Path, payload: dict, destination: Path, recipe_path: str) -> None:
    """Save a trained generator as a Hub-ready folder whose card carries the measured results."""
    from .adapter import LanguageConditionedAdapter
    from .evaluation import card_metrics

    adapter = LanguageConditionedAdapter.from_pretrained(str(generator_dir))
    metrics = card_metrics(payload["summary"], recipe.data.dataset, len(payload["folds"]))
    adapter.save_pretrained(destination, metrics=metrics, recipe=recipe_path, datasets=[recipe.data.dataset])


def _add_bench(sub) -> None:
    from . import bench

    p = sub.add_parser("bench", help="injection speed vs the plain backbone (prints a table, writes JSON)")
    bench.add_arguments(p)
    p.set_defaults(func=_run_bench)


def _add_bench_generation(sub) -> None:
    from . import bench_generation

    p = sub.add_parser("bench-generation", help="time description encoding and descriptions -> TaskAdaptation")
    bench_generation.add_arguments(p)
    p.set_defaults(func=lambda args: bench_generation.run(args) and 0)


def _run_bench(args) -> int:
    from . import bench

    bench.run(args)
    return 0


# entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lang2net",
        description="Natural-language class descriptions -> task-specific networks for timm backbones.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    sub = parser.add_subparsers(dest="command", metavar="command")
    for add in (_add_bench, _add_bench_generation, _add_train, _add_eval, _add_reproduce):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line a shell user can act on; the traceback only when asked
        if args.debug:
            raise
        print(f"lang2net {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
