"""Benchmark lang2net's delta strategies against the plain backbone, merged weights and peft LoRA on one device."""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import math
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from ..engine.injection import Injection, inject
from ..engine.lowrank import LowRankDelta
from .bench_models import DTYPES, create_model, environment, resolve_device, resolve_dtype
from .bench_report import format_table, write_json

__all__ = ["ALL_CASES", "add_arguments", "build_parser", "format_table", "main", "run", "run_benchmark", "write_json"]

logger = logging.getLogger(__name__)

# agreement tolerance of the correctness check, relative to the largest output magnitude
TOLERANCE: dict[torch.dtype, float] = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
FORWARD_CASES = ("plain", "shared", "hook", "per_sample", "merged", "peft", "peft_mixed")
COMPILE_CASES = ("compile_plain", "compile_shared", "compile_per_sample")
TRAIN_CASES = ("train", "train_delta")
ALL_CASES = FORWARD_CASES + COMPILE_CASES + TRAIN_CASES
BASELINES = {c: "plain" for c in FORWARD_CASES} | {c: "compile_plain" for c in COMPILE_CASES}
BASELINES |= {c: "train" for c in TRAIN_CASES}
CHECKED_CASES = ("shared", "hook", "per_sample", "merged", "peft")  # must agree with each other before timing
NOTES = {
    "plain": "untouched deepcopy made before injection, no hooks",
    "shared": "inj.apply(d), auto -> weight space (W + s*B@A per call)",
    "hook": "inj.apply(d, strategy='activation'): out + s*(x@A^T)@B^T",
    "per_sample": "one delta per sample, activation space",
    "merged": "inj.merge(d) (merge/unmerge untimed)",
    "peft": "peft LoRA unmerged, same A/B",
    "peft_mixed": "peft adapter_names over 4 adapters, per sample",
    "compile_plain": "torch.compile(plain copy)",
    "compile_shared": "torch.compile(injected model), inj.apply(d)",
    "compile_per_sample": "torch.compile(injected model), per-sample deltas",
    "train": "fwd+bwd, frozen backbone, grad to input (eval mode)",
    "train_delta": "fwd+bwd, grads to input and deltas (activation space)",
}
MIXED_ADAPTERS = 4
DELTA_STD = 0.02
# (model, batch, img size or None for the model's own) run when no --model is given
CPU_DEFAULTS = (("vit_tiny_patch16_224", 8, 224), ("tf_efficientnet_lite0", 16, 128))
CUDA_DEFAULTS = (("vit_base_patch16_224", 128, None),)
DEFAULT_OUT = "bench-results/bench-{model}.json"
Deltas = dict[str, LowRankDelta]


@dataclass
class _Case:
    """One timed call: ``fn`` runs under inference mode unless ``grad``; setup/teardown run untimed around it."""

    name: str
    fn: Callable[[], Any]
    grad: bool = False
    setup: Callable[[], None] | None = None
    teardown: Callable[[], None] | None = None
    times: list[float] = field(default_factory=list)
    first_s: float | None = None
    error: str | None = None


@dataclass
class _Bench:
    """What the cases of one model share: the injected model, its untouched copy, deltas, input and peft model."""

    model: nn.Module
    plain: nn.Module
    inj: Injection
    shared: Deltas
    per_sample: Deltas
    x: Tensor
    peft: nn.Module | None = None
    errors: dict[str, str] = field(default_factory=dict)  # "peft" / "peft_mixed" -> why the peft model is unusable


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:500]


def _num(value: float | None, factor: float = 1.0) -> float | None:
    """``value * factor`` as a JSON-safe float with 4 significant digits (None for missing or non-finite values)."""
    return None if value is None or not math.isfinite(value) else float(f"{value * factor:.4g}")


def _select_cases(cases: Sequence[str] | None, compile: bool) -> list[str]:
    """The cases to run, in table order, with the baseline each ratio needs (``compile`` adds the compiled ones)."""
    wanted = set(FORWARD_CASES + TRAIN_CASES) if cases is None else set(cases)
    unknown = wanted - set(ALL_CASES)
    if unknown:
        raise ValueError(f"unknown cases {sorted(unknown)}; choose from {list(ALL_CASES)}")
    wanted |= set(COMPILE_CASES) if compile else set()
    wanted |= {BASELINES[c] for c in wanted}
    return [c for c in ALL_CASES if c in wanted]


def _map(deltas: Deltas, fn: Callable[[Tensor], Tensor]) -> Deltas:
    """``fn`` applied to every A and B."""
    return {name: LowRankDelta(fn(d.A), fn(d.B), d.scale) for name, d in deltas.items()}


def _build_peft(bench: _Bench, base: nn.Module, mixed: bool) -> None:
    """peft LoRA on ``base`` with the shared deltas as adapter "default" (and a0..a3 for the mixed batch)."""
    from peft import LoraConfig, get_peft_model

    param, rank, names = next(bench.model.parameters()), bench.inj.rank, list(bench.inj.targets)

    def config() -> LoraConfig:
        return LoraConfig(r=rank, lora_alpha=rank, target_modules=names, lora_dropout=0.0, init_lora_weights=False)

    try:
        # autocast_adapter_dtype=False keeps the adapters in the model's dtype, as lang2net's deltas are
        peft_model = get_peft_model(base, config(), autocast_adapter_dtype=False)
        modules = dict(peft_model.base_model.model.named_modules())
        with torch.no_grad():
            for name, delta in bench.shared.items():
                lora_a, lora_b = modules[name].lora_A["default"].weight, modules[name].lora_B["default"].weight
                lora_a.copy_(delta.A.reshape(lora_a.shape))
                lora_b.copy_((delta.B * delta.scale).reshape(lora_b.shape))  # conv: (out, r) -> (out, r, 1, 1)
        bench.peft = peft_model.to(device=param.device, dtype=param.dtype).eval()
    except Exception as e:
        bench.errors["peft"] = bench.errors["peft_mixed"] = _error(e)
        return
    try:
        for i in range(MIXED_ADAPTERS if mixed else 0):
            peft_model.add_adapter(f"a{i}", config())
        peft_model.to(device=param.device, dtype=param.dtype).eval()
    except Exception as e:
        bench.errors["peft_mixed"] = _error(e)


def _prepare(
    name: str, batch_size: int, img_size: int | None, dtype: torch.dtype, device: torch.device, rank: int, targets: Any
) -> tuple[_Bench, nn.Module, tuple[int, int, int]]:
    """Models (copies taken before injection), deltas and input; returns the bench, peft's base copy and input size."""
    model, input_size = create_model(name, img_size)
    plain = copy.deepcopy(model).requires_grad_(False)
    peft_base = copy.deepcopy(model)
    model.to(device=device, dtype=dtype)
    plain.to(device=device, dtype=dtype)
    inj = inject(model, targets, rank=rank, probe_input=input_size)
    shared = inj.init_deltas("random", seed=0, std=DELTA_STD)
    per_sample = inj.init_deltas("random", batch_size=batch_size, seed=1, std=DELTA_STD)
    x = torch.randn(batch_size, *input_size, generator=torch.Generator().manual_seed(0))
    bench = _Bench(model, plain, inj, shared, per_sample, x.to(device=device, dtype=dtype))
    return bench, peft_base, input_size


def _under(inj: Injection, deltas: Deltas, model: Callable, x: Tensor, strategy: str = "auto") -> Tensor:
    """``model(x)`` inside ``inj.apply(deltas, strategy)`` (bound with functools.partial into a case)."""
    with inj.apply(deltas, strategy=strategy):
        return model(x)


def _forward_cases(bench: _Bench, per_sample: Deltas) -> list[_Case]:
    """The eager forward cases; ``per_sample`` are the deltas of the per-sample case."""
    model, inj, x, shared, peft_model = bench.model, bench.inj, bench.x, bench.shared, bench.peft
    cases = [
        _Case("plain", lambda: bench.plain(x)),
        _Case("shared", partial(_under, inj, shared, model, x)),
        _Case("hook", partial(_under, inj, shared, model, x, "activation")),
        _Case("per_sample", partial(_under, inj, per_sample, model, x)),
        _Case("merged", lambda: model(x), setup=lambda: inj.merge(shared), teardown=inj.unmerge),
    ]
    adapters = [f"a{i % MIXED_ADAPTERS}" for i in range(x.shape[0])]
    # a peft model that could not be built (or take the mixed adapters) is reported with peft's error, not timed
    if peft_model is not None or bench.errors:
        mixed = _Case("peft_mixed", lambda: peft_model(x, adapter_names=adapters), error=bench.errors.get("peft_mixed"))
        cases += [_Case("peft", lambda: peft_model(x), error=bench.errors.get("peft")), mixed]
    return cases


def _compile_cases(bench: _Bench) -> list[_Case]:
    """plain / shared / per-sample under torch.compile (the injected model compiled after injection)."""
    compiled_plain, compiled, inj, x = torch.compile(bench.plain), torch.compile(bench.model), bench.inj, bench.x
    return [
        _Case("compile_plain", lambda: compiled_plain(x)),
        _Case("compile_shared", partial(_under, inj, bench.shared, compiled, x)),
        _Case("compile_per_sample", partial(_under, inj, bench.per_sample, compiled, x)),
    ]


def _train_cases(bench: _Bench) -> list[_Case]:
    """A training step (forward + backward to the input) of the frozen plain copy and under trainable deltas."""
    trainable = _map(bench.shared, lambda t: t.detach().clone().requires_grad_())

    def clear_grads() -> None:
        for delta in trainable.values():
            delta.A.grad = delta.B.grad = None

    def step(model: nn.Module, deltas: Deltas | None) -> Tensor | None:
        x = bench.x.detach().requires_grad_(True)
        with bench.inj.apply(deltas) if deltas is not None else contextlib.nullcontext():
            out = model(x)
        out.float().sum().backward()
        return x.grad

    return [
        _Case("train", lambda: step(bench.plain, None), grad=True),
        _Case("train_delta", lambda: step(bench.model, trainable), grad=True, setup=clear_grads),
    ]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _call(case: _Case, device: torch.device) -> tuple[Any, float]:
    """Run one case once: its output and the seconds between synchronised start and end (setup/teardown excluded)."""
    if case.setup is not None:
        case.setup()
    try:
        _sync(device)
        start = time.perf_counter()
        with torch.inference_mode(not case.grad):
            out = case.fn()
        _sync(device)
        return out, time.perf_counter() - start
    finally:
        if case.teardown is not None:
            case.teardown()


def _measure(cases: list[_Case], warmup: int, repeats: int, device: torch.device) -> None:
    """Warm up, then time ``repeats`` rounds; each round runs every live case once, in a rotating order."""
    live = [c for c in cases if c.error is None]

    def attempt(case: _Case, timed: bool) -> None:
        try:
            seconds = _call(case, device)[1]
        except Exception as e:
            case.error = _error(e)
            live.remove(case)
            logger.warning("case %s failed: %s", case.name, case.error)
            return
        case.first_s = seconds if case.first_s is None else case.first_s
        if timed:
            case.times.append(seconds)

    for _ in range(warmup):
        for case in list(live):
            attempt(case, timed=False)
    for r in range(repeats):
        shift = r % max(len(live), 1)
        for case in live[shift:] + live[:shift]:
            attempt(case, timed=True)


def _outputs(cases: list[_Case], names: Sequence[str]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """One untimed run of each named case: its output as float32, or its error."""
    outputs, errors = {}, {}
    for case in (c for c in cases if c.name in names):
        try:
            if case.error is not None:
                raise RuntimeError(case.error)
            outputs[case.name] = _call(case, torch.device("cpu"))[0].float()
        except Exception as e:
            errors[case.name] = case.error or _error(e)
    return outputs, errors


def _check(bench: _Bench, dtype: torch.dtype) -> dict[str, Any]:
    """Before timing: the strategies (per-sample with the shared delta broadcast) and peft (if built) agree."""
    cases = _forward_cases(bench, _map(bench.shared, lambda t: torch.stack([t] * bench.x.shape[0])))
    outputs, errors = _outputs(cases, ("plain", *CHECKED_CASES))  # all of them, timed or not: they are cheap
    reference = next((c for c in ("shared", "hook", "peft") if c in outputs), None)
    report: dict[str, Any] = {"reference": reference, "errors": errors, "max_abs_diff": {}, "disagree": []}
    if reference is None:
        return report
    ref = outputs[reference]
    scale = ref.abs().max().item()
    report |= {"output_scale": _num(scale), "tolerance": _num(TOLERANCE.get(dtype, 5e-2) * max(scale, 1e-3))}
    if "plain" in outputs:
        report["delta_effect"] = _num((outputs["plain"] - ref).abs().max().item())
    for name in (c for c in CHECKED_CASES if c in outputs):
        report["max_abs_diff"][name] = _num((outputs[name] - ref).abs().max().item())
    return report


def _compile_report(bench: _Bench, compiled: list[_Case]) -> tuple[dict[str, float | None], dict[str, Any]]:
    """After timing: compiled vs eager outputs, and the per-sample graph breaks (explain resets dynamo's caches)."""
    eager, _ = _outputs(_forward_cases(bench, bench.per_sample), ("plain", "shared", "per_sample"))
    got, _ = _outputs(compiled, COMPILE_CASES)
    pairs = ((name, out, eager.get(name.removeprefix("compile_"))) for name, out in got.items())
    diffs = {name: _num((out - ref).abs().max().item()) for name, out, ref in pairs if ref is not None}
    try:
        with torch.inference_mode(), bench.inj.apply(bench.per_sample):
            out = torch._dynamo.explain(bench.model)(bench.x)
    except Exception as e:
        return diffs, {"error": _error(e)}
    finally:
        torch._dynamo.reset()
    reasons = [str(getattr(r, "reason", r))[:300] for r in out.break_reasons[:10]]
    return diffs, {"graph_count": out.graph_count, "graph_break_count": out.graph_break_count, "break_reasons": reasons}


def _summarize(cases: list[_Case], diffs: dict[str, float | None]) -> dict[str, dict[str, Any]]:
    """Per case: median and min ms, ratio to its baseline (and to eager plain), first call, diff, error, notes."""
    medians = {c.name: statistics.median(c.times) if c.times and c.error is None else None for c in cases}

    def ratio(case: str, base: str) -> float | None:
        return _num(medians[case] / medians[base]) if medians[case] and medians.get(base) else None

    return {
        c.name: {
            "median_ms": _num(medians[c.name], 1e3),
            "ratio": ratio(c.name, BASELINES[c.name]),
            "baseline": BASELINES[c.name],
            "ratio_vs_plain": ratio(c.name, "plain"),
            "min_ms": _num(min(c.times) if c.times else None, 1e3),
            "first_call_ms": _num(c.first_s, 1e3),
            "times_ms": [_num(t, 1e3) for t in c.times],
            "max_abs_diff": diffs.get(c.name),
            "error": c.error,
            "notes": NOTES[c.name],
        }
        for c in cases
    }


def _run_cases(
    bench: _Bench, peft_base: nn.Module, selected: list[str], warmup: int, repeats: int, dtype: torch.dtype
) -> tuple[list[_Case], dict[str, Any], dict[str, Any] | None]:
    """Build peft, check agreement, time the selected cases; returns them, the check and the compile explain."""
    if {"peft", "peft_mixed"} & set(selected):
        _build_peft(bench, peft_base, mixed="peft_mixed" in selected)
    logger.info("checking that the strategies agree")
    check = _check(bench, dtype)
    compiled = _compile_cases(bench) if set(COMPILE_CASES) & set(selected) else []
    cases = [c for c in _forward_cases(bench, bench.per_sample) + _train_cases(bench) + compiled if c.name in selected]
    cases.sort(key=lambda c: ALL_CASES.index(c.name))
    warmup = max(warmup, 2) if compiled else warmup  # the first call compiles, the second may still specialise
    logger.info("timing %d cases: %d warm-up and %d timed rounds", len(cases), warmup, repeats)
    _measure(cases, warmup, repeats, bench.x.device)
    explain = None
    if compiled:
        diffs, explain = _compile_report(bench, compiled)
        check["max_abs_diff"] |= diffs
    tol, diffs = check.get("tolerance"), check["max_abs_diff"]
    check["disagree"] = [n for n, d in diffs.items() if tol is not None and (d is None or d > tol)]
    return cases, check, explain


def run_benchmark(
    model_name: str,
    *,
    batch_size: int = 8,
    img_size: int | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    rank: int = 8,
    targets: str | Sequence[str] = "auto",
    repeats: int | None = None,
    warmup: int | None = None,
    compile: bool = False,
    cases: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Time every case for one timm model on one device, on the same input, interleaving the cases.

    Args:
        model_name: a timm model name (created with pretrained=False).
        batch_size: images per forward.
        img_size: square input side; None uses the model's pretrained_cfg input size.
        dtype: "bf16", "fp16", "fp32" or a torch dtype; None: bf16 on CUDA, fp32 on CPU.
        device: None picks CUDA when available.
        rank: rank of every delta.
        targets: "auto", a regex or a list of module names (as for :func:`lang2net.inject`).
        repeats: timed rounds (median reported); None: 30 on CUDA, 10 on CPU.
        warmup: untimed rounds first; None: 5 on CUDA, 2 on CPU (compiled cases get at least 2).
        compile: also time the torch.compile cases (``COMPILE_CASES``) and count per-sample graph breaks.
        cases: subset of ``ALL_CASES`` (baselines are added); None runs all forward and train cases.

    Returns:
        A JSON-ready dict: settings, environment, correctness check and one entry per case.
    """
    start, dev = time.perf_counter(), resolve_device(device)
    torch_dtype, selected = resolve_dtype(dtype, dev), _select_cases(cases, compile)
    repeats = repeats if repeats is not None else (30 if dev.type == "cuda" else 10)
    warmup = warmup if warmup is not None else (5 if dev.type == "cuda" else 2)
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"need batch_size >= 1, repeats >= 1, warmup >= 0; got {batch_size}, {repeats}, {warmup}")
    dtype_name = next((k for k, v in DTYPES.items() if v == torch_dtype), str(torch_dtype))
    logger.info("%s: building on %s (%s)", model_name, dev, dtype_name)
    bench, peft_base, input_size = _prepare(model_name, batch_size, img_size, torch_dtype, dev, rank, targets)
    try:
        timed, check, explain = _run_cases(bench, peft_base, selected, warmup, repeats, torch_dtype)
        settings = {"batch_size": batch_size, "input_size": list(input_size), "dtype": dtype_name}
        settings |= {"rank": rank, "targets": targets if isinstance(targets, str) else list(targets)}
        settings |= {"repeats": repeats, "warmup": warmup, "compile": explain is not None}
        result = {"model": model_name, "settings": settings, "environment": environment(dev)}
        result |= {"num_targets": len(bench.inj.targets), "preset": bench.inj.preset, "correctness": check}
        result["cases"] = _summarize(timed, check["max_abs_diff"])
        if explain is not None:
            result["compile_explain_per_sample"] = explain
        result["elapsed_s"] = round(time.perf_counter() - start, 2)
        return result
    finally:
        bench.inj.remove()


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the benchmark's options to ``parser`` (so a CLI can mount it as a subcommand)."""
    cpu = ", ".join(f"{m} (batch {b}, {s or 'cfg'} px)" for m, b, s in CPU_DEFAULTS)
    add = parser.add_argument
    add("--model", nargs="+", help=f"timm model names; default {CUDA_DEFAULTS[0][0]} on CUDA, {cpu} on CPU")
    add("--batch-size", type=int, help="default 128 on CUDA, 8 on CPU (per-model CPU defaults above)")
    add("--img-size", type=int, help="square input side; default: the model's pretrained_cfg input size")
    add("--dtype", choices=sorted(DTYPES), help="default bf16 on CUDA, fp32 on CPU")
    add("--device", help="default cuda when available, else cpu")
    add("--rank", type=int, default=8, help="delta rank (default 8)")
    add("--targets", nargs="+", default=["auto"], help="'auto' (default), a regex, or several module names")
    add("--repeats", type=int, help="timed rounds, median reported (default 30 on CUDA, 10 on CPU)")
    add("--warmup", type=int, help="untimed rounds first (default 5 on CUDA, 2 on CPU)")
    add("--compile", action="store_true", help="also time torch.compile cases and count per-sample graph breaks")
    add("--cases", nargs="+", choices=ALL_CASES, metavar="CASE", help=f"subset of {', '.join(ALL_CASES)} (+ baselines)")
    add("--out", default=DEFAULT_OUT, help=f"JSON path, '{{model}}' is replaced (default {DEFAULT_OUT})")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m lang2net.bench`` argument parser."""
    return add_arguments(argparse.ArgumentParser(prog="lang2net bench", description=__doc__))


def _model_specs(args: argparse.Namespace, device: torch.device) -> list[tuple[str, int, int | None]]:
    """(model, batch, img size) to run: the ones named, else the device's defaults; explicit options win."""
    if args.model:
        batch = args.batch_size or (128 if device.type == "cuda" else 8)
        return [(m, batch, args.img_size) for m in args.model]
    defaults = CUDA_DEFAULTS if device.type == "cuda" else CPU_DEFAULTS
    return [(m, args.batch_size or b, args.img_size or s) for m, b, s in defaults]


def run(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Run the benchmark for parsed ``args``: print a table per model, write its JSON; returns model -> result."""
    device = resolve_device(args.device)
    specs = _model_specs(args, device)
    if len(specs) > 1 and "{model}" not in args.out:
        raise ValueError(f"--out {args.out!r} needs '{{model}}' when several models run")
    common = {k: getattr(args, k) for k in ("dtype", "rank", "repeats", "warmup", "compile", "cases")}
    common["targets"] = args.targets[0] if len(args.targets) == 1 else list(args.targets)
    results = {}
    for model, batch, img_size in specs:
        result = run_benchmark(model, batch_size=batch, img_size=img_size, device=device, **common)
        path = write_json(result, args.out.replace("{model}", re.sub(r"[^A-Za-z0-9._-]+", "_", model)))
        print(format_table(result), end="\n\n", flush=True)
        print(f"wrote {path} ({result['elapsed_s']:.1f} s)\n", flush=True)
        results[model] = result
    return results


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")  # no-op if set up
    try:
        run(args)
    except ValueError as e:
        print(f"lang2net bench: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
