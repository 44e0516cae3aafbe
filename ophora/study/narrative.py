"""Plain-language summary of a study for a clinician: one paragraph per model, rounded numbers, readable
criterion and phase names. The full-precision tables stay in the report below it and in the CSV/Excel
exports; every number here comes from those tables (no separate computation), except the size an
inconclusive study would need, which is the study planner's (:mod:`ophora.study.planning`).

Why the opening sentence depends on the interval and a margin stated before rating: an interval that
includes 0.5 is absence of evidence; only an interval that also stays below 0.5 + margin shows that raters
could not tell. Anything wider is reported as inconclusive, with what a study would need to decide it."""

from __future__ import annotations

import math

import pandas as pd

from ophora.study.analysis import REAL_MODEL, StudyResults
from ophora.study.mrmc import MIN_READERS


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


def _num(value: float, digits: int) -> str:
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0"


def _ci(low: float, high: float, digits: int) -> str:
    return f"95% CI {_num(low, digits)} to {_num(high, digits)}"


def _no_interval(note: str) -> str:
    """'too few raters to estimate: at least 3 needed (2 so far)' -> words for a clinician."""
    return f"no interval, {note}" if note else "no interval"


def planned_size(results: StudyResults, margin: float, power: float = 0.8) -> str:
    """The study planner's answer (``study plan``, "Plan a study") to "how many raters and clips would show
    the AUC below 0.5 + margin if raters truly cannot tell?", with this study as the pilot: the fewest raters
    it finds a size for (raters are scarcer than clips). '' when the planner cannot size it from these data."""
    from ophora.study.planning import ORPilot, auc_plan

    try:
        plan = auc_plan(ORPilot.from_result(results.turing_mrmc), power=power, margin=margin, expected_auc=0.5)
    except (ValueError, ZeroDivisionError):
        return ""
    plan = plan.dropna(subset=["clips"])
    if plan.empty:
        return ""
    best = plan.loc[plan["readers"].idxmin()]
    return (f"The study planner (Plan a study), with this study as pilot, puts a study that would show it "
            f"({power:.0%} power, if raters truly cannot tell) at {int(best.readers)} raters each reading about "
            f"{int(best.clips)} clips (real and generated together); more raters need fewer clips.")


def _auc_sentence(results: StudyResults, model: str) -> str:
    """The paragraph's opening: told apart / could not tell / inconclusive, from the AUC interval and the
    margin stated in the study file before rating."""
    if results.turing_mrmc is None or model not in results.turing_mrmc.modalities:
        return ""
    m = next(x for x in results.turing_mrmc.analyses["rrrc"].modalities if x.modality == model)
    r = results.turing_mrmc
    clips = r.positives[model] + r.negatives[model]
    name, bound = readable(model), 0.5 + results.turing_margin
    size = f"{len(r.readers)} raters, {clips} clips"
    if not (math.isfinite(m.ci_low) and math.isfinite(m.ci_high)):
        plan = planned_size(results, results.turing_margin)
        if len(r.readers) < MIN_READERS:
            why = f"too few raters to say whether raters can tell {name} clips from real ones"
            needs = f"an interval needs at least {MIN_READERS} raters"
        else:
            why = f"no interval for whether raters can tell {name} clips from real ones"
            needs = m.note or "the data do not support an interval"
        return (f"Inconclusive: {why}: AUC {m.auc:.2f} from {len(r.readers)} raters and {clips} clips, and {needs}."
                + (f" {plan}" if plan else ""))
    stats = f"AUC {m.auc:.2f} ({_ci(m.ci_low, m.ci_high, 2)}; {size})"
    if m.ci_low > 0.5:
        return f"Raters told {name} clips from real ones better than chance (0.5): {stats}."
    if m.ci_high < 0.5:
        return (f"Raters told {name} clips from real ones, the wrong way round: they took them for real more "
                f"readily than the real clips themselves: {stats}.")
    if m.ci_high < bound:
        return (f"Raters could not reliably tell {name} clips from real ones: {stats}; the whole interval lies "
                f"below {bound:.2f}, the margin set in the study file before rating.")
    plan = planned_size(results, results.turing_margin)
    return (f"Inconclusive: the study is too small to say whether raters can tell {name} clips from real ones: "
            f"{stats}; the interval includes both chance (0.5) and values above {bound:.2f}." + (f" {plan}" if plan else ""))


def _difference_text(d, other: str, with_interval: bool = True) -> str:
    """A difference between two clip sets' mean scores, with its interval (or, for a design too small for
    one, with the estimate alone: the sentence before says why)."""
    interval = _ci(d["ci_low"], d["ci_high"], 1) if math.isfinite(d["ci_low"]) else _no_interval(d["note"])
    if not math.isfinite(d["ci_low"]) and not with_interval:
        return f"difference from {other} {_num(d['estimate'], 1)}"
    if math.isfinite(d["p_holm"]) and d["p_holm"] < 0.05:
        word = "below" if d["estimate"] < 0 else "above"
        return f"{abs(d['estimate']):.1f} {word} {other} ({interval}, Holm-adjusted {_p(d['p_holm'])})"
    p = f", Holm-adjusted {_p(d['p_holm'])}" if math.isfinite(d["p_holm"]) else ""
    return f"not clearly different from {other} (difference {d['estimate']:+.1f}, {interval}{p})"


def _phase_ranking(results: StudyResults, model: str) -> str:
    """Lowest and highest phase (all criteria pooled) with their intervals; '' when the intervals overlap
    (or are missing): the ranking would then be noise."""
    pooled = results.by_model_phase_pooled
    if pooled.empty:
        return ""
    mine = pooled[pooled["model"] == model].dropna(subset=["ci_low", "ci_high"]).sort_values("mean")
    if len(mine) < 2:
        return ""
    low, high = mine.iloc[0], mine.iloc[-1]
    if low["ci_high"] >= high["ci_low"]:
        return ""
    return (f"Across criteria these clips scored lowest in {readable(low['phase'])} ({low['mean']:.1f}, "
            f"{_ci(low['ci_low'], low['ci_high'], 1)}) and highest in {readable(high['phase'])} "
            f"({high['mean']:.1f}, {_ci(high['ci_low'], high['ci_high'], 1)}).")


def _score_sentences(results: StudyResults, model: str) -> list[str]:
    scores = results.by_model_criterion
    rows = scores[scores["model"] == model]
    if rows.empty:
        return []
    diffs = results.score_differences
    notes = set(rows["note"])
    shared = next(iter(notes)) if len(notes) == 1 else ""  # e.g. too few raters: say it once
    parts = []
    for row in rows.itertuples(index=False):
        text = f"{readable(row.criterion)} {row.mean:.1f}"
        if math.isfinite(row.ci_low):
            text += f" ({_ci(row.ci_low, row.ci_high, 1)})"
        elif not shared:
            text += f" ({_no_interval(row.note)})"
        d = diffs[(diffs["criterion"] == row.criterion) & (diffs["a"] == model) & (diffs["b"] == REAL_MODEL)]
        if not d.empty:
            text += ", " + _difference_text(d.iloc[0], "real clips", with_interval=not shared)
        parts.append(text)
    head = f"Mean scores ({_no_interval(shared)})" if shared else "Mean scores"
    sentences = [f"{head}: " + "; ".join(parts) + "."]
    ranking = _phase_ranking(results, model)
    return sentences + ([ranking] if ranking else [])


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
            for d in results.score_differences.to_dict("records"):
                if d["a"] == model and d["b"] != REAL_MODEL and math.isfinite(d["p_holm"]) and d["p_holm"] < 0.05:
                    sentences.append(f"On {readable(d['criterion'])} it scored "
                                     f"{_difference_text(d, readable(d['b']) + ' clips')}.")
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
            f"raters and clips as random samples, so they say how results would vary with other raters and other clips; "
            f"differences count as clear when their p-value, adjusted for the number of comparisons (Holm), is below "
            f"0.05 (the intervals are not adjusted).")
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
