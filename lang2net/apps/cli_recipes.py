"""The recipe commands of ``lang2net``: ``train``, ``eval`` and ``reproduce`` (meta-train, measure, publish).

Each takes ``--set section.key=value`` (repeatable) to override the recipe without editing it; the run folders
record the recipe they ran with, so an ablation is one command: e.g.
``lang2net reproduce --config hub_configs/emoji-effnet-lite0.yaml --set train.k_way=96 --runs runs/k96 --folds 0``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

__all__: list[str] = []

SET_HELP = "override a recipe value, e.g. --set train.k_way=96 (YAML values; repeatable)"


def _recipe(args):
    from ..workflows.recipe import load_recipe, override_recipe

    recipe = load_recipe(args.config)
    return override_recipe(recipe, args.set) if args.set else recipe


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="meta-train a generator on the seen classes of one fold",
        epilog="example: lang2net train --config hub_configs/digits-effnet-lite0.yaml --fold 1 --output runs/d1",
    )
    p.add_argument("--config", required=True, help="recipe YAML (see hub_configs/)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help=SET_HELP)
    p.add_argument("--fold", type=int, default=0, help="class split fold (default 0)")
    p.add_argument("--output", required=True, help="run folder (checkpoints, metrics.jsonl, generator/)")
    p.add_argument("--head-only", action="store_true", help="train the head-only baseline (no backbone deltas)")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--no-resume", action="store_true", help="ignore checkpoints already in --output")
    p.add_argument(
        "--feature-store",
        metavar="DIR",
        help="folder keeping the frozen backbone's features of training images between runs (default OUTPUT/features; "
        "a reproduce runs folder's features/ shares them with its runs)",
    )
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from ..workflows.recipe import override_recipe
    from ..workflows.refit import fit

    recipe = _recipe(args)
    if args.steps is not None:
        recipe = override_recipe(recipe, [f"train.steps={args.steps}"])
    store = Path(args.feature_store) if args.feature_store else Path(args.output) / "features"
    selected, refit = fit(
        recipe, args.output, fold=args.fold, head_only=args.head_only, resume=not args.no_resume, feature_store=store
    )
    if refit is not None:
        print(f"chosen on the validation classes: {selected}; refit on training + validation classes:")
    print(f"generator saved to {refit or selected}")
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="zero-shot / generalised zero-shot evaluation with baselines",
        epilog="example: lang2net eval --config hub_configs/digits-effnet-lite0.yaml --runs runs/digits-effnet-lite0",
    )
    p.add_argument("--config", required=True, help="recipe YAML")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help=SET_HELP)
    p.add_argument("--runs", required=True, help="folder with fold<k>/{full,head_only}/generator from `lang2net train`")
    p.add_argument("--folds", type=int, nargs="*", help="folds to evaluate (default: every fold found in --runs)")
    p.add_argument("--output", help="report folder (default: <runs>/report)")
    p.set_defaults(func=_run_eval)


def _run_eval(args) -> int:

    recipe = _recipe(args)
    payload = evaluate_runs(recipe, Path(args.runs), args.folds, Path(args.output) if args.output else None)
    print(Path(payload["report"]) / "results.md")
    print((Path(payload["report"]) / "results.md").read_text())
    return 0


def evaluate_runs(recipe, runs: Path, folds: Sequence[int] | None, output: Path | None) -> dict:
    """Evaluate every fold's trained generators (full and head-only) plus the baselines; write the report."""
    from ..workflows.episode_data import load_recipe_data
    from ..workflows.evaluation import evaluate_fold, write_report
    from ..workflows.reproduce import generator_folder

    if folds is None:
        folds = sorted(int(p.name[4:]) for p in runs.glob("fold*") if p.name[4:].isdigit())
    if not folds:
        raise FileNotFoundError(f"no fold<k> folders in {runs}; run `lang2net train` first")
    d = recipe.data
    test = load_recipe_data(recipe, d.test_split, d.test_limit_per_class)
    results = []
    for fold in folds:
        generators = {m: generator_folder(recipe, runs, fold, m) for m in ("head_only", "full")}
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
        help="train the recipe's generators on every fold, benchmark them against the baselines, publish",
        epilog="example: lang2net reproduce --config hub_configs/fashion-mnist-effnet-lite0.yaml",
    )
    p.add_argument("--config", required=True, help="recipe YAML")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help=SET_HELP)
    p.add_argument("--runs", help="runs folder (default runs/<recipe name>)")
    p.add_argument("--folds", type=int, nargs="*", help="folds (default: recipe eval.folds, else all)")
    p.add_argument(
        "--publish", help="write the first fold's eval.publish generator (default full) with its results here"
    )
    p.set_defaults(func=_run_reproduce)


def _run_reproduce(args) -> int:
    from ..workflows.episode_data import count_folds
    from ..workflows.reproduce import generator_folder, publish_benchmark, reproduce_benchmark

    recipe = _recipe(args)
    runs = Path(args.runs or Path("runs") / recipe.name)
    folds = args.folds or recipe.eval.folds or list(range(count_folds(recipe)))
    payload = reproduce_benchmark(recipe, runs, folds, progress=sys.stderr.isatty())
    print((Path(payload["report"]) / "results.md").read_text())
    if args.publish:
        generator = generator_folder(recipe, runs, folds[0])
        publish_benchmark(recipe, generator, payload, Path(args.publish), args.config)
        print(f"published to {args.publish}")
    return 0
