"""Planning a reader study from pilot variance components: how many raters and clips.

Two questions, both answered with the variance components of a pilot (a running or finished study, a score
CSV, or an MRMC CSV):

* Mean scores: raters x clips (per model) for a target 95% CI half-width, using the crossed random-effects
  variance ``var_rater / R + var_clip / C + var_error / (R C)`` and the generalized interval that the
  analysis (:mod:`ophora.study.mixed`) will use, at the expected mean squares.
* Real or synthetic? AUC: readers x clips for a given power to detect an AUC difference between two models
  (two-sided), or to show that a model's AUC is below 0.5 + margin (raters cannot tell; one-sided), by the
  Obuchowski-Rockette sample-size method of Hillis, Obuchowski & Berbaum (2008/2011): error variance and
  covariances scale with pilot cases / planned cases, power from the noncentral F (or t) with Hillis' ddf.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

READER_CHOICES = (3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30)


# ------------------------------------------------------------------ mean scores
def mean_halfwidth(var_rater: float, var_clip: float, var_error: float, raters: int, clips: int,
                   confidence: float = 0.95) -> float:
    """Expected CI half-width of a mean score with ``raters`` x ``clips`` (every rater rates every clip):
    the analysis's generalized interval at the expected mean squares."""
    from ophora.study.mixed import generalized_halfwidth

    R, C = raters, clips
    ms_r, ms_c, ms_e = var_error + C * var_rater, var_error + R * var_clip, var_error
    return generalized_halfwidth([(ms_r / (R * C), R - 1), (ms_c / (R * C), C - 1),
                                  (-ms_e / (R * C), (R - 1) * (C - 1))], confidence)


def clips_for_halfwidth(var_rater: float, var_clip: float, var_error: float, raters: int, target: float, *,
                        max_clips: int = 5000, confidence: float = 0.95) -> int | None:
    """Fewest clips giving an expected half-width <= ``target`` with ``raters`` raters; None if unreachable
    (the rater variance alone, var_rater / R, may already be too large)."""
    if mean_halfwidth(var_rater, var_clip, var_error, raters, max_clips, confidence) > target:
        return None
    low, high = 2, max_clips
    while low < high:  # half-width decreases with clips
        mid = (low + high) // 2
        if mean_halfwidth(var_rater, var_clip, var_error, raters, mid, confidence) <= target:
            high = mid
        else:
            low = mid + 1
    return low


def score_plan(components: pd.DataFrame, target: float, *, readers=READER_CHOICES,
               confidence: float = 0.95) -> pd.DataFrame:
    """Per criterion (pilot components averaged over models; the largest of each would be the cautious
    choice and is what ``components`` rows per model let you check): clips per model needed for each number
    of raters. ``components``: columns criterion, var_rater, var_clip, var_error (score_summary's output)."""
    rows = []
    pooled = components.groupby("criterion")[["var_rater", "var_clip", "var_error"]].mean()
    for criterion, c in pooled.iterrows():
        if not np.isfinite(c).all():
            continue
        for r in readers:
            clips = clips_for_halfwidth(c.var_rater, c.var_clip, c.var_error, r, target, confidence=confidence)
            rows.append({"criterion": criterion, "raters": r, "clips_per_model": clips or np.nan,
                         "expected_halfwidth": mean_halfwidth(c.var_rater, c.var_clip, c.var_error, r, clips,
                                                              confidence) if clips else np.nan,
                         "var_rater": c.var_rater, "var_clip": c.var_clip, "var_error": c.var_error})
    return pd.DataFrame(rows, columns=["criterion", "raters", "clips_per_model", "expected_halfwidth", "var_rater",
                                       "var_clip", "var_error"])


# ------------------------------------------------------------------ AUC (Obuchowski-Rockette)
@dataclass(frozen=True)
class ORPilot:
    """OR variance components of a pilot and its number of cases (per modality)."""

    var_r: float
    var_tr: float
    cov1: float
    cov2: float
    cov3: float
    var_error: float
    cases: int
    modalities: int = 2

    @classmethod
    def from_result(cls, result) -> "ORPilot":
        """From :func:`ophora.study.mrmc.mrmc_analysis`. A one-model pilot has no reader x model or
        between-model covariances: it plans the margin question only."""
        vc = result.var_components
        cases = int(round(np.mean([result.positives[m] + result.negatives[m] for m in result.modalities])))
        two = len(result.modalities) > 1
        return cls(vc["var_r"], vc["var_tr"] if two else 0.0, vc["cov1"] if two else float("nan"), vc["cov2"],
                   vc["cov3"] if two else float("nan"), vc["var_error"], cases, len(result.modalities))

    def scaled(self, cases: int) -> tuple[float, float, float, float]:
        """Error variance and covariances for ``cases`` cases (they shrink like 1 / cases)."""
        f = self.cases / cases
        return self.var_error * f, self.cov1 * f, self.cov2 * f, self.cov3 * f


def power_difference(pilot: ORPilot, readers: int, cases: int, effect: float, alpha: float = 0.05) -> float:
    """Power of the RRRC F test (two modalities) to detect an AUC difference ``effect``."""
    if pilot.modalities < 2:
        raise ValueError("planning an AUC difference needs a pilot with at least two models (modalities); "
                         "a one-model pilot plans the margin question (--auc-margin) only")
    var, cov1, cov2, cov3 = pilot.scaled(cases)
    var_tr = max(pilot.var_tr, 0.0)
    ms_tr = var_tr + var - cov1 - max(cov2 - cov3, 0.0)  # expected MS(T*R)
    den = ms_tr + readers * max(cov2 - cov3, 0.0)
    if den <= 0 or ms_tr <= 0:
        return float("nan")
    ddf = den ** 2 / (ms_tr ** 2 / (readers - 1))
    ncp = readers * effect ** 2 / (2 * den)
    critical = stats.f.ppf(1 - alpha, 1, ddf)
    return float(stats.ncf.sf(critical, 1, ddf, ncp))


def power_margin(pilot: ORPilot, readers: int, cases: int, margin: float, expected_auc: float = 0.5,
                 alpha: float = 0.05) -> float:
    """Power to show one model's AUC < 0.5 + ``margin`` (raters cannot tell) when its true AUC is
    ``expected_auc``: one-sided single-modality OR test, noncentral t with Hillis ddf."""
    var, _, cov2, _ = pilot.scaled(cases)
    var_reader = max(pilot.var_r + max(pilot.var_tr, 0.0), 0.0)  # single modality: reader + reader x modality
    ms_r = var_reader + var - cov2  # expected MS(R) of one modality
    den = ms_r + readers * max(cov2, 0.0)
    if den <= 0 or ms_r <= 0:
        return float("nan")
    df = den ** 2 / (ms_r ** 2 / (readers - 1))
    se = np.sqrt(den / readers)
    ncp = (0.5 + margin - expected_auc) / se
    return float(stats.nct.sf(stats.t.ppf(1 - alpha, df), df, ncp))


def cases_for_power(power_fn, target: float, *, max_cases: int = 20000) -> int | None:
    """Fewest cases with power >= target (power grows with cases); None if even ``max_cases`` is not enough."""
    if not power_fn(max_cases) >= target:
        return None
    low, high = 4, max_cases
    while low < high:
        mid = (low + high) // 2
        if power_fn(mid) >= target:
            high = mid
        else:
            low = mid + 1
    return low


def auc_plan(pilot: ORPilot, *, power: float = 0.8, alpha: float = 0.05, effect: float | None = None,
             margin: float | None = None, expected_auc: float = 0.5, readers=READER_CHOICES) -> pd.DataFrame:
    """Clips per model comparison (real + generated, pilot's ratio) for each number of readers."""
    rows = []
    for r in readers:
        if effect is not None:
            k = cases_for_power(lambda c: power_difference(pilot, r, c, effect, alpha), power)
            rows.append({"question": f"detect an AUC difference of {effect:g} between two models", "readers": r,
                         "clips": k or np.nan, "power": power_difference(pilot, r, k, effect, alpha) if k else np.nan})
        if margin is not None:
            k = cases_for_power(lambda c: power_margin(pilot, r, c, margin, expected_auc, alpha), power)
            rows.append({"question": f"show AUC < {0.5 + margin:g} when it is {expected_auc:g}", "readers": r,
                         "clips": k or np.nan, "power": power_margin(pilot, r, k, margin, expected_auc, alpha) if k else np.nan})
    return pd.DataFrame(rows, columns=["question", "readers", "clips", "power"])


# ------------------------------------------------------------------ pilots
def pilot_from_scores(frame: pd.DataFrame) -> pd.DataFrame:
    from ophora.study.analysis import score_summary

    return score_summary(frame)


def pilot_from_mrmc(frame: pd.DataFrame) -> ORPilot:
    from ophora.study.mrmc import mrmc_analysis

    return ORPilot.from_result(mrmc_analysis(frame))


def plan_markdown(scores: pd.DataFrame | None, auc: pd.DataFrame | None, *, target: float | None) -> str:
    """Short readable summary of a plan (the tables carry the detail)."""
    lines = []
    if scores is not None and not scores.empty and target is not None:
        lines.append(f"**Mean scores, 95% CI half-width {target:g}** (clips per model, every rater rates every clip):")
        for criterion, group in scores.groupby("criterion"):
            options = [f"{r.raters} raters x {int(r.clips_per_model)} clips" for r in group.itertuples()
                       if pd.notna(r.clips_per_model)][:4]
            lines.append(f"- {criterion}: " + ("; ".join(options) if options else
                                              "not reachable with up to 30 raters (rater variance too large)"))
    if auc is not None and not auc.empty:
        for question, group in auc.groupby("question", sort=False):
            options = [f"{int(r.readers)} readers x {int(r.clips)} clips" for r in group.itertuples()
                       if pd.notna(r.clips)][:4]
            lines.append(f"**{question[0].upper() + question[1:]}**: " + ("; ".join(options) if options else
                                                                          "not reachable with these readers"))
    return "\n".join(lines) if lines else "Nothing to plan: give a target half-width or an AUC question."


@dataclass(frozen=True)
class Plan:
    scores: pd.DataFrame  # per criterion x raters: clips per model for the target half-width
    auc: pd.DataFrame  # per question x readers: clips for the target power
    text: str  # readable summary (Markdown)

    def to_json(self) -> dict:
        from ophora.study.mrmc import json_records

        return {"scores": json_records(self.scores), "auc": json_records(self.auc)}


def make_plan(*, score_pilot: pd.DataFrame | None = None, mrmc_pilot: pd.DataFrame | None = None,
              half_width: float | None = 0.25, auc_difference: float | None = 0.05, auc_margin: float | None = None,
              expected_auc: float = 0.5, power: float = 0.8, alpha: float = 0.05, readers=READER_CHOICES) -> Plan:
    """A plan from pilot data: ``score_pilot`` a tidy score table (rater, clip, model, criterion, score),
    ``mrmc_pilot`` an MRMC table (reader, modality, case, truth, rating). Raises ``ValueError`` with what is
    missing (e.g. a one-model MRMC pilot asked for an AUC difference)."""
    for name, value, low, high in (("half-width", half_width, 0, None), ("AUC difference", auc_difference, 0, 0.5),
                                   ("AUC margin", auc_margin, 0, 0.5), ("power", power, alpha, 1),
                                   ("alpha", alpha, 0, 0.5)):
        if value is not None and not (value > low and (high is None or value < high)):
            raise ValueError(f"{name} must be between {low} and {high if high is not None else 'infinity'}, got {value}")
    if score_pilot is None and mrmc_pilot is None:
        raise ValueError("give pilot data: a study, a score CSV or an MRMC CSV")
    scores = pd.DataFrame(columns=["criterion", "raters", "clips_per_model", "expected_halfwidth"])
    auc = pd.DataFrame(columns=["question", "readers", "clips", "power"])
    if score_pilot is not None and half_width is not None:
        scores = score_plan(pilot_from_scores(score_pilot), half_width, readers=readers)
    if mrmc_pilot is not None and (auc_difference is not None or auc_margin is not None):
        pilot = pilot_from_mrmc(mrmc_pilot)
        if pilot.modalities < 2:
            auc_difference = None
        auc = auc_plan(pilot, power=power, alpha=alpha, effect=auc_difference, margin=auc_margin,
                       expected_auc=expected_auc, readers=[r for r in readers if r >= 2])
    return Plan(scores, auc, plan_markdown(scores, auc, target=half_width))
