"""Generation speed: encoding new descriptions, and descriptions -> TaskAdaptation, timed as medians (``lang2net bench-generation``)."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from ..adapter import LanguageConditionedAdapter
from ..config import AdapterConfig

__all__ = ["add_arguments", "run"]

# targets for 100 classes (see the README's Performance section)
TARGET_MS = {"encode_100_cpu": 2000.0, "generate_100_cpu": 100.0, "generate_100_cuda": 10.0}
_SHAPES = ["round", "square", "long", "flat", "curved", "pointed", "narrow", "wide", "tall", "short"]
_THINGS = ["shoe", "bag", "coat", "cup", "lamp", "chair", "bottle", "hat", "glove", "box"]


def synthetic_descriptions(n: int, seed: int = 0) -> dict[str, list[str]]:
    """n distinct classes, each with two plausible one-sentence descriptions (typical length of real ones)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i in range(n):
        a, b, c = (int(torch.randint(10, (1,), generator=g)) for _ in range(3))
        name = f"{_SHAPES[a]} {_THINGS[b]} {i}"
        out[name] = [
            f"A {_SHAPES[a]} {_THINGS[b]} with a {_SHAPES[c]} handle and a pattern of {i % 7 + 2} stripes on its side.",
            f"This {_THINGS[b]} looks {_SHAPES[a]} from the front, variant number {i}, usually seen on a plain background.",
        ]
    return out


def _median_ms(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def run(args: argparse.Namespace) -> dict[str, float]:
    """Time encoding and generation for ``args.classes`` classes; print a table; return the medians in ms."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    adapter = (
        LanguageConditionedAdapter(AdapterConfig(backbone=args.backbone, backbone_weights="random")).to(device).eval()
    )
    encoder = adapter.text_encoder
    descriptions = synthetic_descriptions(args.classes)
    texts = [t for group in descriptions.values() for t in group][: args.classes]

    def encode_fresh() -> None:
        encoder.clear_cache()
        encoder.encode(texts)

    results = {"encode_ms": _median_ms(encode_fresh, 3, torch.device("cpu"))}
    embeddings = adapter.encode(descriptions).to(device)
    with torch.no_grad():
        for _ in range(3):  # warm-up
            adapter.generate(descriptions, embeddings=embeddings)
        results["generate_ms"] = _median_ms(
            lambda: adapter.generate(descriptions, embeddings=embeddings), args.repeats, device
        )
        results["generate_cached_text_ms"] = _median_ms(lambda: adapter.generate(descriptions), args.repeats, device)
    target = TARGET_MS["generate_100_cuda" if device.type == "cuda" else "generate_100_cpu"]
    print(
        f"backbone {args.backbone} | {len(adapter.config.target_specs)} targets | device {device} | {args.classes} classes"
    )
    print("| step | median ms | target |\n|---|---:|---:|")
    print(
        f"| encode {len(texts)} new descriptions ({encoder.name}, CPU) | {results['encode_ms']:.1f} | {TARGET_MS['encode_100_cpu']:.0f} |"
    )
    print(f"| generate, descriptions already encoded | {results['generate_ms']:.1f} | {target:.0f} |")
    print(f"| generate from text (embeddings cached) | {results['generate_cached_text_ms']:.1f} | |")
    return results


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--backbone", default="tf_efficientnet_lite0", help="timm backbone the generator targets")
    parser.add_argument("--classes", type=int, default=100, help="number of classes (default 100)")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats (median)")
    parser.add_argument("--device", help="default cuda when available, else cpu")
    return parser
