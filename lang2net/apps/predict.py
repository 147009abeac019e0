"""``lang2net predict``: stream image files through a task's classifier, a batch at a time (memory stays flat)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["add_arguments", "predict_files", "read_batches", "run"]


def add_arguments(p: Any) -> None:
    p.add_argument("--task", required=True, help="task folder (from `lang2net generate`) or Hub id")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument("--top-k", type=int, default=1, help="labels shown per image (default 1)")
    p.add_argument("--batch-size", type=int, default=32, help="images decoded and scored at a time (default 32)")
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    p.add_argument(
        "--skip-bad", action="store_true", help="skip unreadable images (named on stderr) instead of failing"
    )
    p.add_argument("--backbone-weights", help="backbone weight source (default: the task's own)")
    p.add_argument("--img-size", type=int, help="input side (default: the size the generator was trained at)")


def read_batches(
    paths: Sequence[str], data_config: dict, size: int, batch_size: int, skip_bad: bool
) -> Iterator[tuple[list[str], Any]]:
    """(paths, prepared float input (n, 3, size, size)) a batch at a time, through ``data.prepare_images``."""
    import torch

    from ..data.images import prepare_images

    kept: list[str] = []
    prepared: list[Any] = []
    for path in paths:
        try:
            prepared.append(prepare_images(path, data_config, size))
            kept.append(path)
        except (FileNotFoundError, ValueError) as e:
            if not skip_bad:
                raise ValueError(f"{e} (use --skip-bad to skip it)") from None
            print(f"skipped {path}: {e}", file=sys.stderr)
        if len(kept) == batch_size:
            yield kept, torch.cat(prepared)
            kept, prepared = [], []
    if kept:
        yield kept, torch.cat(prepared)


def predict_files(
    model: Any,
    paths: Sequence[str],
    *,
    top_k: int = 1,
    batch_size: int = 32,
    img_size: int | None = None,
    skip_bad: bool = False,
    progress: bool = False,
) -> Iterator[dict]:
    """One ``{"image", "labels", "probabilities"}`` per readable file, best first, streamed batch by batch; the
    arguments are checked before anything is read."""
    from ..utils.checks import check_int

    check_int("--top-k", top_k)
    check_int("--batch-size", batch_size)
    check_int("--img-size", img_size, optional=True)
    size = img_size or int(model.data_config["input_size"][-1])
    return _stream(model, paths, top_k, batch_size, size, skip_bad, progress)


def _stream(
    model: Any, paths: Sequence[str], top_k: int, batch_size: int, size: int, skip_bad: bool, progress: bool
) -> Iterator[dict]:
    import torch

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(paths), desc="predict", unit="img", file=sys.stderr)
    seen = 0
    device = next(model.parameters()).device
    for names, images in read_batches(paths, model.data_config, size, batch_size, skip_bad):
        with torch.no_grad():
            probs = model(images.to(device)).float().softmax(-1).cpu()
        top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        for path, values, index in zip(names, top.values.tolist(), top.indices.tolist(), strict=True):
            yield {
                "image": path,
                "labels": [model.class_names[i] for i in index],
                "probabilities": [round(v, 4) for v in values],
            }
        seen += len(names)
        if bar is not None:
            bar.n = seen
            bar.refresh()
    if bar is not None:
        bar.close()
    if seen == 0:
        raise ValueError("no readable images")


def run(args: Any, backbone_for: Any) -> int:
    from ..task import TaskAdaptation
    from ..utils.checks import check_int

    check_int("--top-k", args.top_k)  # before the slow part: loading the task and its backbone
    check_int("--batch-size", args.batch_size)
    check_int("--img-size", args.img_size, optional=True)
    task = TaskAdaptation.from_pretrained(args.task)
    backbone, _ = backbone_for(task, args.backbone_weights)
    model = task.bind(backbone).eval()
    rows = predict_files(
        model,
        args.images,
        top_k=args.top_k,
        batch_size=args.batch_size,
        img_size=args.img_size,
        skip_bad=args.skip_bad,
        progress=sys.stderr.isatty() and not args.json,
    )
    for row in rows:
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            pairs = zip(row["labels"], row["probabilities"], strict=True)
            print(f"{row['image']}\t" + "  ".join(f"{label} {v:.3f}" for label, v in pairs), flush=True)
    return 0
