"""Summary of a curation run: counts per stage, drop reasons, and histograms as one offline plotly HTML.

Why per stage: a researcher tuning thresholds on new hospitals' videos needs to see where clips go (how many
the resolution filter took, how many the dynamics filter) and how the measurements are distributed around
each threshold, not just the final count.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .pipeline import STAGES


def summarize(frame: pd.DataFrame) -> dict:
    """Counts per stage: clips that reached it, passed it, were dropped or errored there."""
    total = len(frame)
    summary: dict = {"clips": total, "kept": int((frame.get("decision") == "keep").sum()) if total else 0,
                     "dropped": int((frame.get("decision") == "drop").sum()) if total else 0,
                     "errors": int((frame.get("decision") == "error").sum()) if total else 0, "stages": {}}
    for stage in STAGES:
        reached = frame["stages_run"].fillna("").str.split(",").apply(lambda names, s=stage: s in names) \
            if total else pd.Series(dtype=bool)
        reached = reached | (frame["drop_stage"] == stage) if total else reached
        dropped = int(((frame["drop_stage"] == stage) & (frame["decision"] == "drop")).sum()) if total else 0
        errors = int(((frame["drop_stage"] == stage) & (frame["decision"] == "error")).sum()) if total else 0
        if int(reached.sum()) == 0:
            continue
        summary["stages"][stage] = {"reached": int(reached.sum()), "dropped": dropped, "errors": errors,
                                    "passed": int(reached.sum()) - dropped - errors}
    if total:
        reasons = frame.loc[frame["decision"] != "keep", "reason"].fillna("").str.split(":").str[0]
        summary["reasons"] = {k: int(v) for k, v in reasons.value_counts().items()}
    return summary


HISTOGRAMS = [
    ("probe_width", "Width (px)"), ("probe_height", "Height (px)"), ("probe_clip_duration_s", "Clip duration (s)"),
    ("dynamics_cuts_per_minute", "Cuts per minute"), ("dynamics_mean_score", "Mean frame score (detector)"),
    ("face_face_frames", "Frames with a face (local pre-screen)"), ("instruction_words", "Instruction length (words)"),
]


def write_report(frame: pd.DataFrame, html_path: str | Path, summary_path: str | Path | None = None) -> dict:
    """Write the HTML report (plotly embedded, works offline) and the JSON summary; return the summary."""
    import plotly.graph_objects as go

    summary = summarize(frame)
    data = frame.copy()
    if "instruction" in data.columns:
        data["instruction_words"] = data["instruction"].fillna("").str.split().str.len().where(data["instruction"].notna())
    parts = [f"<h1>Ophora curation report</h1><p>{summary['clips']} clips: {summary['kept']} kept, "
             f"{summary['dropped']} dropped, {summary['errors']} errors (rerun to retry).</p>",
             "<table border=1 cellpadding=4><tr><th>stage</th><th>reached</th><th>passed</th><th>dropped</th>"
             "<th>errors</th></tr>"]
    parts += [f"<tr><td>{name}</td><td>{s['reached']}</td><td>{s['passed']}</td><td>{s['dropped']}</td>"
              f"<td>{s['errors']}</td></tr>" for name, s in summary["stages"].items()]
    parts.append("</table>")
    first = True
    for column, title in HISTOGRAMS:
        if column not in data.columns or data[column].dropna().empty:
            continue
        figure = go.Figure()
        for decision in ("keep", "drop", "error"):
            values = pd.to_numeric(data.loc[data["decision"] == decision, column], errors="coerce").dropna()
            if len(values):
                figure.add_trace(go.Histogram(x=values, name=decision, opacity=0.75))
        figure.update_layout(barmode="overlay", title=title, xaxis_title=title, yaxis_title="clips", height=320)
        parts.append(figure.to_html(full_html=False, include_plotlyjs=True if first else False))
        first = False
    html_path = Path(html_path)
    html_path.write_text("<html><head><meta charset='utf-8'><title>Ophora curation report</title></head><body>"
                         + "\n".join(parts) + "</body></html>", encoding="utf-8")
    if summary_path is not None:
        Path(summary_path).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
