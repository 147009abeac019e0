"""The ``lang2net`` command: benchmark, meta-train, evaluate and reproduce published generators."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from .cli_recipes import _add_eval, _add_reproduce, _add_train

__all__ = ["main"]

EPILOG = """examples:
  lang2net demo
  lang2net generate --adapter adapters/fashion-mnist-effnet-lite0 --descriptions classes.yaml --output my-task
  lang2net predict --task my-task shoe.jpg bag.png
  lang2net bench --model vit_tiny_patch16_224 --batch-size 8
  lang2net train --config hub_configs/fashion-mnist-effnet-lite0.yaml --fold 0 --output runs/fm/fold0/full
  lang2net eval --config hub_configs/fashion-mnist-effnet-lite0.yaml --runs runs/fashion-mnist-effnet-lite0
  lang2net reproduce --config hub_configs/fashion-mnist-effnet-lite0.yaml
"""


# subcommands


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="a published generator writes classifiers for unseen classes from words; accuracy vs baselines + PNG",
        epilog='example: lang2net demo --describe "dog face: a dog, pet" --describe "pizza: a slice of pizza"',
    )
    p.add_argument(
        "--adapter", default="adapters/emoji-effnet-lite0", help="published generator folder (default: the emoji one)"
    )
    p.add_argument("--describe", action="append", metavar="'NAME: TEXT'", help="your own class (repeatable)")
    p.add_argument("--output", default="demo-output", help="folder for predictions.png (default demo-output)")
    p.add_argument(
        "--limit-per-class", type=int, default=100, help="Fashion-MNIST: test images per class (default 100)"
    )
    p.add_argument("--fold", type=int, default=0, help="which held-out class pair to show (default 0)")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from .demo import format_result, parse_describe, run_demo

    describe = parse_describe(args.describe) if args.describe else None
    result = run_demo(
        args.adapter, describe=describe, output=args.output, limit_per_class=args.limit_per_class, fold=args.fold
    )
    if result.source == "photos":
        print("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); showing scikit-image photos.")
    print(format_result(result))
    return 0


def _read_descriptions(path: str) -> dict[str, list[str]]:
    from ..data import load_descriptions

    return load_descriptions(path)


def _add_generate(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="descriptions file -> task folder (or peft / timm export)",
        epilog="example: lang2net generate --adapter adapters/fashion-mnist-effnet-lite0 "
        "--descriptions my_classes.yaml --output my-task --format timm",
    )
    p.add_argument("--adapter", required=True, help="generator folder or Hub id")
    p.add_argument("--descriptions", required=True, help="YAML/JSON: class -> description or list of paraphrases")
    p.add_argument("--output", required=True, help="folder to write")
    p.add_argument("--format", choices=("task", "peft", "timm"), default="task", help="what to write (default task)")
    p.set_defaults(func=_run_generate)


def _run_generate(args) -> int:
    from ..adapter import LanguageConditionedAdapter

    adapter = LanguageConditionedAdapter.from_pretrained(args.adapter)
    task = adapter.generate(_read_descriptions(args.descriptions))
    if args.format == "task":
        task.save_pretrained(args.output)
    elif args.format == "peft":
        task.to_peft(args.output)
    else:
        task.to_timm(args.output, adapter.create_backbone())
    print(f"wrote {args.format} folder {args.output} ({task.num_classes} classes)")
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export",
        help="task folder -> peft LoRA folder or plain timm folder",
        epilog="example: lang2net export --task my-task --format peft --output my-task-peft",
    )
    p.add_argument("--task", required=True, help="task folder (from `lang2net generate`) or Hub id")
    p.add_argument("--format", choices=("peft", "timm"), required=True, help="peft LoRA folder or plain timm folder")
    p.add_argument("--output", required=True, help="folder to write (replaced atomically)")
    p.add_argument("--backbone-weights", help="backbone weight source for timm export (default: the task's own)")
    p.set_defaults(func=_run_export)


def _task_backbone(task, weights: str | None):
    from ..backbones import create_backbone

    source = weights or task.backbone_weights or "timm"
    return create_backbone(task.backbone, source), source


def _run_export(args) -> int:
    from ..task import TaskAdaptation

    task = TaskAdaptation.from_pretrained(args.task)
    if args.backbone_weights:  # the export records the weights it was actually made with
        task = dataclasses.replace(task, backbone_weights=args.backbone_weights)
    if args.format == "peft":
        task.to_peft(args.output)
    else:
        backbone, _ = _task_backbone(task, args.backbone_weights)
        task.to_timm(args.output, backbone)
    print(f"wrote {args.format} folder {args.output}")
    return 0


def _add_predict(sub) -> None:
    from . import predict

    p = sub.add_parser(
        "predict",
        help="images + task folder -> labels and probabilities (streamed in batches)",
        epilog="example: lang2net predict --task my-task photos/*.jpg --top-k 3 --json",
    )
    predict.add_arguments(p)
    p.set_defaults(func=_run_predict)


def _run_predict(args) -> int:
    from . import predict

    return predict.run(args, _task_backbone)


def _add_explain(sub) -> None:
    p = sub.add_parser(
        "explain",
        help="which words of a description drove the generated classifier (saliency + occlusion)",
        epilog="example: lang2net explain --adapter adapters/fashion-mnist-effnet-lite0 --descriptions classes.yaml "
        "--class sandal --html sandal.html",
    )
    p.add_argument("--adapter", required=True, help="generator folder or Hub id")
    p.add_argument("--descriptions", required=True, help="YAML/JSON: class -> description(s)")
    p.add_argument("--class", dest="target", required=True, help="the class to explain")
    p.add_argument("--index", type=int, default=0, help="which of the class's descriptions (default 0)")
    p.add_argument(
        "--method", choices=("gradient", "occlusion", "both"), default="both", help="attribution method (default both)"
    )
    p.add_argument("--steps", type=int, default=16, help="integrated-gradient steps (1: plain gradient x input)")
    p.add_argument("--images", nargs="*", help="images of the class: explain its logit on them (else the head)")
    p.add_argument("--img-size", type=int, help="input side for --images (default: the generator's training size)")
    p.add_argument("--html", help="write an HTML figure here")
    p.add_argument("--png", help="write a PNG figure here")
    p.add_argument("--no-color", action="store_true", help="plain text instead of ANSI highlighting")
    p.set_defaults(func=_run_explain)


def _run_explain(args) -> int:
    from ..adapter import LanguageConditionedAdapter
    from ..backbones import data_config
    from ..explain import explain
    from . import explain_render

    adapter = LanguageConditionedAdapter.from_pretrained(args.adapter)
    images = backbone = None
    if args.images:
        from ..data import prepare_images

        backbone = adapter.create_backbone()
        images = prepare_images(args.images, data_config(backbone, adapter.config.preprocessing), args.img_size)
    result = explain(
        adapter,
        _read_descriptions(args.descriptions),
        args.target,
        images=images,
        backbone=backbone,
        description_index=args.index,
        method=args.method,
        steps=args.steps,
    )
    result.image_names = [Path(p).name for p in args.images or []]
    print(explain_render.to_terminal(result, color=not args.no_color and sys.stdout.isatty()))
    if args.html:
        print(f"wrote {explain_render.to_html(result, args.html)}")
    if args.png:
        print(f"wrote {explain_render.to_png(result, args.png)}")
    return 0


def _add_push(sub) -> None:
    p = sub.add_parser(
        "push",
        help="upload a generator or task folder to the Hub",
        epilog="example: lang2net push adapters/fashion-mnist-effnet-lite0 --repo-id me/fm-generator",
    )
    p.add_argument("folder", help="a lang2net generator or task folder")
    p.add_argument("--repo-id", required=True, help="Hub repo id, e.g. you/my-generator")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.set_defaults(func=_run_push)


def _run_push(args) -> int:
    from ..adapter import LanguageConditionedAdapter
    from ..task import TaskAdaptation

    config = Path(args.folder) / "config.json"
    data = json.loads(config.read_text(encoding="utf-8")) if config.is_file() else {}
    kind = data.get("kind") if isinstance(data, dict) else None  # from_pretrained below names any problem
    loaded = (LanguageConditionedAdapter if kind == "generator" else TaskAdaptation).from_pretrained(args.folder)
    url = loaded.push_to_hub(args.repo_id, private=args.private)
    print(f"pushed {args.folder} to {args.repo_id}: {url}")
    return 0


def _add_bench(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="injection speed vs the plain backbone (prints a table, writes JSON)",
        epilog="example: lang2net bench --device cuda --model vit_base_patch16_224 --batch-size 128 --dtype bf16 --compile",
    )
    p.fill = lambda parser: __import__(f"{__package__}.bench", fromlist=["bench"]).add_arguments(parser)
    p.set_defaults(func=_run_bench)


def _add_bench_generation(sub) -> None:
    p = sub.add_parser(
        "bench-generation",
        help="time description encoding and descriptions -> TaskAdaptation",
        epilog="example: lang2net bench-generation --backbone vit_base_patch16_224 --classes 100",
    )
    p.fill = lambda parser: _bench_generation().add_arguments(parser)
    p.set_defaults(func=lambda args: _bench_generation().run(args) and 0)


def _bench_generation():
    from . import bench_generation

    return bench_generation


class _LazyParser(argparse.ArgumentParser):
    """A subcommand parser whose arguments come from a heavy module: ``fill`` runs only when that subcommand is
    parsed, so ``lang2net --help`` and the other commands never import it."""

    fill = None

    def parse_known_args(self, args=None, namespace=None):
        if self.fill is not None:
            fill, self.fill = self.fill, None
            fill(self)
        return super().parse_known_args(args, namespace)


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
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    sub = parser.add_subparsers(dest="command", metavar="command", parser_class=_LazyParser)
    for add in (
        _add_demo,
        _add_generate,
        _add_predict,
        _add_export,
        _add_explain,
        _add_push,
        _add_train,
        _add_eval,
        _add_reproduce,
        _add_bench,
        _add_bench_generation,
    ):
        add(sub)
    for command in sub.choices.values():  # the global flags also work after the subcommand
        command.formatter_class = argparse.RawDescriptionHelpFormatter  # examples stay pasteable
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        command.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log progress (INFO)"
        )
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lang2net")
    except PackageNotFoundError:
        return "unknown (not installed)"


# library parameter names in error messages -> the flags a shell user typed
_FLAGS = {
    "target_class": "--class",
    "description_index": "--index",
    "limit_per_class": "--limit-per-class",
    "img_size": "--img-size",
    "batch_size": "--batch-size",
    "top_k": "--top-k",
    "backbone_weights": "--backbone-weights",
}


def _as_flags(message: str) -> str:
    for name, flag in _FLAGS.items():
        message = re.sub(rf"(?<![\w.'-]){name}\b(?![.'])", flag, message)  # quoted names are recipe keys
    return message


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:  # no weight-loading bars from transformers / huggingface_hub on every command
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line a shell user can act on; the traceback only when asked
        if args.debug:
            raise
        print(f"lang2net {args.command}: error: {_as_flags(str(e))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
