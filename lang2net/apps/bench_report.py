"""The benchmark's report: the table of medians and ratios against the baseline, with warnings, and its JSON file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..utils.atomic import write_atomic

__all__ = ["format_table", "write_json"]


def format_table(result: dict[str, Any]) -> str:
    """A Markdown table of one model's result (case, median ms, ratio, notes), its header line and warnings."""
    env, settings, explain = result["environment"], result["settings"], result.get("compile_explain_per_sample", {})
    targets = settings["targets"] if result["preset"] is None else f"{settings['targets']}: {result['preset']}"
    size = "x".join(map(str, settings["input_size"]))
    header = (
        f"device: {env['device_name']} | torch {env['torch']} | timm {env['timm']} | peft {env['peft']} | "
        f"dtype {settings['dtype']} | batch {settings['batch_size']} | input {size} | rank {settings['rank']} | "
        f"{result['num_targets']} targets ({targets})"
    )
    lines = [f"### {result['model']}", "", header, "", "| case | median ms | ratio | notes |", "|---|---:|---:|---|"]
    for name, case in result["cases"].items():
        notes = [case["notes"]]
        if case["baseline"] not in ("plain", name):
            notes.append(f"ratio vs {case['baseline']}")
        if case["max_abs_diff"] is not None:
            notes.append(f"max abs diff {case['max_abs_diff']:.1e}")
        if name.startswith("compile_") and case["first_call_ms"] is not None:
            notes.append(f"first call {case['first_call_ms'] / 1e3:.1f} s")
        if name == "compile_per_sample" and "graph_break_count" in explain:
            notes.append(f"graph breaks {explain['graph_break_count']}")
        if case["error"]:
            notes.append(f"ERROR {case['error'][:120]}")
        cells = [name, *("-" if case[k] is None else f"{case[k]:.2f}" for k in ("median_ms", "ratio"))]
        lines.append("| " + " | ".join([*cells, "; ".join(notes).replace("|", "\\|")]) + " |")
    check = result["correctness"]
    tol, effect = check.get("tolerance"), check.get("delta_effect")
    warns = [f"{name} failed the correctness run: {error[:200]}" for name, error in check["errors"].items()]
    for n in check["disagree"]:
        warns.append(f"{n} disagrees with {check['reference']}: max abs diff {check['max_abs_diff'].get(n)} > {tol}")
    if effect is not None and tol is not None and effect <= tol:
        warns.append(f"the deltas move the output by only {effect:.1e} (<= tolerance {tol}): a weak check")
    return "\n".join(lines + [""] * bool(warns) + [f"WARNING: {w}" for w in warns])


def write_json(data: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``data`` as JSON atomically (a temp file in the same folder, then a rename); returns the path."""
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
