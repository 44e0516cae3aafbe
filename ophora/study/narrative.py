"""Plain-language summary of a study for a clinician: one paragraph per model, rounded numbers, readable
criterion and phase names. The full-precision tables stay in the report below it and in the CSV/Excel
exports; every number here comes from those tables (no separate computation)."""

from __future__ import annotations

import math

import pandas as pd

from ophora.study.analysis import REAL_MODEL, StudyResults


def readable(name) -> str:
    """``phase_matching`` -> "Phase matching", a phase id -> its name in assets/phases.yaml."""
    from ophora.vocabulary import load_phases

    text = str(name)
    for phase in load_phases():
        if phase.id == text:
            return phase.name
    text = text.replace("_", " ").replace("-", " ").strip()
    return text[:1].upper() + text[1:] if text else text


def _p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "p not available"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def _auc_sentence(results: StudyResults, model: str) -> str:
    if results.turing_mrmc is None or model not in results.turing_mrmc.modalities:
        return ""
    m = next(x for x in results.turing_mrmc.analyses["rrrc"].modalities if x.modality == model)
    r = results.turing_mrmc
    clips = r.positives[model] + r.negatives[model]
    name = readable(model)
    if not math.isfinite(m.ci_low):
        return (f"Raters told {name} clips from real ones with AUC {m.auc:.2f} ({len(r.readers)} rater(s), {clips} "
                f"clips; no interval: it needs at least two raters).")
    head = (f"Raters told {name} clips from real ones with AUC {m.auc:.2f} (95% CI {m.ci_low:.2f} to "
            f"{m.ci_high:.2f}; {len(r.readers)} raters, {clips} clips): ")
    if m.ci_low > 0.5:
        return head + "they could tell them apart better than chance (AUC 0.5)."
    if m.ci_high < 0.5:
        return head + "they took these clips for real more readily than the real clips themselves."
    return head + "the interval includes 0.5 (chance), so these raters could not reliably tell them from real clips."


def _score_sentences(results: StudyResults, model: str) -> list[str]:
    scores = results.by_model_criterion
    rows = scores[scores["model"] == model]
    diffs = results.score_differences
    parts = []
    for row in rows.itertuples(index=False):
        text = f"{readable(row.criterion)} {row.mean:.1f}"
        if math.isfinite(row.ci_low):
            text += f" (95% CI {row.ci_low:.1f} to {row.ci_high:.1f})"
        d = diffs[(diffs["criterion"] == row.criterion) & (diffs["a"] == model) & (diffs["b"] == REAL_MODEL)]
        if not d.empty:
            d = d.iloc[0]
            if math.isfinite(d["p_holm"]) and d["p_holm"] < 0.05:
                word = "below" if d["estimate"] < 0 else "above"
                text += (f", {abs(d['estimate']):.1f} {word} real clips (95% CI {d['ci_low']:.1f} to {d['ci_high']:.1f}, "
                         f"Holm-adjusted {_p(d['p_holm'])})")
            else:
                text += (f", not clearly different from real clips (difference {d['estimate']:+.1f}, Holm-adjusted "
                         f"{_p(d['p_holm'])})")
        parts.append(text)
    if not parts:
        return []
    sentences = ["Mean scores: " + "; ".join(parts) + "."]
    by_phase = results.by_model_phase
    mine = by_phase[by_phase["model"] == model]
    per_phase = mine.groupby("phase")["mean"].mean().sort_values()
    if len(per_phase) > 1 and round(per_phase.iloc[-1], 1) > round(per_phase.iloc[0], 1):
        sentences.append(f"Across criteria these clips scored lowest in {readable(per_phase.index[0])} "
                         f"({per_phase.iloc[0]:.1f}) and highest in {readable(per_phase.index[-1])} "
                         f"({per_phase.iloc[-1]:.1f}).")
    return sentences


def model_paragraphs(results: StudyResults) -> list[tuple[str, str]]:
    """``[(model, paragraph), ...]``: generated models first (alphabetical), real clips last."""
    models = sorted(set(results.by_model_criterion["model"]) | set(
        results.turing_mrmc.modalities if results.turing_mrmc else []))
    ordered = [m for m in models if m != REAL_MODEL] + [m for m in models if m == REAL_MODEL]
    paragraphs = []
    for model in ordered:
        sentences = [] if model == REAL_MODEL else [s for s in [_auc_sentence(results, model)] if s]
        sentences += _score_sentences(results, model)
        if model != REAL_MODEL:
            for d in results.score_differences.itertuples(index=False):
                if d.a == model and d.b != REAL_MODEL and math.isfinite(d.p_holm) and d.p_holm < 0.05:
                    sentences.append(f"On {readable(d.criterion)} it scored {abs(d.estimate):.1f} "
                                     f"{'below' if d.estimate < 0 else 'above'} {readable(d.b)} (Holm-adjusted {_p(d.p_holm)}).")
        if sentences:
            label = "Real clips" if model == REAL_MODEL else readable(model)
            paragraphs.append((model, f"{label}: " + " ".join(sentences)))
    return paragraphs


def overview(results: StudyResults) -> str:
    """One opening sentence: who rated what, and how the intervals were made."""
    ratings = results.ratings
    if ratings.empty:
        return "No ratings yet."
    text = (f"{ratings['rater'].nunique()} raters scored {ratings['clip_id'].nunique()} clips. Intervals treat both "
            f"raters and clips as random samples, so they say how results would vary with other raters and other clips.")
    if results.turing_note:
        text += " " + results.turing_note
    return text


def summary_markdown(results: StudyResults) -> str:
    """The same paragraphs as Markdown, for the Studies tab."""
    lines = [overview(results)] + [text for _, text in model_paragraphs(results)]
    return "\n\n".join(lines)


def summary_html(results: StudyResults) -> str:
    import html

    return "\n".join(f"<p>{html.escape(text)}</p>" for text in
                     [overview(results)] + [t for _, t in model_paragraphs(results)])


def readable_labels(table: pd.DataFrame) -> pd.DataFrame:
    """Criterion, phase and model columns with readable names (for tables a clinician looks at)."""
    out = table.copy()
    for column in ("criterion", "phase", "model", "modality", "clip_set"):
        if column in out:
            out[column] = out[column].map(readable)
    return out
