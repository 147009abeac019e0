"""Rendering of keyword explanations: ANSI terminal highlighting, a self-contained HTML page and a PNG bar chart."""

from __future__ import annotations

import html
import os
from pathlib import Path

from ..explain import AGREEMENT_WARNING, Explanation
from ..explain import SHOWN_ORDER as _SHOWN_ORDER
from ..utils.atomic import write_atomic

__all__ = ["to_html", "to_png", "to_terminal"]


def _relative(self: Explanation, method: str) -> list[float]:
    """Scores divided by the largest magnitude: -1..1."""
    scores = self.scores[method]
    peak = max((abs(s) for s in scores), default=0.0)
    return [s / peak if peak > 0 else 0.0 for s in scores]


def _header(self: Explanation) -> list[str]:
    lines = [f"{self.class_name}: {self.description!r}", f"objective ({self.objective_kind}): {self.objective:.4g}"]
    if "gradient" in self.scores and self.steps > 1:
        lines.append(f"gradient: integrated over {self.steps} steps")
    if self.image_names:
        lines.append(f"images: {', '.join(self.image_names)}")
    if self.rank_correlation is not None:
        lines.append(f"agreement of gradient and occlusion (Spearman rank correlation): {self.rank_correlation:+.3f}")
    if self.disagree:
        lines.append(
            f"warning: the two methods disagree (correlation below {AGREEMENT_WARNING}); read single-word scores with "
            "care, or give images of the class (--images) for a sharper objective"
        )
    return lines


LEGEND = (
    "green: the word makes the classifier prefer this class over the others; red: it pushes the other way; "
    "stronger colour = larger share of the largest score. gradient: integrated gradients on the word's token "
    "embeddings; occlusion: objective with the word minus objective without it."
)


def to_terminal(self: Explanation, method: str | None = None, *, color: bool = True) -> str:
    """The description with words highlighted by score (ANSI colours; ``color=False`` gives plain text) and a
    per-word table for every method that ran. Positive scores are green, negative red."""
    method = self.method(method)
    lines = _header(self)
    if color:
        parts, cursor = [], 0
        for (start, end), r in zip(self.spans, _relative(self, method), strict=True):
            parts.append(self.description[cursor:start])
            level = round(55 + 200 * abs(r))
            rgb = f"0;{level};0" if r >= 0 else f"{level};0;0"
            parts.append(f"\x1b[1;38;2;{rgb}m{self.description[start:end]}\x1b[0m")
            cursor = end
        parts.append(self.description[cursor:])
        lines.append(f"{method}: " + "".join(parts))
    methods = [m for m in _SHOWN_ORDER if m in self.scores]
    width = max(len(w) for w in self.words) if self.words else 4
    lines.append("  ".join([f"{'word':<{width}}", *(f"{m:>10}" for m in methods), "bar"]))
    relative = _relative(self, method)
    for i, word in enumerate(self.words):
        bar = ("█" if relative[i] >= 0 else "░") * round(20 * abs(relative[i]))
        values = [f"{self.scores[m][i]:>+10.4f}" for m in methods]
        lines.append("  ".join([f"{word:<{width}}", *values, bar]))
    return "\n".join(lines)


def to_html(self: Explanation, path: str | os.PathLike, method: str | None = None) -> Path:
    """Write a self-contained HTML page (highlighted description and a score table), atomically."""
    method = self.method(method)
    marks, cursor = [], 0
    for (start, end), r, s in zip(self.spans, _relative(self, method), self.scores[method], strict=True):
        marks.append(html.escape(self.description[cursor:start]))
        rgb = "40,160,60" if r >= 0 else "210,50,50"
        word = html.escape(self.description[start:end])
        marks.append(f'<mark style="background:rgba({rgb},{abs(r):.3f})" title="{s:+.4g}">{word}</mark>')
        cursor = end
    marks.append(html.escape(self.description[cursor:]))
    methods = [m for m in _SHOWN_ORDER if m in self.scores]
    head = "".join(f"<th>{m}</th>" for m in methods)
    rows = "".join(
        f"<tr><td>{html.escape(w)}</td>" + "".join(f"<td>{self.scores[m][i]:+.4f}</td>" for m in methods) + "</tr>"
        for i, w in enumerate(self.words)
    )
    info = "".join(f"<p>{html.escape(line)}</p>" for line in _header(self)[1:])
    info += f'<p class="legend"><b>Legend.</b> {html.escape(LEGEND)}</p>'
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>lang2net: {html.escape(self.class_name)}</title>"
        "<style>body{font-family:sans-serif;max-width:50em;margin:2em auto}mark{padding:0 2px;border-radius:3px}"
        "p.text{font-size:1.4em}td,th{padding:2px 10px;text-align:right}td:first-child{text-align:left}</style>"
        f"</head><body><h2>{html.escape(self.class_name)}</h2>"
        f'<p class="text">{"".join(marks)}</p><p>highlight: {method}</p>{info}'
        f"<table><tr><th>word</th>{head}</tr>{rows}</table></body></html>\n"
    )
    return write_atomic(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))


def to_png(self: Explanation, path: str | os.PathLike) -> Path:
    """Write a bar chart of the per-word scores (one panel per method), atomically."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend
        from matplotlib.patches import Patch
    except ImportError:
        raise ImportError("to_png needs matplotlib: pip install matplotlib (or 'lang2net[train]')") from None

    methods = [m for m in _SHOWN_ORDER if m in self.scores]
    fig = Figure(figsize=(max(4.0, 0.45 * len(self.words) + 1.5), 1.0 + 2.2 * len(methods)), layout="constrained")
    axes = fig.subplots(len(methods), 1, squeeze=False)[:, 0]
    positions = list(range(len(self.words)))
    for ax, method in zip(axes, methods, strict=True):
        scores = self.scores[method]
        ax.bar(positions, scores, color=["#2a9d4a" if s >= 0 else "#d23232" for s in scores])
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_xticks(positions, self.words, rotation=45, ha="right", fontsize=9)
        ax.set_ylabel(method)
    agreement = f"; agreement {self.rank_correlation:+.2f}" if self.rank_correlation is not None else ""
    fig.suptitle(f"{self.class_name}: {self.objective_kind}{agreement}", fontsize=10)
    if self.image_names:
        fig.text(0.01, 0.0, "images: " + ", ".join(self.image_names), fontsize=7, va="bottom")
    handles = [Patch(color="#2a9d4a", label="favours this class"), Patch(color="#d23232", label="favours the others")]
    axes[0].legend(handles=handles, loc="upper right", fontsize=8, frameon=False)
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
