"""Study results from the tidy ratings table: mean scores with crossed random-effects CIs, differences
between models, agreement, the Turing test as MRMC ROC, the paper-style figures and CSV / Excel / HTML exports.

Why established packages: ICC forms come from pingouin (Shrout & Fleiss / McGraw & Wong), Krippendorff's
alpha from ``krippendorff``, Fleiss' kappa and Holm from ``statsmodels``, ROC AUC from ``scikit-learn``; mean
scores (:mod:`ophora.study.mixed`) and the Obuchowski-Rockette AUC analysis (:mod:`ophora.study.mrmc`) are
checked by simulation and against published results, so a report can name its methods.
"""

from __future__ import annotations

import html
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ophora.files import owner_only
from ophora.study.definition import TURING_MARGIN
from ophora.study.mixed import difference_interval, fit_crossed, mean_interval
from ophora.study.mrmc import MRMCResult, complete_readers, mrmc_analysis, turing_mrmc_frame, write_imrmc

FIRST_READING = 0


SCORE_COLUMNS = ("rater", "clip", "model", "criterion", "score")
REAL_MODEL = "real"


def tidy_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """Check and normalise a tidy score table (rater, clip, model, criterion, score[, phase]).

    Accepts the study database's ``clip_id`` for ``clip``, keeps first readings only when a ``reading`` column
    is there (repeats measure the rater), and averages duplicate rater x clip x criterion scores. Raises
    ``ValueError`` naming the missing columns or the rows whose score is not a number."""
    data = frame.rename(columns={"clip_id": "clip"}) if "clip" not in frame and "clip_id" in frame else frame
    missing = [c for c in SCORE_COLUMNS if c not in data]
    if missing:
        raise ValueError(f"ratings table lacks column(s) {', '.join(missing)}; it needs one row per score with "
                         f"columns {', '.join(SCORE_COLUMNS)} (optional: phase, reading)")
    if "reading" in data:
        data = data[pd.to_numeric(data["reading"], errors="coerce").fillna(FIRST_READING) == FIRST_READING]
    scores = pd.to_numeric(data["score"], errors="coerce")
    bad = data.index[scores.isna() | ~np.isfinite(scores.fillna(0))]
    if len(bad):
        shown = ", ".join(f"row {i + 2}: {data.at[i, 'score']!r}" for i in list(bad)[:5])
        raise ValueError(f"{len(bad)} score(s) are not numbers ({shown}{', ...' if len(bad) > 5 else ''}); "
                         f"every score must be numeric (leave unrated items out instead of blank)")
    keys = ["model", "criterion", "rater", "clip"] + (["phase"] if "phase" in data else [])
    out = data[keys].fillna({"phase": "unknown"} if "phase" in data else {}).astype(str).assign(score=scores.astype(float))
    return out.groupby(keys, sort=True, as_index=False)["score"].mean()


def rating_scales(frame: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """criterion -> (scale min, scale max) from the optional ``scale_min`` / ``scale_max`` columns of a
    ratings table (a study's table has them; a CSV from elsewhere may). Intervals are cut at the scale's
    ends and plot axes span it."""
    if not {"criterion", "scale_min", "scale_max"} <= set(frame.columns) or frame.empty:
        return {}
    pairs = frame[["criterion", "scale_min", "scale_max"]].dropna().drop_duplicates("criterion")
    return {str(r.criterion): (float(r.scale_min), float(r.scale_max)) for r in pairs.itertuples(index=False)}


def with_scales(ratings: pd.DataFrame, scales: dict[str, tuple[int, int]] | None) -> pd.DataFrame:
    """The ratings table with each criterion's rating scale as ``scale_min`` / ``scale_max`` columns."""
    if not scales or ratings.empty or "criterion" not in ratings:
        return ratings
    criterion = ratings["criterion"].astype(str)
    return ratings.assign(scale_min=criterion.map({c: s[0] for c, s in scales.items()}),
                          scale_max=criterion.map({c: s[1] for c, s in scales.items()}))


def _summary_row(group: pd.DataFrame, confidence: float, scale: tuple[float, float] | None) -> dict:
    fit = fit_crossed(group["score"].to_numpy(), group["rater"].to_numpy(), group["clip"].to_numpy())
    ci = mean_interval(fit, confidence, scale)
    return {"n": fit.n, "raters": fit.raters, "clips": fit.clips, "mean": ci.estimate, "se": ci.se, "df": ci.df,
            "ci_low": ci.ci_low, "ci_high": ci.ci_high, "var_rater": fit.var_rater, "var_clip": fit.var_clip,
            "var_error": fit.var_error, "note": fit.note}


SUMMARY_COLUMNS = ["n", "raters", "clips", "mean", "se", "df", "ci_low", "ci_high", "var_rater", "var_clip",
                   "var_error", "note"]


def score_summary(frame: pd.DataFrame, *, by_phase: bool = False, confidence: float = 0.95,
                  scales: dict[str, tuple[float, float]] | None = None) -> pd.DataFrame:
    """Mean score per model x criterion (``by_phase``: model x phase x criterion) with a confidence interval
    that treats raters and clips as crossed random effects (:mod:`ophora.study.mixed`: moment estimates of
    the rater, clip and error variances, generalized interval; calibrated by simulation in
    tests/study/test_mixed.py and bench/bench_study_intervals.py), cut at the rating scale's ends
    (``scales``, else the table's scale columns). Too small a design gets a ``note`` and no interval.

    ``frame``: tidy, one row per score, columns rater, clip (or clip_id), model, criterion, score, optional
    phase, reading, scale_min and scale_max."""
    by = ["model", "phase", "criterion"] if by_phase else ["model", "criterion"]
    scales = scales if scales is not None else rating_scales(frame)
    data = tidy_scores(frame)
    if by_phase and "phase" not in data:
        raise ValueError("by_phase needs a 'phase' column in the ratings table")
    rows = [{**dict(zip(by, key)), **_summary_row(group, confidence, scales.get(key[-1]))}
            for key, group in data.groupby(by, sort=True)]
    return pd.DataFrame(rows, columns=[*by, *SUMMARY_COLUMNS])


def score_differences(frame: pd.DataFrame, *, confidence: float = 0.95, reference: str = REAL_MODEL,
                      scales: dict[str, tuple[float, float]] | None = None) -> pd.DataFrame:
    """Per criterion: each model - real (``reference``) and each model - model, with CI, p-value and a
    Holm-adjusted p-value over all rows of the table (statsmodels ``multipletests``). Shared raters make
    the two means covary; :func:`ophora.study.mixed.difference_interval` accounts for it."""
    from statsmodels.stats.multitest import multipletests

    scales = scales if scales is not None else rating_scales(frame)
    data = tidy_scores(frame)
    rows = []
    for criterion, group in data.groupby("criterion", sort=True):
        fits = {model: fit_crossed(g["score"].to_numpy(), g["rater"].to_numpy(), g["clip"].to_numpy())
                for model, g in group.groupby("model", sort=True)}
        others = [m for m in fits if m != reference]
        pairs = [(m, reference) for m in others if reference in fits]
        pairs += [(a, b) for i, a in enumerate(others) for b in others[i + 1:]]
        for a, b in pairs:
            ci = difference_interval(fits[a], fits[b], confidence, scales.get(criterion))
            rows.append({"criterion": criterion, "a": a, "b": b, "comparison": f"{a} - {b}", "estimate": ci.estimate,
                         "se": ci.se, "df": ci.df, "ci_low": ci.ci_low, "ci_high": ci.ci_high, "p": ci.p,
                         "note": fits[a].note or fits[b].note})
    table = pd.DataFrame(rows, columns=["criterion", "a", "b", "comparison", "estimate", "se", "df", "ci_low",
                                        "ci_high", "p", "p_holm", "note"])
    valid = table["p"].notna()
    if valid.any():
        table.loc[valid, "p_holm"] = multipletests(table.loc[valid, "p"], method="holm")[1]
    return table


# Shrout & Fleiss names for pingouin's McGraw & Wong labels (pingouin >= 0.7 reports the latter).
SHROUT_FLEISS_FORMS = {"ICC(1,1)": "ICC1", "ICC(A,1)": "ICC2", "ICC(C,1)": "ICC3",
                       "ICC(1,k)": "ICC1k", "ICC(A,k)": "ICC2k", "ICC(C,k)": "ICC3k"}


def icc_table(ratings: pd.DataFrame, *, targets: str = "clip_id", raters: str = "rater", score: str = "score") -> pd.DataFrame:
    """All six ICC forms from pingouin for one criterion's ratings (incomplete targets are dropped by
    pingouin's ``nan_policy='omit'``), indexed by Shrout & Fleiss form (ICC1 ... ICC3k); the ``Type``
    column keeps pingouin's McGraw & Wong label (ICC(A,1) = ICC2 etc.)."""
    import pingouin as pg

    table = pg.intraclass_corr(data=ratings, targets=targets, raters=raters, ratings=score, nan_policy="omit")
    table.index = [SHROUT_FLEISS_FORMS.get(t, t) for t in table["Type"]]
    table.index.name = "form"
    return table


def krippendorff_alpha(ratings: pd.DataFrame, *, level: str = "ordinal", scale: tuple[int, int] | None = None,
                       units: str = "clip_id", raters: str = "rater", score: str = "score") -> float:
    """Krippendorff's alpha over a raters x units matrix with missing cells (``krippendorff`` package).
    ``scale`` gives the full value domain so unused scale points still count for ordinal distances. Shown
    inside -1 to 1 (tiny samples can fall below -1: systematic disagreement either way)."""
    import krippendorff

    matrix = ratings.pivot_table(index=raters, columns=units, values=score, aggfunc="first")
    kwargs = {}
    if scale is not None and level in ("ordinal", "nominal"):
        kwargs["value_domain"] = list(range(scale[0], scale[1] + 1))
    alpha = float(krippendorff.alpha(reliability_data=matrix.to_numpy(dtype=float), level_of_measurement=level, **kwargs))
    return float(np.clip(alpha, -1.0, 1.0)) if np.isfinite(alpha) else alpha


def _clip_set_column(ratings: pd.DataFrame) -> str:
    return "clip_set" if "clip_set" in ratings else "model"


MIN_ICC_CLIPS = 5  # fewer clips leave the ICC's F distributions with 1-3 df: an interval over the whole range


def bounded_icc(estimate: float, low: float, high: float) -> tuple[float, str]:
    """An ICC and its 95% interval inside [0, 1], the range of a share of variance: a negative estimate
    (sampling noise when clips barely differ) is shown as 0, and cutting the interval at 0 and 1 keeps its
    coverage (the true value lies inside). An interval wholly outside [0, 1] (negative mean-square
    differences in a tiny sample) says so instead."""
    def cut(v: float) -> float:
        return float(min(max(v, 0.0), 1.0))

    if not (np.isfinite(low) and np.isfinite(high)) or high < 0 or low > 1:
        return cut(estimate), "not estimable from these ratings"
    return cut(estimate), f"[{cut(low):.2f}, {cut(high):.2f}]"


def reliability(ratings: pd.DataFrame, scales: dict[str, tuple[int, int]] | None = None) -> pd.DataFrame:
    """Inter-rater agreement per clip set x criterion on first readings: ICC(2,1) = ICC(A,1) (two-way random,
    absolute agreement; Koo & Li's default for a fixed panel), ICC(3,1), ICC(2,k) and Krippendorff's ordinal
    alpha. Real clips and each model's clips are analysed separately, never pooled: pooling mixes the
    between-set difference into the between-clip variance and inflates the ICC."""
    rows = []
    first = ratings[ratings["reading"] == FIRST_READING]
    if "model" not in first:  # one clip set (e.g. a table from elsewhere without a model column)
        first = first.assign(model="all")
    by = _clip_set_column(first)
    for (clip_set, criterion), group in first.groupby([by, "criterion"], sort=True):
        row: dict = {"clip_set": clip_set, "model": group["model"].iloc[0], "criterion": criterion,
                     "raters": group["rater"].nunique(), "clips": group["clip_id"].nunique()}
        scale = (scales or {}).get(criterion)
        # ICC needs a complete raters x clips block (pingouin drops clips some rater has not rated yet);
        # Krippendorff's alpha uses every pairable rating, so a half-finished study still gets one.
        per_clip = group.groupby("clip_id")["rater"].nunique()
        row["icc_clips"] = int((per_clip == row["raters"]).sum())
        small = ("too few raters to estimate: at least 2 needed" if row["raters"] < 2 else
                 f"too few clips rated by every rater to estimate: at least {MIN_ICC_CLIPS} needed"
                 if row["icc_clips"] < MIN_ICC_CLIPS else "")
        if small:
            row["note"] = small
        elif group["score"].nunique() > 1:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    table = icc_table(group)
                notes = []
                for form, label in (("ICC2", "icc2_A1"), ("ICC3", "icc3_C1"), ("ICC2k", "icc2k_Ak")):
                    estimate, (low, high) = float(table.loc[form, "ICC"]), table.loc[form, "CI95"]
                    if form == "ICC2k" and float(table.loc["ICC2", "ICC"]) <= 0:
                        estimate, low, high = 0.0, float("nan"), float("nan")  # no agreement to average over raters
                    row[label], row[label + "_ci95"] = bounded_icc(estimate, low, high)
                    if estimate < 0:
                        notes.append(f"{form} estimate {estimate:.2f} shown as 0 (no agreement beyond chance)")
                if notes:
                    row["note"] = "; ".join(notes)
            except (AssertionError, ValueError, KeyError) as exc:
                row["note"] = f"ICC not computable yet ({row['icc_clips']} clips rated by every rater): {exc}"
        if row["raters"] >= 2:
            try:
                row["kripp_alpha_ordinal"] = krippendorff_alpha(group, level="ordinal", scale=scale)
            except ValueError as exc:
                row["note"] = (row.get("note", "") + f" Krippendorff's alpha not computable: {exc}").strip()
        rows.append(row)
    return pd.DataFrame(rows, columns=RELIABILITY_COLUMNS)


RELIABILITY_COLUMNS = ["clip_set", "model", "criterion", "raters", "clips", "icc_clips", "icc2_A1", "icc2_A1_ci95",
                       "icc3_C1", "icc3_C1_ci95", "icc2k_Ak", "icc2k_Ak_ci95", "kripp_alpha_ordinal", "note"]


def intra_rater(ratings: pd.DataFrame, scales: dict[str, tuple[int, int]] | None = None) -> pd.DataFrame:
    """Intra-rater agreement per criterion from repeat readings: each repeat paired with the same rater's
    first reading of that clip. Quadratic-weighted Cohen's kappa (scikit-learn; labels over the full scale
    when known), ICC(A,1) of first vs repeat reading (pingouin; units = rater x clip) and Krippendorff's
    ordinal alpha. Empty when the study has no repeats."""
    from sklearn.metrics import cohen_kappa_score

    columns = ["criterion", "raters", "pairs", "weighted_kappa_quadratic", "icc_A1", "icc_A1_ci95",
               "kripp_alpha_ordinal", "exact_agreement", "note"]
    if "reading" not in ratings or not (ratings["reading"] > FIRST_READING).any():
        return pd.DataFrame(columns=columns)
    rows = []
    for criterion, group in ratings.groupby("criterion", sort=True):
        first = group[group["reading"] == FIRST_READING].drop_duplicates(["rater", "clip_id"])
        repeat = group[group["reading"] > FIRST_READING].drop_duplicates(["rater", "clip_id"])
        pairs = first.merge(repeat, on=["rater", "clip_id"], suffixes=("_1", "_2"))
        if pairs.empty:
            continue
        a, b = pairs["score_1"].astype(float).to_numpy(), pairs["score_2"].astype(float).to_numpy()
        scale = (scales or {}).get(criterion)
        labels = list(range(scale[0], scale[1] + 1)) if scale else sorted(set(a) | set(b))
        row = {"criterion": criterion, "raters": pairs["rater"].nunique(), "pairs": len(pairs),
               "exact_agreement": float((a == b).mean())}
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore")
            kappa = cohen_kappa_score(a, b, weights="quadratic", labels=labels) if len(pairs) > 1 else np.nan
            row["weighted_kappa_quadratic"] = float(kappa)
            long = pd.DataFrame({"unit": np.tile(np.arange(len(pairs)), 2), "reading": np.repeat([0, 1], len(pairs)),
                                 "score": np.concatenate([a, b])})
            if len(pairs) < MIN_ICC_CLIPS:
                row["note"] = f"too few repeat readings for an ICC: at least {MIN_ICC_CLIPS} needed ({len(pairs)} so far)"
            elif long["score"].nunique() > 1:
                try:
                    table = icc_table(long, targets="unit", raters="reading")
                    row["icc_A1"], row["icc_A1_ci95"] = bounded_icc(float(table.loc["ICC2", "ICC"]),
                                                                    *table.loc["ICC2", "CI95"])
                except (AssertionError, ValueError, KeyError):
                    pass
            try:
                row["kripp_alpha_ordinal"] = krippendorff_alpha(long, level="ordinal", scale=scale, units="unit",
                                                                raters="reading")
            except ValueError:  # all pairs identical on one value: alpha undefined
                row["kripp_alpha_ordinal"] = float("nan")
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def turing_table(ratings: pd.DataFrame, by: list[str] = ("rater", "model")) -> pd.DataFrame:
    """Real-or-synthetic accuracy per group (one answer per clip reading, first readings), descriptive only:
    answers cluster by rater and clip, so the inference (with intervals) is the MRMC AUC (:func:`turing_mrmc`).
    For generated models accuracy is the share called synthetic (sensitivity); for real clips the share
    called real (specificity)."""
    by = list(by)
    answers = _answers(ratings, "turing_answer")
    rows = []
    for key, group in answers.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        correct = group["turing_correct"].astype(bool)
        rows.append({**dict(zip(by, key)), "n": len(group), "accuracy": float(correct.mean()),
                     "called_synthetic": float((group["turing_answer"] == "synthetic").mean()),
                     "mean_confidence": float(group["turing_confidence"].astype(float).mean())})
    return pd.DataFrame(rows, columns=[*by, "n", "accuracy", "called_synthetic", "mean_confidence"])


def _answers(ratings: pd.DataFrame, column: str) -> pd.DataFrame:
    """One answer per rater x clip (first readings) for a per-clip question such as the Turing answer."""
    return (ratings[(ratings["reading"] == FIRST_READING) & ratings[column].notna()]
            .drop_duplicates(["rater", "clip_id", "reading"]))


def turing_roc(ratings: pd.DataFrame) -> pd.DataFrame:
    """"Real or synthetic?" as an ROC task (as in MRMC reader studies), per rater and for all raters pooled.

    Each answer becomes a synthetic-ness score: +confidence when called synthetic, -confidence when called
    real (+-1 without a confidence scale), so AUC uses the confidence and 0.5 means raters cannot tell.
    Sensitivity is the share of generated clips called synthetic, specificity the share of real clips called
    real. AUC is NaN for a rater who saw only one kind of clip."""
    from sklearn.metrics import roc_auc_score

    columns = ["rater", "n", "n_real", "n_generated", "auc", "sensitivity", "specificity", "accuracy"]
    answers = _answers(ratings, "turing_answer")
    if answers.empty:
        return pd.DataFrame(columns=columns)
    truth = (answers["source"] != "real") if "source" in answers else (answers["model"] != "real")
    sign = np.where(answers["turing_answer"] == "synthetic", 1.0, -1.0)
    confidence = pd.to_numeric(answers["turing_confidence"], errors="coerce").fillna(1.0).to_numpy()
    scored = answers.assign(_truth=truth.to_numpy(), _score=sign * confidence,
                            _called=answers["turing_answer"].eq("synthetic").to_numpy())
    rows = []
    for rater, group in [*scored.groupby("rater", sort=True), ("all raters", scored)]:
        generated, real = group[group["_truth"]], group[~group["_truth"]]
        both = len(generated) > 0 and len(real) > 0
        rows.append({"rater": rater, "n": len(group), "n_real": len(real), "n_generated": len(generated),
                     "auc": float(roc_auc_score(group["_truth"], group["_score"])) if both else float("nan"),
                     "sensitivity": float(generated["_called"].mean()) if len(generated) else float("nan"),
                     "specificity": float((~real["_called"]).mean()) if len(real) else float("nan"),
                     "accuracy": float((group["_called"] == group["_truth"]).mean())})
    return pd.DataFrame(rows, columns=columns)


def fleiss_kappa_from_answers(answers: pd.DataFrame, column: str) -> tuple[float, int, int]:
    """Fleiss' kappa (statsmodels) for a categorical per-clip answer; ``(kappa, clips, raters_per_clip)``.

    Fleiss' kappa needs the same number of raters on every clip, so it uses the clips answered by the most
    common number of raters (the complete ones once a study is finished); NaN with fewer than 2 raters."""
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    per_clip = answers.groupby("clip_id")[column].apply(list)
    if per_clip.empty:
        return float("nan"), 0, 0
    counts = per_clip.map(len)
    raters = int(counts.mode().max())
    complete = per_clip[counts == raters]
    if raters < 2 or len(complete) < 2:
        return float("nan"), len(complete), raters
    table, _ = aggregate_raters(np.array(complete.tolist(), dtype=object))
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(fleiss_kappa(table, method="fleiss")), len(complete), raters


def answer_agreement(ratings: pd.DataFrame) -> pd.DataFrame:
    """Inter-rater agreement on the categorical answers (phase named, real or synthetic?): Fleiss' kappa on
    complete clips and Krippendorff's nominal alpha, which also uses clips some raters have not seen yet."""
    import krippendorff

    rows = []
    for question, column in (("phase", "phase_answer"), ("real_or_synthetic", "turing_answer")):
        answers = _answers(ratings, column)
        if answers.empty:
            continue
        kappa, clips, raters = fleiss_kappa_from_answers(answers, column)
        codes = {value: i for i, value in enumerate(sorted(answers[column].astype(str).unique()))}
        matrix = (answers.assign(_code=answers[column].astype(str).map(codes))
                  .pivot(index="rater", columns="clip_id", values="_code").to_numpy(dtype=float))
        alpha = float("nan")
        if matrix.shape[0] >= 2 and len(codes) >= 2:
            alpha = float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal"))
        rows.append({"question": question, "fleiss_kappa": kappa, "kappa_clips": clips, "kappa_raters": raters,
                     "kripp_alpha_nominal": alpha, "answers": len(answers)})
    return pd.DataFrame(rows, columns=["question", "fleiss_kappa", "kappa_clips", "kappa_raters",
                                       "kripp_alpha_nominal", "answers"])


def phase_table(ratings: pd.DataFrame) -> pd.DataFrame:
    """How often raters named the intended phase, per model x phase (first readings)."""
    answers = _answers(ratings, "phase_answer")
    if answers.empty:
        return pd.DataFrame(columns=["model", "phase", "n", "phase_accuracy"])
    return (answers.assign(correct=answers["phase_correct"].astype(float))
            .groupby(["model", "phase"]).agg(n=("correct", "size"), phase_accuracy=("correct", "mean")).reset_index())


def _bar(summary: pd.DataFrame, x: str, title: str, y_range: tuple[float, float] | None):
    import plotly.graph_objects as go

    from ophora.study.narrative import readable  # readable criterion, phase and model names on the axes

    fig = go.Figure()
    for model, group in summary.groupby("model", sort=True):
        fig.add_bar(name=readable(model), x=group[x].map(readable), y=group["mean"],
                    error_y=dict(type="data", symmetric=False, array=(group["ci_high"] - group["mean"]).fillna(0),
                                 arrayminus=(group["mean"] - group["ci_low"]).fillna(0)))
    fig.update_layout(title=title, barmode="group", yaxis_title="mean score (95% CI, raters and clips random)",
                      xaxis_title=readable(x),
                      legend_title="model", template="plotly_white")
    if y_range:
        fig.update_yaxes(range=list(y_range))
    return fig


def _common_scale(ratings: pd.DataFrame, criteria) -> tuple[float, float] | None:
    """The rating scale shared by ``criteria`` (the plot's axis), None when unknown or different."""
    known = rating_scales(ratings)
    scales = {known.get(str(c)) for c in set(criteria)}
    return scales.pop() if len(scales) == 1 else None


def figure_by_criterion(ratings: pd.DataFrame, y_range: tuple[float, float] | None = None):
    """Mean score per criterion, one bar per model (the paper's per-criterion comparison); the axis spans
    the rating scale when the table carries it."""
    summary = score_summary(ratings)
    return _bar(summary, "criterion", "Scores by criterion", y_range or _common_scale(ratings, summary["criterion"]))


def figure_by_phase(ratings: pd.DataFrame, criterion: str | None = None, y_range: tuple[float, float] | None = None):
    """Mean score per intended surgical phase, one bar per model (all criteria pooled unless one is named)."""
    return _bar(phase_summary(ratings, criterion), "phase",
                "Scores by phase" + (f" ({criterion})" if criterion else " (all criteria)"),
                y_range or _common_scale(ratings, [criterion] if criterion else ratings["criterion"].unique()))


def phase_summary(ratings: pd.DataFrame, criterion: str | None = None) -> pd.DataFrame:
    """Mean score per model x intended phase with intervals, for one criterion or all criteria pooled (one
    score per rater x clip: the mean over criteria; cut at the scale the criteria share)."""
    data = tidy_scores(ratings)
    if "phase" not in data:
        return pd.DataFrame(columns=["model", "phase", "criterion", *SUMMARY_COLUMNS])
    scale = _common_scale(ratings, [criterion] if criterion else data["criterion"].unique())
    if criterion is None:
        data = data.groupby(["model", "phase", "rater", "clip"], as_index=False)["score"].mean().assign(
            criterion="all criteria")
    else:
        data = data[data["criterion"] == criterion]
    label = criterion or "all criteria"
    return score_summary(data, by_phase=True, scales={label: scale} if scale else {})


@dataclass
class StudyResults:
    """Everything a report shows, computed once from the tidy ratings table."""

    ratings: pd.DataFrame
    by_model_criterion: pd.DataFrame
    by_model_phase: pd.DataFrame
    score_differences: pd.DataFrame
    reliability: pd.DataFrame
    turing_by_rater_model: pd.DataFrame
    turing_by_model: pd.DataFrame
    turing_roc: pd.DataFrame
    answer_agreement: pd.DataFrame
    phase_accuracy: pd.DataFrame
    intra_rater: pd.DataFrame = field(default_factory=pd.DataFrame)
    turing_mrmc_data: pd.DataFrame = field(default_factory=pd.DataFrame)  # reader, modality, case, truth, rating
    turing_mrmc: MRMCResult | None = None
    turing_note: str = ""
    title: str = "Reader study"
    # Pre-stated in the study file: "could not reliably tell" needs the AUC interval below 0.5 + margin.
    turing_margin: float = TURING_MARGIN
    # Mean over criteria per model x phase, with intervals: the narrative's phase ranking.
    by_model_phase_pooled: pd.DataFrame = field(default_factory=pd.DataFrame)
    # Blinding differences the study lead accepted at import: a reader of the results must see them.
    accepted_differences: tuple[str, ...] = ()
    # The record these results came from (study verify): verified, rows, chain_head, line. Every export and
    # report carries it, so a published figure can be checked against the database later.
    record: dict = field(default_factory=dict)

    @property
    def turing_auc(self) -> pd.DataFrame:
        """Reader-averaged AUC per model, RRRC / FRRC / RRFC intervals (full precision)."""
        return self.turing_mrmc.modality_table() if self.turing_mrmc else pd.DataFrame()

    @property
    def turing_auc_differences(self) -> pd.DataFrame:
        return self.turing_mrmc.difference_table() if self.turing_mrmc else pd.DataFrame()

    @property
    def turing_reader_auc(self) -> pd.DataFrame:
        return self.turing_mrmc.reader_table() if self.turing_mrmc else pd.DataFrame()


def turing_mrmc(ratings: pd.DataFrame) -> tuple[pd.DataFrame, MRMCResult | None, str]:
    """The Turing test as MRMC ROC data and its OR analysis: ``(mrmc table, result or None, note)``.
    Raters who have not answered every clip are left out of the analysis (OR needs complete readers)."""
    data = turing_mrmc_frame(ratings)
    if data.empty:
        return data, None, ""
    complete, dropped = complete_readers(data)
    note = (f"AUC analysis uses the {complete['reader'].nunique()} raters who answered every clip; not yet "
            f"complete: {', '.join(dropped)}.") if dropped else ""
    if complete.empty:
        return data, None, note or "No rater has answered every clip yet."
    try:
        return data, mrmc_analysis(complete), note
    except ValueError as error:  # e.g. no real clips yet: AUC needs both kinds
        return data, None, (note + f" No AUC yet: {error}").strip()


def compute_results(ratings: pd.DataFrame, *, scales: dict[str, tuple[int, int]] | None = None,
                    title: str = "Reader study", turing_margin: float = TURING_MARGIN) -> StudyResults:
    """All tables of a report (a study under way too: reliability uses what is pairable so far)."""
    ratings = with_scales(ratings, scales)
    mrmc_data, mrmc_result, turing_note = turing_mrmc(ratings)
    return StudyResults(
        ratings=ratings,
        by_model_criterion=score_summary(ratings),
        by_model_phase=score_summary(ratings, by_phase=True),
        score_differences=score_differences(ratings),
        reliability=reliability(ratings, scales),
        turing_by_rater_model=turing_table(ratings, ["rater", "model"]),
        turing_by_model=turing_table(ratings, ["model"]),
        turing_roc=turing_roc(ratings),
        answer_agreement=answer_agreement(ratings),
        phase_accuracy=phase_table(ratings),
        intra_rater=intra_rater(ratings, scales),
        turing_mrmc_data=mrmc_data,
        turing_mrmc=mrmc_result,
        turing_note=turing_note,
        title=title,
        turing_margin=turing_margin,
        by_model_phase_pooled=phase_summary(ratings) if not ratings.empty else pd.DataFrame(),
    )


def results_for_study(store, slug: str, verification=None) -> StudyResults:
    """Results straight from a :class:`~ophora.study.store.StudyStore`, with the record check they came from
    (``verification``: a :class:`~ophora.study.chain.Verification` already made; else it is made here)."""
    verification = verification or store.verify_record(slug)
    definition = store.definition(slug)
    scales = {c.name: (c.scale.min, c.scale.max) for c in definition.criteria}
    results = compute_results(store.ratings_frame(slug), scales=scales, title=definition.title,
                              turing_margin=definition.turing_margin)
    results.accepted_differences = tuple(w["detail"] for w in store.accepted_differences(slug))
    results.record = {"study": slug, "verified": verification.ok, "rows": verification.total_rows,
                      "chain_head": verification.head, "check": verification.line}
    return results


def _tables(results: StudyResults) -> dict[str, pd.DataFrame]:
    ratings = results.ratings.copy()
    if "rated_at" in ratings:
        ratings["rated_at"] = ratings["rated_at"].astype(str)  # Excel refuses time-zone-aware datetimes
    return {"ratings": ratings, "by_model_criterion": results.by_model_criterion,
            "by_model_phase": results.by_model_phase, "score_differences": results.score_differences,
            "reliability": results.reliability, "intra_rater": results.intra_rater,
            "turing_auc": results.turing_auc, "turing_auc_differences": results.turing_auc_differences,
            "turing_reader_auc": results.turing_reader_auc,
            "turing_by_rater_model": results.turing_by_rater_model, "turing_by_model": results.turing_by_model,
            "turing_roc": results.turing_roc, "answer_agreement": results.answer_agreement,
            "phase_accuracy": results.phase_accuracy, "turing_mrmc": results.turing_mrmc_data,
            **({"record": pd.DataFrame([results.record])} if results.record else {})}


def export_csv(results: StudyResults, folder: str | Path) -> list[Path]:
    """One CSV per table (``ratings.csv`` is the tidy table, one row per rater x reading x criterion;
    ``turing_mrmc.csv`` the Turing answers as MRMC data: reader, modality, case, truth, rating) plus
    ``turing.imrmc``, the same data in FDA iMRMC's input format (complete readers only). Every file names
    each clip's source and model, so each is owner-only (mode 600)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, table in _tables(results).items():
        path = owner_only(folder / f"{name}.csv")
        table.to_csv(path, index=False)
        paths.append(path)
    complete, _ = complete_readers(results.turing_mrmc_data)
    if results.turing_mrmc is not None and not complete.empty:
        paths.append(write_imrmc(complete, folder / "turing.imrmc", description=f"{results.title}: visual Turing test"))
    return paths


def export_excel(results: StudyResults, path: str | Path) -> Path:
    """Every table as a sheet; owner-only (mode 600): the ratings sheet unblinds every clip."""
    path = owner_only(path)
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        for name, table in _tables(results).items():
            table.to_excel(writer, sheet_name=name[:31], index=False)
    return path


def _record_html(record: dict) -> str:
    """The record check, first thing in a report: what the figures came from (red when it failed)."""
    if not record:
        return ""
    style = "" if record["verified"] else " style='color:#b00020;font-weight:bold'"
    return f"<p class='record' id='record'{style}>{html.escape(record['check'])}</p>"


def export_html(results: StudyResults, path: str | Path) -> Path:
    """A single self-contained HTML file (plotly.js inlined: it opens offline, e.g. attached to an email)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from ophora.study.narrative import summary_html

    ratings = results.ratings
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(results.title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px}.summary p{font-size:16px;"
             "line-height:1.5;max-width:60em}</style></head><body>",
             f"<h1>{html.escape(results.title)}</h1>",
             _record_html(results.record),
             f"<div class='summary' id='summary'>{summary_html(results)}</div>"]
    if results.accepted_differences:
        parts.append("<h2>Accepted blinding differences</h2><p>The study lead accepted these differences between "
                     "clip sets that raters may perceive; weigh the results accordingly.</p><ul>"
                     + "".join(f"<li>{html.escape(w)}</li>" for w in results.accepted_differences) + "</ul>")
    if not ratings.empty:
        include = True
        for fig in (figure_by_criterion(ratings), figure_by_phase(ratings)):
            parts.append(fig.to_html(full_html=False, include_plotlyjs=True if include else False))
            include = False
    parts.append("<h2>Methods</h2><p>First readings only. Mean scores: 95% generalized confidence intervals with "
                 "raters and clips as crossed random effects (moment estimates of the rater, clip and error "
                 "variances; each mean square replaced by its chi-square pivot), cut at the ends of the rating "
                 "scale; SE and Satterthwaite df in the tables for reference; no interval with fewer than 3 raters "
                 "or 3 clips (the note says so). Differences between models: t intervals with Satterthwaite df, "
                 "p-values Holm-adjusted over all comparisons (intervals not adjusted). Real or synthetic?: each "
                 "answer scored +confidence (synthetic) or -confidence (real); reader-averaged trapezoidal AUC per "
                 "model against the real clips, Obuchowski-Rockette analysis with Hillis denominator df and "
                 "jackknife covariances (rrrc: readers and clips random; frrc: these readers; rrfc: these clips); "
                 "the AUC interval (ci_low, ci_high) is computed on the logit scale, so it stays inside 0-1; "
                 "wald_low and wald_high are the AUC-scale interval that OR-DBM MRMC and RJafroc print; no "
                 f"interval with fewer than 3 raters or 3 real and 3 generated clips. 'Could not reliably tell' "
                 f"needs the whole AUC interval below {0.5 + results.turing_margin:.2f} (the margin stated in the "
                 "study file); otherwise the result is inconclusive. Agreement per clip set: ICC(2,1)=ICC(A,1) "
                 "two-way random absolute agreement, ICC(3,1), ICC(2,k) (pingouin; shown inside 0-1, a negative "
                 "estimate as 0; at least 5 clips rated by every rater), Krippendorff's alpha, ordinal; "
                 "intra-rater: quadratic-weighted kappa, ICC(A,1) and alpha between first and repeat readings. The "
                 "tables below are at full precision; the same tables are in the CSV and Excel exports.</p>")
    for heading, table in (("Scores by model and criterion", results.by_model_criterion),
                           ("Score differences between models (Holm-adjusted p)", results.score_differences),
                           ("Scores by model, phase and criterion", results.by_model_phase),
                           ("Real or synthetic? AUC per model (Obuchowski-Rockette)", results.turing_auc),
                           ("Real or synthetic? AUC differences between models", results.turing_auc_differences),
                           ("Real or synthetic? AUC per rater", results.turing_reader_auc),
                           ("Inter-rater reliability per clip set", results.reliability),
                           ("Intra-rater agreement (repeat readings)", results.intra_rater),
                           ("Real or synthetic? by model", results.turing_by_model),
                           ("Real or synthetic? by rater and model", results.turing_by_rater_model),
                           ("Real or synthetic? as ROC, per rater and pooled", results.turing_roc),
                           ("Agreement on phase and real-or-synthetic answers", results.answer_agreement),
                           ("Phase named correctly", results.phase_accuracy)):
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(table.to_html(index=False, float_format=lambda v: f"{v:.6g}", na_rep="-") if not table.empty
                     else "<p>No data yet.</p>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
