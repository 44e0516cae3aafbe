"""Multi-reader multi-case (MRMC) ROC analysis: Obuchowski-Rockette (OR) with Hillis' denominator degrees
of freedom and jackknife covariances, as in OR-DBM MRMC 2.5, RJafroc and MRMCaov.

The visual Turing test is an ROC task: each rater's real/synthetic answer with its confidence becomes one
ordinal "synthetic" rating per clip; a "modality" is a generator, its cases are the study's real clips
(truth 0, shared by all generators) plus that generator's clips (truth 1). Reader-averaged trapezoidal AUC
per generator with random-readers random-cases (RRRC), fixed-readers (FRRC) and fixed-cases (RRFC)
intervals; AUC 0.5 means raters could not tell. Checked against Van Dyke et al. (1993) in
tests/study/test_mrmc.py.

References: Obuchowski & Rockette (1995) Commun Stat Simul 24:285; Hillis (2007) Stat Med 26:596;
Hillis, Obuchowski, Schartz & Berbaum (2005) Stat Med 24:1579.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ophora.files import owner_only

MRMC_COLUMNS = ("reader", "modality", "case", "truth", "rating")
ANALYSES = ("rrrc", "frrc", "rrfc")
MIN_READERS = 3  # random readers: the reader variance needs at least 2 degrees of freedom
MIN_CASES = 3  # of each kind (real and generated) per model, for a jackknife variance worth an interval


@dataclass(frozen=True)
class ModalityResult:
    """One model's reader-averaged AUC. ``ci_low``/``ci_high``: the interval on the logit scale (inside
    [0, 1]); ``wald_low``/``wald_high``: the interval on the AUC scale as OR-DBM MRMC and RJafroc print it
    (to compare with them; it can leave [0, 1] in small studies). ``note`` says why there is no interval."""

    modality: str
    auc: float
    se: float
    df: float
    ci_low: float
    ci_high: float
    reader_aucs: dict
    wald_low: float = float("nan")
    wald_high: float = float("nan")
    note: str = ""


@dataclass(frozen=True)
class Difference:
    a: str
    b: str
    estimate: float
    se: float
    df: float
    ci_low: float
    ci_high: float
    p: float


@dataclass(frozen=True)
class Analysis:
    """One of RRRC / FRRC / RRFC: per-modality intervals, the F test and pairwise differences."""

    name: str
    modalities: list[ModalityResult]
    f: float
    ndf: float
    ddf: float
    p: float
    differences: list[Difference]


@dataclass(frozen=True)
class MRMCResult:
    readers: list[str]
    modalities: list[str]
    cases: int
    positives: dict  # modality -> number of truth-1 cases
    negatives: dict  # modality -> number of truth-0 cases
    aucs: np.ndarray  # modalities x readers
    var_components: dict  # var_r, var_tr, cov1, cov2, cov3, var_error
    mean_squares: dict  # ms_t, ms_r, ms_tr
    analyses: dict = field(default_factory=dict)  # "rrrc" | "frrc" | "rrfc" -> Analysis

    def to_json(self, analysis: str = "rrrc") -> dict:
        """The issue's JSON shape (NaN -> null): modalities, test, differences, variance_components."""
        chosen = self.analyses[analysis]
        return json_safe({
            "modalities": [{"modality": m.modality, "auc": m.auc, "se": m.se, "df": m.df, "ci_low": m.ci_low,
                            "ci_high": m.ci_high, "wald_low": m.wald_low, "wald_high": m.wald_high,
                            "note": m.note, "reader_aucs": m.reader_aucs} for m in chosen.modalities],
            "test": {"f": chosen.f, "ndf": chosen.ndf, "ddf": chosen.ddf, "p": chosen.p},
            "differences": [vars(d).copy() for d in chosen.differences],
            "variance_components": dict(self.var_components),
        })

    def modality_table(self) -> pd.DataFrame:
        """One row per modality x analysis (full precision, for the statistician's tables)."""
        rows = []
        for name, analysis in self.analyses.items():
            for m in analysis.modalities:
                rows.append({"modality": m.modality, "analysis": name, "auc": m.auc, "se": m.se, "df": m.df,
                             "ci_low": m.ci_low, "ci_high": m.ci_high, "wald_low": m.wald_low,
                             "wald_high": m.wald_high, "readers": len(self.readers),
                             "positives": self.positives[m.modality], "negatives": self.negatives[m.modality],
                             "note": m.note})
        return pd.DataFrame(rows)

    def difference_table(self) -> pd.DataFrame:
        rows = [{"analysis": name, "f": a.f, "ndf": a.ndf, "ddf": a.ddf, "f_p": a.p, **vars(d)}
                for name, a in self.analyses.items() for d in a.differences]
        return pd.DataFrame(rows, columns=["analysis", "f", "ndf", "ddf", "f_p", "a", "b", "estimate", "se", "df",
                                           "ci_low", "ci_high", "p"])

    def reader_table(self) -> pd.DataFrame:
        return pd.DataFrame([{"modality": m, "reader": r, "auc": float(self.aucs[i, j])}
                             for i, m in enumerate(self.modalities) for j, r in enumerate(self.readers)])


def json_safe(value):
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def json_records(table: pd.DataFrame) -> list[dict]:
    """A table as JSON-ready records (NaN and infinities -> null)."""
    return json_safe(table.astype(object).where(table.notna(), None).to_dict(orient="records"))


def check_mrmc_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Validate a long MRMC table (reader, modality, case, truth, rating); clear ``ValueError`` otherwise."""
    missing = [c for c in MRMC_COLUMNS if c not in frame]
    if missing:
        raise ValueError(f"MRMC table lacks column(s) {', '.join(missing)}; it needs one row per reader x modality "
                         f"x case with columns {', '.join(MRMC_COLUMNS)} (truth 1 = positive/synthetic)")
    data = frame[list(MRMC_COLUMNS)].copy()
    for column in ("reader", "modality", "case"):
        data[column] = data[column].astype(str)
    rating = pd.to_numeric(data["rating"], errors="coerce")
    truth = pd.to_numeric(data["truth"], errors="coerce")
    for name, values in (("rating", rating), ("truth", truth)):
        bad = data.index[values.isna()]
        if len(bad):
            shown = ", ".join(f"row {i + 2}: {frame.at[i, name]!r}" for i in list(bad)[:5])
            raise ValueError(f"{len(bad)} {name} value(s) are not numbers ({shown})")
    if not truth.isin([0, 1]).all():
        raise ValueError("truth must be 0 (negative / real) or 1 (positive / synthetic)")
    data["rating"], data["truth"] = rating.astype(float), truth.astype(int)
    if data.duplicated(["reader", "modality", "case"]).any():
        dup = data[data.duplicated(["reader", "modality", "case"], keep=False)].iloc[0]
        raise ValueError(f"reader {dup['reader']} rated case {dup['case']} in modality {dup['modality']} more than "
                         f"once; keep one rating per reader x modality x case (first readings)")
    conflicting = data.groupby("case")["truth"].nunique()
    if (conflicting > 1).any():
        raise ValueError(f"case {conflicting[conflicting > 1].index[0]} has both truth 0 and 1")
    return data


def _auc_and_jackknife(rating: np.ndarray, truth: np.ndarray) -> tuple[float, np.ndarray]:
    """Trapezoidal (Mann-Whitney, ties 1/2) AUC and its leave-one-case-out values, in the cases' order."""
    pos, neg = rating[truth == 1], rating[truth == 0]
    n1, n0 = pos.size, neg.size
    neg_sorted, pos_sorted = np.sort(neg), np.sort(pos)
    # Each positive's wins over negatives, each negative's losses to positives (ties count 1/2).
    row = np.searchsorted(neg_sorted, pos, "left") + 0.5 * (np.searchsorted(neg_sorted, pos, "right")
                                                           - np.searchsorted(neg_sorted, pos, "left"))
    col = (n1 - np.searchsorted(pos_sorted, neg, "right")) + 0.5 * (np.searchsorted(pos_sorted, neg, "right")
                                                                    - np.searchsorted(pos_sorted, neg, "left"))
    total = row.sum()
    auc = total / (n1 * n0)
    jack = np.empty(rating.size)
    jack[truth == 1] = (total - row) / ((n1 - 1) * n0) if n1 > 1 else np.nan
    jack[truth == 0] = (total - col) / (n1 * (n0 - 1)) if n0 > 1 else np.nan
    return float(auc), jack


def mrmc_analysis(frame: pd.DataFrame, *, alpha: float = 0.05) -> MRMCResult:
    """OR analysis of a long MRMC table. Every reader must rate every case of every modality the case belongs
    to; modalities may have different cases (the Turing test: each generator has its own synthetic clips),
    in which case the jackknife runs over the union of cases and a case a modality lacks leaves its AUC
    unchanged."""
    data = check_mrmc_frame(frame)
    readers = sorted(data["reader"].unique(), key=_natural)
    modalities = sorted(data["modality"].unique(), key=_natural)
    cases = sorted(data["case"].unique(), key=_natural)
    I, J, K = len(modalities), len(readers), len(cases)
    case_index = {c: k for k, c in enumerate(cases)}
    aucs = np.empty((I, J))
    jack = np.empty((I, J, K))
    positives, negatives = {}, {}
    for i, modality in enumerate(modalities):
        block = data[data["modality"] == modality]
        modality_cases = block.drop_duplicates("case")
        positives[modality] = int(modality_cases["truth"].sum())
        negatives[modality] = int(len(modality_cases) - positives[modality])
        if not positives[modality] or not negatives[modality]:
            raise ValueError(f"modality {modality!r} needs both truth-0 and truth-1 cases for an AUC "
                             f"(it has {positives[modality]} positive and {negatives[modality]} negative)")
        for j, reader in enumerate(readers):
            mine = block[block["reader"] == reader]
            if len(mine) != len(modality_cases):
                raise ValueError(f"reader {reader} rated {len(mine)} of the {len(modality_cases)} cases of modality "
                                 f"{modality!r}; OR analysis needs every reader to rate every case (drop readers "
                                 f"who have not finished)")
            auc, jk = _auc_and_jackknife(mine["rating"].to_numpy(), mine["truth"].to_numpy())
            aucs[i, j] = auc
            jack[i, j, :] = auc  # cases outside this modality leave its AUC unchanged
            jack[i, j, [case_index[c] for c in mine["case"]]] = jk
    return _or_analysis(aucs, jack, readers, modalities, K, positives, negatives, alpha)


def _natural(value: str):
    return (0, float(value), value) if _is_number(value) else (1, 0.0, value)


def _is_number(value: str) -> bool:
    try:
        float(value)
        return True
    except ValueError:
        return False


def _jackknife_covariances(jack: np.ndarray) -> tuple[np.ndarray, dict]:
    """Jackknife covariance matrix of all modality x reader AUCs and its OR averages (Var, Cov1-3)."""
    I, J, K = jack.shape
    flat = jack.reshape(I * J, K)
    dev = flat - flat.mean(axis=1, keepdims=True)
    cov = (K - 1) / K * dev @ dev.T
    mod = np.repeat(np.arange(I), J)
    rdr = np.tile(np.arange(J), I)
    same_m, same_r = mod[:, None] == mod[None, :], rdr[:, None] == rdr[None, :]

    def avg(mask):
        return float(cov[mask].mean()) if mask.any() else float("nan")

    return cov, {"var_error": avg(same_m & same_r), "cov1": avg(~same_m & same_r), "cov2": avg(same_m & ~same_r),
                 "cov3": avg(~same_m & ~same_r)}


def _t_interval(estimate: float, se: float, df: float, alpha: float) -> tuple[float, float]:
    if not np.isfinite(se) or np.isnan(df):
        return float("nan"), float("nan")
    q = float(stats.t.ppf(1 - alpha / 2, df))
    return estimate - q * se, estimate + q * se


def interval_note(analysis: str, readers: int, positives: int, negatives: int, se: float) -> str:
    """Why a design gets no AUC interval, in words ('' when it gets one)."""
    if analysis != "frrc" and readers < MIN_READERS:
        return f"too few raters to estimate: at least {MIN_READERS} needed ({readers} so far)"
    if min(positives, negatives) < MIN_CASES:
        return (f"too few clips to estimate: at least {MIN_CASES} real and {MIN_CASES} generated needed "
                f"({negatives} and {positives} so far)")
    if se == 0:
        return "no spread to estimate from: every rater's answers give the same AUC whichever clip is left out"
    return ""


def logit_interval(auc: float, se: float, df: float, alpha: float) -> tuple[float, float]:
    """The t interval on the logit scale (delta method: SE(logit AUC) = SE / (AUC (1 - AUC))), mapped
    back: always inside [0, 1], asymmetric near the ends where the AUC-scale interval spills over. At AUC 0
    or 1 the logit is infinite; the AUC-scale interval cut at [0, 1] stands in."""
    from scipy.special import expit, logit

    if not np.isfinite(se) or np.isnan(df):
        return float("nan"), float("nan")
    if not 0 < auc < 1 or se == 0:
        low, high = _t_interval(auc, se, df, alpha)
        return max(low, 0.0), min(high, 1.0)
    q = float(stats.t.ppf(1 - alpha / 2, df))
    half = q * se / (auc * (1 - auc))
    return float(expit(logit(auc) - half)), float(expit(logit(auc) + half))


def _or_analysis(aucs, jack, readers, modalities, K, positives, negatives, alpha) -> MRMCResult:
    I, J = aucs.shape
    cov, c = _jackknife_covariances(jack)
    var, cov1, cov2, cov3 = c["var_error"], c["cov1"], c["cov2"], c["cov3"]
    grand = aucs.mean()
    mod_means, rdr_means = aucs.mean(axis=1), aucs.mean(axis=0)
    ms_t = J * ((mod_means - grand) ** 2).sum() / (I - 1) if I > 1 else float("nan")
    ms_r = I * ((rdr_means - grand) ** 2).sum() / (J - 1) if J > 1 else float("nan")
    resid = aucs - mod_means[:, None] - rdr_means[None, :] + grand
    ms_tr = (resid ** 2).sum() / ((I - 1) * (J - 1)) if I > 1 and J > 1 else float("nan")
    if I > 1:
        var_tr = ms_tr - var + cov1 + max(cov2 - cov3, 0.0)
        var_r = (ms_r - var - (I - 1) * cov1 + cov2 + (I - 1) * cov3 - var_tr) / I
    else:  # one modality: reader x modality interaction is not separable from the reader variance
        var_tr = float("nan")
        var_r = ms_r - var + cov2
    components = {"var_r": var_r, "var_tr": var_tr, "cov1": cov1, "cov2": cov2, "cov3": cov3, "var_error": var}

    # Per-modality pieces (the single-modality OR analysis of each one's own readers).
    single = []
    for i in range(I):
        block = cov[i * J:(i + 1) * J, i * J:(i + 1) * J]
        var_i = float(np.diag(block).mean())
        cov2_i = float(block[~np.eye(J, dtype=bool)].mean()) if J > 1 else 0.0
        ms_r_i = float(((aucs[i] - mod_means[i]) ** 2).sum() / (J - 1)) if J > 1 else float("nan")
        single.append((var_i, cov2_i, ms_r_i))

    analyses = {}
    for name in ANALYSES:
        per_modality = []
        for i, modality in enumerate(modalities):
            var_i, cov2_i, ms_r_i = single[i]
            if name == "rrrc":
                den = ms_r_i + max(J * cov2_i, 0.0)
                df = den ** 2 / ms_r_i ** 2 * (J - 1) if J > 1 and ms_r_i > 0 else float("nan")
                if J > 1 and ms_r_i == 0:
                    df = float("inf")
            elif name == "frrc":
                den, df = var_i + (J - 1) * cov2_i, float("inf")
            else:
                den, df = ms_r_i, float(J - 1) if J > 1 else float("nan")
            se = float(np.sqrt(den / J)) if np.isfinite(den) and den >= 0 else float("nan")
            note = interval_note(name, J, positives[modality], negatives[modality], se)
            auc = float(mod_means[i])
            wald = _t_interval(auc, se, df, alpha) if not note else (float("nan"), float("nan"))
            low, high = logit_interval(auc, se, df, alpha) if not note else (float("nan"), float("nan"))
            per_modality.append(ModalityResult(modality, auc, se, float(df), low, high,
                                               {r: float(aucs[i, j]) for j, r in enumerate(readers)},
                                               wald_low=wald[0], wald_high=wald[1], note=note))
        f = ndf = ddf = p = float("nan")
        differences = []
        if I > 1:
            if name == "rrrc":
                den = ms_tr + max(J * (cov2 - cov3), 0.0)
                ddf = den ** 2 / (ms_tr ** 2 / ((I - 1) * (J - 1))) if J > 1 and ms_tr > 0 else float("nan")
            elif name == "frrc":
                den, ddf = var - cov1 + (J - 1) * (cov2 - cov3), float("inf")
            else:
                den, ddf = ms_tr, float((I - 1) * (J - 1))
            ndf = float(I - 1)
            f = ms_t / den if den > 0 else float("nan")
            if np.isfinite(f) and ddf == np.inf:  # F(ndf, inf) = chi2(ndf) / ndf
                p = float(stats.chi2.sf(f * ndf, ndf))
            elif np.isfinite(f) and np.isfinite(ddf):
                p = float(stats.f.sf(f, ndf, ddf))
            se = float(np.sqrt(2 * den / J)) if den >= 0 else float("nan")
            too_small = any(m.note for m in per_modality)  # the modalities say why; no test, no interval then
            if too_small:
                f = p = float("nan")
            for a in range(I):
                for b in range(a + 1, I):
                    est = float(mod_means[a] - mod_means[b])
                    low, high = _t_interval(est, se, ddf, alpha)
                    low, high = max(low, -1.0), min(high, 1.0)  # a difference of AUCs lies in [-1, 1]
                    if too_small:
                        low = high = float("nan")
                    pd_ = float(2 * stats.t.sf(abs(est) / se, ddf)) \
                        if se > 0 and not np.isnan(ddf) and not too_small else float("nan")
                    differences.append(Difference(modalities[a], modalities[b], est, se, float(ddf), low, high, pd_))
        analyses[name] = Analysis(name, per_modality, f, ndf, float(ddf), p, differences)
    return MRMCResult(readers=list(readers), modalities=list(modalities), cases=K, positives=positives,
                      negatives=negatives, aucs=aucs, var_components=components,
                      mean_squares={"ms_t": ms_t, "ms_r": ms_r, "ms_tr": ms_tr}, analyses=analyses)


# ------------------------------------------------------------------ the study's Turing test as MRMC data
def turing_mrmc_frame(ratings: pd.DataFrame) -> pd.DataFrame:
    """Long MRMC table from a study's ratings: one row per rater x generator x clip (first readings).

    rating = +confidence when called synthetic, -confidence when called real (+-1 without confidence), so
    higher means "more surely synthetic". Real clips (truth 0) appear under every generator; each
    generator's clips (truth 1) under their own."""
    first = ratings[(ratings["reading"] == 0) & ratings["turing_answer"].notna()] if "reading" in ratings else \
        ratings[ratings["turing_answer"].notna()]
    answers = first.drop_duplicates(["rater", "clip_id"])
    if answers.empty:
        return pd.DataFrame(columns=list(MRMC_COLUMNS))
    is_real = (answers["source"] == "real") if "source" in answers else (answers["model"] == "real")
    sign = np.where(answers["turing_answer"] == "synthetic", 1.0, -1.0)
    confidence = pd.to_numeric(answers["turing_confidence"], errors="coerce").fillna(1.0).to_numpy()
    scored = pd.DataFrame({"reader": answers["rater"].astype(str).to_numpy(), "case": answers["clip_id"].astype(str).to_numpy(),
                           "model": answers["model"].astype(str).to_numpy(), "truth": (~is_real).astype(int).to_numpy(),
                           "rating": sign * confidence})
    real, generated = scored[scored["truth"] == 0], scored[scored["truth"] == 1]
    parts = []
    for model in sorted(generated["model"].unique()):
        parts.append(pd.concat([real, generated[generated["model"] == model]]).assign(modality=model))
    if not parts:
        return pd.DataFrame(columns=list(MRMC_COLUMNS))
    return pd.concat(parts, ignore_index=True)[list(MRMC_COLUMNS)]


def complete_readers(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Keep the readers who rated every case of every modality; return (table, dropped readers)."""
    if frame.empty:
        return frame, []
    needed = frame.drop_duplicates(["modality", "case"]).shape[0]
    counts = frame.drop_duplicates(["reader", "modality", "case"]).groupby("reader").size()
    keep = counts[counts == needed].index
    return frame[frame["reader"].isin(keep)], sorted(set(counts.index) - set(keep))


def write_imrmc(frame: pd.DataFrame, path: str | Path, *, description: str = "Ophora Studio visual Turing test") -> Path:
    """iMRMC's input format (FDA iMRMC, also read by RJafroc): a free-text header, ``NR/N0/N1/NM``, then
    ``BEGIN DATA:``; truth rows ``-1,case,0,truth`` and score rows ``reader,case,modality,score``.
    Cases are numbered 1..K (negatives first) and the original ids written in the header; modality ids are
    the generator names (0 is iMRMC's truth marker, so a modality literally named "0" is prefixed)."""
    data = check_mrmc_frame(frame)
    truth = data.drop_duplicates("case").set_index("case")["truth"]
    order = sorted(truth.index, key=lambda c: (truth[c], _natural(c)))
    number = {c: k + 1 for k, c in enumerate(order)}
    safe = {m: (f"m{m}" if m == "0" else m).replace(",", "_") for m in data["modality"].unique()}
    readers = {r: r.replace(",", "_") for r in data["reader"].unique()}
    lines = [description, "case ids: " + " ".join(f"{number[c]}={c}" for c in order), "",
             f"NR: {len(readers)}", f"N0: {int((truth == 0).sum())}", f"N1: {int((truth == 1).sum())}",
             f"NM: {len(safe)}", "", "BEGIN DATA:"]
    lines += [f"-1,{number[c]},0,{int(truth[c])}" for c in order]
    for row in data.sort_values(["modality", "reader", "case"]).itertuples(index=False):
        lines.append(f"{readers[row.reader]},{number[row.case]},{safe[row.modality]},{row.rating:.6g}")
    path = owner_only(path)  # the truth of every case: it unblinds the study
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
