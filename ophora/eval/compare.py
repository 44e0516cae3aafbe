"""Model A against model B on the same real clips: a paired bootstrap of A - B for every metric, overall and per
phase, said in one plain sentence per metric, written as HTML, markdown and JSON.

Why paired: when A and B were generated from the same prompts and seeds (the same clip ids), drawing the same
clips for both removes the prompt-to-prompt spread from the difference, and drawing the same real clips for both
removes the real set's; the interval is then for the difference itself, not two overlapping intervals read by eye.
Sets that do not share clip ids are resampled independently (said in the report).
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ophora.eval.intervals import bootstrap
from ophora.eval.metrics import COLUMNS, HIGHER_IS_BETTER, ClipFeatures, Protocol, metric_statistic, phase_groups


@dataclass
class Comparison:
    names: tuple[str, str]
    rows: list[dict]
    paired: bool
    protocol: dict
    weights: list = field(default_factory=list)
    sets: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in self.rows]
        return {"models": list(self.names), "paired": self.paired, "rows": rows, "protocol": self.protocol,
                "weights": [w.to_dict() for w in self.weights], "sets": self.sets}


def _number(value: float, scale: float) -> str:
    """Decimals set by ``scale`` (the difference): "-23", "-4.1", "0.52", "0.031" read faster than raw floats."""
    size = abs(scale)
    digits = 0 if size >= 10 else 1 if size >= 1 else 2 if size >= 0.1 else 3
    return f"{value:.{digits}f}"


def describe(metric: str, a: str, b: str, difference: float, low: float, high: float, level: float) -> str:
    """One sentence a clinician can read: which model is better on the metric, by how much, how sure."""
    column = COLUMNS[metric]
    if math.isnan(difference):
        return f"{column} could not be computed for both {a} and {b} here (too few clips)."
    interval = "" if math.isnan(low) else \
        f" ({level:.0%} CI {_number(low, difference)} to {_number(high, difference)})"
    amount = f"difference {_number(difference, difference)}{interval}"
    if metric in HIGHER_IS_BETTER:
        better, what = (a, b) if difference > 0 else (b, a), "matches its instructions better than"
    else:
        better, what = (a, b) if difference < 0 else (b, a), "is closer to real clips than"
    if math.isnan(low):
        return f"{better[0]} {what} {better[1]} on {column}, but without an interval: {amount} (A - B)."
    if low <= 0 <= high:
        return f"{a} and {b} cannot be told apart on {column} with these clips: {amount}."
    return f"{better[0]} {what} {better[1]} on {column}: {amount}."


def _aligned(a: list[ClipFeatures], b: list[ClipFeatures]) -> list[ClipFeatures] | None:
    """``b`` reordered to ``a``'s clip ids when both sets hold the same ids (same prompts and seeds), else None."""
    by_name = {c.record.name: c for c in b}
    if len(by_name) != len(b) or len(a) != len(b) or set(by_name) != {c.record.name for c in a}:
        return None
    return [by_name[c.record.name] for c in a]


def compare_features(a: list[ClipFeatures], b: list[ClipFeatures], real: list[ClipFeatures] | None,
                     names: tuple[str, str], protocol: Protocol, metrics: tuple[str, ...],
                     per_phase: bool = True) -> tuple[list[dict], bool]:
    """Rows of (group, metric, A, B, A - B, interval, sentence); and whether the clips were paired."""
    aligned = _aligned(a, b)
    paired = aligned is not None
    b = aligned if paired else b
    groups = phase_groups(a, b, real)
    rows = []
    for group, (in_a, in_b, in_real) in groups if per_phase else groups[:1]:
        for metric in metrics:
            stat_a = metric_statistic(metric, in_a, in_real) if in_a else None
            stat_b = metric_statistic(metric, in_b, in_real) if in_b else None
            row = {"group": group, "metric": COLUMNS[metric], "A": float("nan"), "B": float("nan"),
                   "difference": float("nan"), "low": float("nan"), "high": float("nan"),
                   "clips_A": len(in_a or []), "clips_B": len(in_b or []), "real_clips": len(in_real or [])}
            if stat_a is not None and stat_b is not None:
                sizes = [len(in_a), len(in_b), len(in_real or [None])]
                group_paired = paired and [c.record.name for c in in_a] == [c.record.name for c in in_b]

                def difference(i, j, k, stat_a=stat_a, stat_b=stat_b):
                    return stat_a(i, k) - stat_b(j, k)

                with np.errstate(all="ignore"):
                    row["A"] = float(stat_a(np.arange(sizes[0]), np.arange(sizes[2])))
                    row["B"] = float(stat_b(np.arange(sizes[1]), np.arange(sizes[2])))
                    row["difference"] = row["A"] - row["B"]
                    if protocol.bootstrap_resamples and min(sizes[:2]) >= 2 and np.isfinite(row["difference"]):
                        interval = bootstrap(difference, sizes, protocol.bootstrap_resamples, protocol.confidence,
                                             protocol.bootstrap_seed, pairs=[(0, 1)] if group_paired else [])
                        row["low"], row["high"] = interval.low, interval.high
            row["sentence"] = describe(metric, names[0], names[1], row["difference"], row["low"], row["high"],
                                       protocol.confidence)
            rows.append(row)
    return rows, paired


def to_markdown(comparison: Comparison) -> str:
    a, b = comparison.names
    lines = [f"# {a} vs {b}", "", f"Differences are {a} - {b}, with {comparison.protocol['confidence']:.0%} paired "
             f"bootstrap intervals ({comparison.protocol['bootstrap_resamples']} resamples; clips "
             f"{'paired by clip id' if comparison.paired else 'NOT paired: the sets do not share clip ids'}).", ""]
    if any(w.random_init for w in comparison.weights):
        lines += ["**RANDOM-WEIGHT EXTRACTORS: these differences test the pipeline and mean nothing.**", ""]
    for group in dict.fromkeys(r["group"] for r in comparison.rows):
        lines += [f"## {'Overall' if group == 'all' else group}", ""]
        lines += [f"- {r['sentence']}" for r in comparison.rows if r["group"] == group]
        lines.append("")
    return "\n".join(lines)


def to_html(comparison: Comparison) -> str:
    """Self-contained page: the sentences, then a forest plot of every difference with its interval."""
    import plotly.graph_objects as go

    a, b = comparison.names
    overall = [r for r in comparison.rows if r["group"] == "all" and not math.isnan(r["difference"])]
    figure = go.Figure(go.Scatter(
        x=[r["difference"] for r in overall], y=[r["metric"] for r in overall], mode="markers",
        error_x=dict(type="data", array=[r["high"] - r["difference"] for r in overall],
                     arrayminus=[r["difference"] - r["low"] for r in overall])))
    figure.add_vline(x=0, line_dash="dash")
    figure.update_layout(title=f"{a} - {b}, overall (left of 0: {a} lower)", height=120 + 60 * max(1, len(overall)))
    sections = []
    for group in dict.fromkeys(r["group"] for r in comparison.rows):
        items = "".join(f"<li>{html.escape(r['sentence'])}</li>" for r in comparison.rows if r["group"] == group)
        sections.append(f"<h2>{html.escape('Overall' if group == 'all' else group)}</h2><ul>{items}</ul>")
    note = html.escape(to_markdown(comparison).splitlines()[2])
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(a)} vs {html.escape(b)}</title>"
            f"</head><body><h1>{html.escape(a)} vs {html.escape(b)}</h1><p>{note}</p>{''.join(sections)}"
            f"{figure.to_html(full_html=False, include_plotlyjs=True)}</body></html>")


def write_comparison(comparison: Comparison, out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "compare.json", "markdown": out_dir / "compare.md", "html": out_dir / "compare.html"}
    paths["json"].write_text(json.dumps(comparison.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    paths["markdown"].write_text(to_markdown(comparison), encoding="utf-8")
    paths["html"].write_text(to_html(comparison), encoding="utf-8")
    return paths
