"""Write an evaluation as the paper's Table 1 (plus CD-FVD and JEDi, with intervals): CSV, markdown, a plotly chart
and a JSON record of the protocol.

The JSON keeps everything needed to judge whether two reports compare: extractor weights (name, location,
sha256), protocol, clip counts, software versions and warnings.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ophora.eval.weights import WeightsInfo

# The paper's Table 1 (FID / FVD / CLIPScore), for context rows in the markdown report.
PAPER_TABLE_1 = [
    ("Endora", 167.75, 1433.29, None), ("Endora w/ Ophora-160K", 60.50, 990.30, None),
    ("Bora", 138.30, 1761.42, 12.68), ("Bora w/ Ophora-160K", 49.74, 604.20, 32.02),
    ("CogVideoX-2b", 138.20, 871.16, 5.87), ("CogVideoX-2b w/ OphVL", 61.48, 532.47, 33.65),
    ("Ophora (TPT only)", 42.16, 441.09, 37.03), ("Ophora", 33.72, 276.96, 39.19),
]


@dataclass
class EvalReport:
    table: object  # pandas.DataFrame from metrics.score_table
    protocol: dict
    weights: list[WeightsInfo]
    sets: dict[str, str]  # set name -> source folder/CSV
    warnings: list[str] = field(default_factory=list)
    created_utc: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def uses_random_weights(self) -> bool:
        return any(w.random_init for w in self.weights)

    def to_dict(self) -> dict:
        import diffusers
        import torch
        import transformers

        rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
                for row in self.table.to_dict(orient="records")]
        return {"created_utc": self.created_utc, "sets": self.sets, "protocol": self.protocol,
                "weights": [w.to_dict() for w in self.weights], "random_weights": self.uses_random_weights,
                "warnings": self.warnings, "rows": rows,
                "software": {"torch": torch.__version__, "transformers": transformers.__version__,
                             "diffusers": diffusers.__version__, "python": platform.python_version()}}


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def present_metrics(table) -> list[str]:
    """The metric columns of a table that hold at least one value, in the order of ``metrics.COLUMNS``."""
    from ophora.eval.metrics import COLUMNS

    return [c for c in COLUMNS.values() if c in table.columns and table[c].notna().any()]


def format_cell(row: dict, column: str) -> str:
    """'33.72 [30.10, 37.20]' and, for Frechet metrics, '; N=inf 31.05': value, interval, corrected value."""
    text = _fmt(row.get(column))
    low, high = row.get(f"{column}_low"), row.get(f"{column}_high")
    if text != "-" and _fmt(low) != "-":
        text += f" [{_fmt(low)}, {_fmt(high)}]"
    if _fmt(row.get(f"{column}_inf")) != "-":
        text += f"; N=∞ {_fmt(row[f'{column}_inf'])}"
    return text


def to_markdown(report: EvalReport, with_paper: bool = True) -> str:
    """Table 1 style: one line per model and group; the distances lower-better, CLIPScore higher-better; each value
    with its bootstrap interval and, for the Frechet metrics, its value extrapolated to infinitely many clips."""
    from ophora.eval.metrics import COLUMNS

    metrics = present_metrics(report.table) or ["FID"]
    arrows = {c: "↑" if c == COLUMNS["clipscore"] else "↓" for c in metrics}
    lines = ["# Video quality: " + ", ".join(metrics), ""]
    if report.uses_random_weights:
        lines += ["**RANDOM-WEIGHT EXTRACTORS: these numbers test the pipeline and mean nothing.**", ""]
    level = report.protocol.get("confidence", 0.95)
    lines += [f"Each value: estimate [{level:.0%} bootstrap interval over clips]; Frechet distances also extrapolated "
              f"to infinitely many clips (N=∞), the figure that compares across set sizes.", ""]
    lines += ["| Model | Group | " + " | ".join(f"{c} {arrows[c]}" for c in metrics) + " | Clips (gen / real) | Notes |",
              "|---|---|" + "---:|" * len(metrics) + "---:|---|"]
    for row in report.table.to_dict(orient="records"):
        cells = " | ".join(format_cell(row, c) for c in metrics)
        lines.append(f"| {row['model']} | {row['group']} | {cells} | {row['generated_clips']} / {row['real_clips']} | "
                     f"{row['notes'] or ''} |")
    if with_paper:
        lines += ["", "Published (Ophora paper, Table 1; other sets, protocol and sample counts, for orientation only):",
                  "", "| Model | FID ↓ | FVD ↓ | CLIPScore ↑ |", "|---|---:|---:|---:|"]
        lines += [f"| {name} | {_fmt(fid)} | {_fmt(fvd)} | {_fmt(cs)} |" for name, fid, fvd, cs in PAPER_TABLE_1]
    lines += ["", "## Extractor weights", ""]
    lines += [f"- {w.role}: {w.name} — `{w.location}` — sha256 `{w.sha256 or 'n/a'}`" for w in report.weights]
    lines += ["", "## Protocol", ""] + [f"- {k}: {v}" for k, v in report.protocol.items()]
    lines += ["", "## Sets", ""] + [f"- {k}: `{v}`" for k, v in report.sets.items()]
    if report.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report.warnings]
    return "\n".join(lines) + "\n"


def to_figure(report: EvalReport):
    """Grouped bars per phase with interval whiskers, one panel per metric, one colour per model."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    metrics = present_metrics(report.table) or ["FID"]
    figure = make_subplots(rows=len(metrics), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                           subplot_titles=[f"{m} ({'higher' if m == 'CLIPScore' else 'lower'} is better)"
                                           for m in metrics])
    for model, rows in report.table.groupby("model", sort=False):
        for index, metric in enumerate(metrics, start=1):
            error = None
            if f"{metric}_low" in rows:
                error = dict(type="data", array=rows[f"{metric}_high"] - rows[metric],
                             arrayminus=rows[metric] - rows[f"{metric}_low"])
            figure.add_trace(go.Bar(name=str(model), x=rows["group"], y=rows[metric], error_y=error,
                                    legendgroup=str(model), showlegend=index == 1,
                                    hovertemplate="%{x}: %{y:.2f}<extra>" + str(model) + "</extra>"),
                             row=index, col=1)
    title = "Generated vs real clips, overall and per surgical phase (whiskers: bootstrap interval)"
    if report.uses_random_weights:
        title += " (RANDOM-WEIGHT EXTRACTORS: not meaningful)"
    figure.update_layout(title=title, barmode="group", height=260 * len(metrics) + 120)
    return figure


def write_report(report: EvalReport, out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "metrics.csv", "markdown": out_dir / "metrics.md", "chart": out_dir / "metrics.html",
             "json": out_dir / "report.json"}
    report.table.to_csv(paths["csv"], index=False)
    paths["markdown"].write_text(to_markdown(report), encoding="utf-8")
    # Self-contained HTML: evaluation machines are often offline.
    to_figure(report).write_html(paths["chart"], include_plotlyjs=True)
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    return paths
