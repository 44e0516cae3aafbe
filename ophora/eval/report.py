"""Write an evaluation as the paper's Table 1: CSV, markdown, a plotly chart and a JSON record of the protocol.

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


def to_markdown(report: EvalReport, with_paper: bool = True) -> str:
    """Table 1 style: one line per model and group, FID and FVD lower-better, CLIPScore higher-better."""
    lines = ["# Video quality: FID, FVD, CLIPScore", ""]
    if report.uses_random_weights:
        lines += ["**RANDOM-WEIGHT EXTRACTORS: these numbers test the pipeline and mean nothing.**", ""]
    lines += ["| Model | Group | FID ↓ | FVD ↓ | CLIPScore ↑ | Clips (gen / real) | Notes |",
              "|---|---|---:|---:|---:|---:|---|"]
    for row in report.table.to_dict(orient="records"):
        lines.append(f"| {row['model']} | {row['group']} | {_fmt(row['FID'])} | {_fmt(row['FVD'])} | "
                     f"{_fmt(row['CLIPScore'])} | {row['generated_clips']} / {row['real_clips']} | "
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
    """Grouped bars per phase, one panel per metric, one colour per model."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    metrics = [m for m in ("FID", "FVD", "CLIPScore") if report.table[m].notna().any()] or ["FID"]
    titles = {"FID": "FID (lower is better)", "FVD": "FVD (lower is better)", "CLIPScore": "CLIPScore (higher is better)"}
    figure = make_subplots(rows=len(metrics), cols=1, subplot_titles=[titles[m] for m in metrics],
                           shared_xaxes=True, vertical_spacing=0.08)
    for model, rows in report.table.groupby("model", sort=False):
        for index, metric in enumerate(metrics, start=1):
            figure.add_trace(go.Bar(name=str(model), x=rows["group"], y=rows[metric], legendgroup=str(model),
                                    showlegend=index == 1,
                                    hovertemplate="%{x}: %{y:.2f}<extra>" + str(model) + "</extra>"),
                             row=index, col=1)
    title = "Generated vs real clips, overall and per surgical phase"
    if report.uses_random_weights:
        title += " (RANDOM-WEIGHT EXTRACTORS: not meaningful)"
    figure.update_layout(title=title, barmode="group", height=300 * len(metrics) + 120)
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
