"""Study results from the tidy ratings table: means with bootstrap CIs, agreement, Turing-test accuracy,
the paper-style figures and CSV / Excel / HTML exports.

Why established packages: ICC forms come from pingouin (Shrout & Fleiss / McGraw & Wong), Krippendorff's
alpha from ``krippendorff``, Fleiss' kappa from ``statsmodels``, ROC AUC from ``scikit-learn``, bootstrap CIs
from ``scipy.stats.bootstrap``; the tests check them against published values so a report can name its methods.
"""

from __future__ import annotations

import html
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

FIRST_READING = 0


def bootstrap_mean_ci(values, *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile bootstrap CI. With fewer than two values (or no spread) the CI is the mean itself
    or NaN, never an error, so a half-finished study still gets a report."""
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=float)
    data = data[~np.isnan(data)]
    if data.size == 0:
        return (float("nan"),) * 3
    mean = float(data.mean())
    if data.size < 2:
        return mean, float("nan"), float("nan")
    if np.all(data == data[0]):
        return mean, mean, mean
    res = bootstrap((data,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method="percentile",
                    rng=np.random.default_rng(seed))
    return mean, float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarize(ratings: pd.DataFrame, by: list[str], *, seed: int = 0, first_reading_only: bool = True) -> pd.DataFrame:
    """Mean score with a bootstrap 95% CI per group, e.g. ``by=["model", "criterion"]`` or
    ``["model", "phase", "criterion"]``. Repeat readings are left out by default (they measure the rater)."""
    data = ratings[ratings["reading"] == FIRST_READING] if first_reading_only and "reading" in ratings else ratings
    rows = []
    for key, group in data.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        mean, low, high = bootstrap_mean_ci(group["score"].to_numpy(), seed=seed)
        rows.append({**dict(zip(by, key)), "n": len(group), "mean": mean, "ci_low": low, "ci_high": high,
                     "sd": float(group["score"].std(ddof=1)) if len(group) > 1 else float("nan")})
    return pd.DataFrame(rows, columns=[*by, "n", "mean", "ci_low", "ci_high", "sd"])


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
    ``scale`` gives the full value domain so unused scale points still count for ordinal distances."""
    import krippendorff

    matrix = ratings.pivot_table(index=raters, columns=units, values=score, aggfunc="first")
    kwargs = {}
    if scale is not None and level in ("ordinal", "nominal"):
        kwargs["value_domain"] = list(range(scale[0], scale[1] + 1))
    return float(krippendorff.alpha(reliability_data=matrix.to_numpy(dtype=float), level_of_measurement=level, **kwargs))


def reliability(ratings: pd.DataFrame, scales: dict[str, tuple[int, int]] | None = None) -> pd.DataFrame:
    """Inter-rater agreement per criterion on first readings: ICC(2,1) = ICC(A,1) (two-way random, absolute
    agreement; Koo & Li's default for a fixed panel), ICC(3,1), ICC(2,k) and Krippendorff's ordinal alpha;
    plus intra-rater alpha from repeat readings where the study has them."""
    rows = []
    first = ratings[ratings["reading"] == FIRST_READING]
    for criterion, group in first.groupby("criterion", sort=True):
        row: dict = {"criterion": criterion, "raters": group["rater"].nunique(), "clips": group["clip_id"].nunique()}
        scale = (scales or {}).get(criterion)
        # ICC needs a complete raters x clips block (pingouin drops clips some rater has not rated yet);
        # Krippendorff's alpha uses every pairable rating, so a half-finished study still gets one.
        per_clip = group.groupby("clip_id")["rater"].nunique()
        row["icc_clips"] = int((per_clip == row["raters"]).sum())
        if row["raters"] >= 2 and group["score"].nunique() > 1:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    table = icc_table(group)
                for form, label in (("ICC2", "icc2_A1"), ("ICC3", "icc3_C1"), ("ICC2k", "icc2k_Ak")):
                    row[label] = float(table.loc[form, "ICC"])
                    row[label + "_ci95"] = f"[{table.loc[form, 'CI95'][0]:.2f}, {table.loc[form, 'CI95'][1]:.2f}]"
            except (AssertionError, ValueError, KeyError) as exc:
                row["note"] = f"ICC not computable yet ({row['icc_clips']} clips rated by every rater): {exc}"
            try:
                row["kripp_alpha_ordinal"] = krippendorff_alpha(group, level="ordinal", scale=scale)
            except ValueError as exc:
                row["note"] = (row.get("note", "") + f" Krippendorff's alpha not computable: {exc}").strip()
        repeats = ratings[(ratings["criterion"] == criterion) & (ratings["reading"] > FIRST_READING)]
        if len(repeats) >= 2:
            pairs = ratings[ratings["criterion"] == criterion].copy()
            pairs["unit"] = pairs["rater"].astype(str) + "/" + pairs["clip_id"].astype(str)
            pairs = pairs[pairs["unit"].isin(repeats["rater"].astype(str) + "/" + repeats["clip_id"].astype(str))]
            try:
                row["intra_rater_alpha_ordinal"] = krippendorff_alpha(pairs, level="ordinal", scale=scale,
                                                                      units="unit", raters="reading")
            except ValueError:  # all repeat pairs identical on a single value: alpha undefined
                row["intra_rater_alpha_ordinal"] = float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def turing_table(ratings: pd.DataFrame, by: list[str] = ("rater", "model")) -> pd.DataFrame:
    """Real-or-synthetic accuracy per group (one answer per clip reading, first readings). For generated
    models accuracy is the share called synthetic (sensitivity); for real clips the share called real
    (specificity). Near 50% overall means raters cannot tell."""
    by = list(by)
    answers = _answers(ratings, "turing_answer")
    rows = []
    for key, group in answers.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        correct = group["turing_correct"].astype(bool)
        mean, low, high = bootstrap_mean_ci(correct.astype(float).to_numpy())
        rows.append({**dict(zip(by, key)), "n": len(group), "accuracy": mean, "ci_low": low, "ci_high": high,
                     "called_synthetic": float((group["turing_answer"] == "synthetic").mean()),
                     "mean_confidence": float(group["turing_confidence"].astype(float).mean())})
    return pd.DataFrame(rows, columns=[*by, "n", "accuracy", "ci_low", "ci_high", "called_synthetic", "mean_confidence"])


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

    fig = go.Figure()
    for model, group in summary.groupby("model", sort=True):
        fig.add_bar(name=str(model), x=group[x].astype(str), y=group["mean"],
                    error_y=dict(type="data", symmetric=False, array=(group["ci_high"] - group["mean"]).fillna(0),
                                 arrayminus=(group["mean"] - group["ci_low"]).fillna(0)))
    fig.update_layout(title=title, barmode="group", yaxis_title="mean score (95% bootstrap CI)", xaxis_title=x,
                      legend_title="model", template="plotly_white")
    if y_range:
        fig.update_yaxes(range=list(y_range))
    return fig


def figure_by_criterion(ratings: pd.DataFrame, y_range: tuple[float, float] | None = None):
    """Mean score per criterion, one bar per model (the paper's per-criterion comparison)."""
    return _bar(summarize(ratings, ["model", "criterion"]), "criterion", "Scores by criterion", y_range)


def figure_by_phase(ratings: pd.DataFrame, criterion: str | None = None, y_range: tuple[float, float] | None = None):
    """Mean score per intended surgical phase, one bar per model (all criteria pooled unless one is named)."""
    data = ratings if criterion is None else ratings[ratings["criterion"] == criterion]
    title = "Scores by phase" + (f" ({criterion})" if criterion else " (all criteria)")
    return _bar(summarize(data, ["model", "phase"]), "phase", title, y_range)


@dataclass
class StudyResults:
    """Everything a report shows, computed once from the tidy ratings table."""

    ratings: pd.DataFrame
    by_model_criterion: pd.DataFrame
    by_model_phase: pd.DataFrame
    reliability: pd.DataFrame
    turing_by_rater_model: pd.DataFrame
    turing_by_model: pd.DataFrame
    turing_roc: pd.DataFrame
    answer_agreement: pd.DataFrame
    phase_accuracy: pd.DataFrame
    title: str = "Reader study"
    # Blinding differences the study lead accepted at import: a reader of the results must see them.
    accepted_differences: tuple[str, ...] = ()


def compute_results(ratings: pd.DataFrame, *, scales: dict[str, tuple[int, int]] | None = None,
                    title: str = "Reader study", seed: int = 0,
                    reliability_table: pd.DataFrame | None = None) -> StudyResults:
    """All tables of a report. ``reliability_table`` replaces the computed reliability (the app passes one
    restricted to the raters who finished while a study is under way)."""
    return StudyResults(
        ratings=ratings,
        by_model_criterion=summarize(ratings, ["model", "criterion"], seed=seed),
        by_model_phase=summarize(ratings, ["model", "phase", "criterion"], seed=seed),
        reliability=reliability(ratings, scales) if reliability_table is None else reliability_table,
        turing_by_rater_model=turing_table(ratings, ["rater", "model"]),
        turing_by_model=turing_table(ratings, ["model"]),
        turing_roc=turing_roc(ratings),
        answer_agreement=answer_agreement(ratings),
        phase_accuracy=phase_table(ratings),
        title=title,
    )


def results_for_study(store, slug: str, *, seed: int = 0) -> StudyResults:
    """Results straight from a :class:`~ophora.study.store.StudyStore`."""
    definition = store.definition(slug)
    scales = {c.name: (c.scale.min, c.scale.max) for c in definition.criteria}
    results = compute_results(store.ratings_frame(slug), scales=scales, title=definition.title, seed=seed)
    results.accepted_differences = tuple(w["detail"] for w in store.accepted_differences(slug))
    return results


def _tables(results: StudyResults) -> dict[str, pd.DataFrame]:
    ratings = results.ratings.copy()
    if "rated_at" in ratings:
        ratings["rated_at"] = ratings["rated_at"].astype(str)  # Excel refuses time-zone-aware datetimes
    return {"ratings": ratings, "by_model_criterion": results.by_model_criterion,
            "by_model_phase": results.by_model_phase, "reliability": results.reliability,
            "turing_by_rater_model": results.turing_by_rater_model, "turing_by_model": results.turing_by_model,
            "turing_roc": results.turing_roc, "answer_agreement": results.answer_agreement,
            "phase_accuracy": results.phase_accuracy}


def export_csv(results: StudyResults, folder: str | Path) -> list[Path]:
    """One CSV per table (``ratings.csv`` is the tidy table, one row per rater x reading x criterion)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, table in _tables(results).items():
        path = folder / f"{name}.csv"
        table.to_csv(path, index=False)
        paths.append(path)
    return paths


def export_excel(results: StudyResults, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        for name, table in _tables(results).items():
            table.to_excel(writer, sheet_name=name[:31], index=False)
    return path


def export_html(results: StudyResults, path: str | Path) -> Path:
    """A single self-contained HTML file (plotly.js inlined: it opens offline, e.g. attached to an email)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ratings = results.ratings
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(results.title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px}</style></head><body>",
             f"<h1>{html.escape(results.title)}</h1>",
             f"<p>{ratings['rater'].nunique()} raters, {ratings['clip_id'].nunique()} clips, "
             f"{len(ratings)} scores. Means with 95% percentile bootstrap CIs (first readings); agreement: "
             f"ICC(2,1)=ICC(A,1) two-way random absolute agreement, ICC(3,1), ICC(2,k) (pingouin), "
             f"Krippendorff's alpha, ordinal.</p>"]
    if results.accepted_differences:
        parts.append("<h2>Accepted blinding differences</h2><p>The study lead accepted these differences between "
                     "clip sets that raters may perceive; weigh the results accordingly.</p><ul>"
                     + "".join(f"<li>{html.escape(w)}</li>" for w in results.accepted_differences) + "</ul>")
    if not ratings.empty:
        include = True
        for fig in (figure_by_criterion(ratings), figure_by_phase(ratings)):
            parts.append(fig.to_html(full_html=False, include_plotlyjs=True if include else False))
            include = False
    for heading, table in (("Scores by model and criterion", results.by_model_criterion),
                           ("Scores by model, phase and criterion", results.by_model_phase),
                           ("Inter- and intra-rater reliability", results.reliability),
                           ("Real or synthetic? by model", results.turing_by_model),
                           ("Real or synthetic? by rater and model", results.turing_by_rater_model),
                           ("Real or synthetic? as ROC (AUC 0.5: raters cannot tell)", results.turing_roc),
                           ("Agreement on phase and real-or-synthetic answers", results.answer_agreement),
                           ("Phase named correctly", results.phase_accuracy)):
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(table.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-") if not table.empty
                     else "<p>No data yet.</p>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
