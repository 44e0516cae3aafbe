"""MRMC ROC analysis (Obuchowski-Rockette, Hillis ddf, jackknife): the published Van Dyke results to the
printed precision, the `study mrmc` CLI and its JSON, and a study's Turing test exported as MRMC CSV / iMRMC."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ophora.study.cli import main
from ophora.study.mrmc import complete_readers, mrmc_analysis, turing_mrmc_frame, write_imrmc


def close(value, printed: str):
    """``value`` equals the published number to the precision it was printed with."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return abs(value - float(printed)) <= 0.5 * 10 ** -decimals + 1e-12


@pytest.fixture(scope="module")
def vandyke_csv(shared_dir):
    path = shared_dir / "reference" / "mrmc" / "vandyke_dataset02.csv"
    assert path.is_file(), f"{path} is missing"
    return path


def test_vandyke_obuchowski_rockette_hillis_matches_published(vandyke_csv):
    """../shared/reference/mrmc/README.md: OR-DBM MRMC 2.51 and RJafroc on Van Dyke et al. (1993)."""
    r = mrmc_analysis(pd.read_csv(vandyke_csv))
    assert r.readers == ["0", "1", "2", "3", "4"] and r.modalities == ["0", "1"] and r.cases == 114
    assert r.positives == {"0": 45, "1": 45} and r.negatives == {"0": 69, "1": 69}
    published = {"0": "0.91964573 0.85877617 0.90386473 0.97310789 0.82979066",
                 "1": "0.94782609 0.90531401 0.92173913 0.99935588 0.92995169"}
    for i, modality in enumerate(r.modalities):
        assert all(close(a, p) for a, p in zip(r.aucs[i], published[modality].split()))
    ms = r.mean_squares
    assert close(ms["ms_t"], "0.00479617") and close(ms["ms_r"], "0.00383620") and close(ms["ms_tr"], "0.00055103")
    vc = r.var_components
    for key, printed in (("var_r", "0.00153500"), ("var_tr", "0.00020040"), ("cov1", "0.00034661"),
                         ("cov2", "0.00034407"), ("cov3", "0.00023903"), ("var_error", "0.00080229")):
        assert close(vc[key], printed), (key, vc[key])
    rrrc = r.analyses["rrrc"]
    assert close(rrrc.f, "4.46") and rrrc.ndf == 1 and close(rrrc.ddf, "15.26") and close(rrrc.p, "0.0517")
    error_ms = vc["cov2"] - vc["cov3"]
    assert close(ms["ms_tr"] + 5 * max(error_ms, 0), "0.00107626")  # the RRRC error mean square
    d = rrrc.differences[0]
    assert (d.a, d.b) == ("0", "1")
    assert close(d.estimate, "-0.04380") and close(d.se, "0.02075")
    assert close(d.ci_low, "-0.08796") and close(d.ci_high, "0.00036")
    m0, m1 = rrrc.modalities
    assert close(m0.auc, "0.89703704") and close(m0.se, "0.03317360") and close(m0.df, "12.74")
    assert close(m0.wald_low, "0.82522360") and close(m0.wald_high, "0.96885048")
    assert close(m1.auc, "0.94083736") and close(m1.se, "0.02156637") and close(m1.df, "12.71")
    assert close(m1.wald_low, "0.89413783") and close(m1.wald_high, "0.98753689")
    # The reported interval is on the logit scale: inside [0, 1], pulled in from 1, the same width to 0.01
    for m in (m0, m1):
        assert 0 < m.ci_low < m.auc < m.ci_high < 1 and m.note == ""
        assert m.ci_high < m.wald_high and m.ci_high - m.ci_low == pytest.approx(m.wald_high - m.wald_low, abs=0.01)
    # Fixed cases: F = MS(T) / MS(T*R) on (1, (I-1)(J-1)) df; fixed readers: denominator
    # Var - Cov1 + (J-1)(Cov2 - Cov3) and infinite ddf (both from the published components above).
    rrfc, frrc = r.analyses["rrfc"], r.analyses["frrc"]
    assert rrfc.f == pytest.approx(0.00479617 / 0.00055103, rel=1e-5) and rrfc.ddf == 4
    den = vc["var_error"] - vc["cov1"] + 4 * (vc["cov2"] - vc["cov3"])
    assert frrc.f == pytest.approx(ms["ms_t"] / den) and frrc.ddf == np.inf
    assert frrc.p == pytest.approx(0.0193, abs=5e-5)


def test_cli_mrmc_json_has_exactly_the_documented_shape(vandyke_csv, tmp_path, capsys):
    out = tmp_path / "vd.json"
    assert main(["mrmc", str(vandyke_csv), "--json", str(out)]) == 0
    assert "F = 4.4563" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert set(data) == {"modalities", "test", "differences", "variance_components"}
    assert set(data["modalities"][0]) == {"modality", "auc", "se", "df", "ci_low", "ci_high", "wald_low", "wald_high",
                                          "note", "reader_aucs"}
    assert set(data["test"]) == {"f", "ndf", "ddf", "p"}
    assert set(data["differences"][0]) == {"a", "b", "estimate", "se", "df", "ci_low", "ci_high", "p"}
    assert set(data["variance_components"]) == {"var_r", "var_tr", "cov1", "cov2", "cov3", "var_error"}
    assert data["modalities"][1]["reader_aucs"]["3"] == pytest.approx(0.99935588, abs=5e-9)
    assert main(["mrmc", str(vandyke_csv), "--analysis", "frrc", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["test"]["ddf"] is None  # infinite (normal reference) -> null


def test_cli_mrmc_errors(tmp_path, vandyke_csv, capsys):
    frame = pd.read_csv(vandyke_csv)
    bad = tmp_path / "bad.csv"
    frame.drop(columns=["truth"]).to_csv(bad, index=False)
    assert main(["mrmc", str(bad)]) == 2
    assert "lacks column(s) truth" in capsys.readouterr().err
    frame.iloc[:-1].to_csv(bad, index=False)
    assert main(["mrmc", str(bad)]) == 2
    assert "reader 4 rated 113 of the 114 cases of modality '1'" in capsys.readouterr().err
    frame.assign(truth=2).to_csv(bad, index=False)
    assert main(["mrmc", str(bad)]) == 2
    assert "truth must be 0" in capsys.readouterr().err


def _turing_ratings() -> pd.DataFrame:
    """3 raters; 4 real clips, 3 clips each from two generators; rater r2 has not finished."""
    rng = np.random.default_rng(4)
    rows = []
    clips = [(f"real{k}", "real", "real") for k in range(4)]
    clips += [(f"oph{k}", "generated", "ophora") for k in range(3)] + [(f"v2_{k}", "generated", "v2") for k in range(3)]
    for rater in ("r0", "r1", "r2"):
        for k, (clip, source, model) in enumerate(clips):
            if rater == "r2" and k > 6:
                continue
            answer = "synthetic" if rng.random() < (0.7 if source == "generated" else 0.3) else "real"
            for criterion in ("realism", "phase_matching"):
                rows.append({"rater": rater, "clip_id": clip, "source": source, "model": model, "reading": 0,
                             "criterion": criterion, "score": 3, "turing_answer": answer,
                             "turing_confidence": int(rng.integers(1, 6))})
    return pd.DataFrame(rows)


def test_turing_test_becomes_mrmc_data_and_imrmc_input(tmp_path):
    mrmc_frame = turing_mrmc_frame(_turing_ratings())
    assert set(mrmc_frame["modality"]) == {"ophora", "v2"}
    # real clips are the negatives of every generator; each generator's clips its positives
    ophora = mrmc_frame[(mrmc_frame["modality"] == "ophora") & (mrmc_frame["reader"] == "r0")]
    assert sorted(ophora["case"]) == sorted([f"real{k}" for k in range(4)] + [f"oph{k}" for k in range(3)])
    assert ophora.set_index("case").loc["real0", "truth"] == 0 and ophora.set_index("case").loc["oph0", "truth"] == 1
    complete, dropped = complete_readers(mrmc_frame)
    assert dropped == ["r2"]
    result = mrmc_analysis(complete)
    assert result.modalities == ["ophora", "v2"] and result.readers == ["r0", "r1"]
    # the reader AUC is the Mann-Whitney statistic of that reader's +-confidence scores
    r0 = ophora.assign(s=ophora["rating"])
    pos, neg = r0[r0.truth == 1]["s"].to_numpy(), r0[r0.truth == 0]["s"].to_numpy()
    wins = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert result.aucs[0, 0] == pytest.approx(wins)

    path = write_imrmc(complete, tmp_path / "turing.imrmc")
    lines = path.read_text().splitlines()
    assert "NR: 2" in lines and "N0: 4" in lines and "N1: 6" in lines and "NM: 2" in lines
    data = lines[lines.index("BEGIN DATA:") + 1:]
    truth = [line for line in data if line.startswith("-1,")]
    assert len(truth) == 10 and truth[0] == "-1,1,0,0" and truth[-1] == "-1,10,0,1"
    scores = [line.split(",") for line in data if not line.startswith("-1,")]
    assert len(scores) == 2 * (4 + 3) * 2 and {s[2] for s in scores} == {"ophora", "v2"}
    # read back: the same AUCs
    back = pd.DataFrame(scores, columns=["reader", "case", "modality", "rating"])
    back["truth"] = back["case"].map({line.split(",")[1]: int(line.split(",")[3]) for line in truth})
    assert mrmc_analysis(back).aucs == pytest.approx(result.aucs)


def turing_study(rng, readers: int = 5, n_real: int = 20, n_generated: int = 20, shift: float = 0.0) -> pd.DataFrame:
    """Two models' Turing answers. ``shift`` 0: raters who cannot tell (real and generated clips from one
    distribution, true AUC 0.5 for both, true difference 0); ``shift`` > 0 moves model 'a''s clips towards
    "synthetic" (bench/bench_study_intervals.py). Clip effects, reader shifts and reader x clip noise;
    answers +-1..5 as in the app."""
    rows = []
    real = rng.normal(0, 1, n_real)
    generated = {m: rng.normal(shift if m == "a" else 0.0, 1, n_generated) for m in ("a", "b")}
    reader_shift = rng.normal(0, 0.5, readers)
    levels = np.array([-5, -4, -3, -2, -1, 1, 2, 3, 4, 5])
    for r in range(readers):
        def answer(latent):
            z = latent + reader_shift[r] + rng.normal(0, 1, latent.size)
            return levels[np.digitize(z, [-2, -1.2, -0.6, -0.2, 0, 0.2, 0.6, 1.2, 2])]
        real_answers = answer(real)
        for model, clips in generated.items():
            rows += [(r, model, f"real{k}", 0, v) for k, v in enumerate(real_answers)]
            rows += [(r, model, f"{model}{k}", 1, v) for k, v in enumerate(answer(clips))]
    return pd.DataFrame(rows, columns=["reader", "modality", "case", "truth", "rating"])


def test_turing_auc_intervals_are_calibrated_when_raters_cannot_tell():
    """The Turing design (real clips shared by both models, each model its own clips), 5 raters x 40 clips
    per model, 300 simulated studies: the RRRC interval (logit scale) covers AUC 0.5 and the difference
    interval covers 0 in about 95% of studies (1000 studies with another seed gave 0.959 and 0.944); the
    logit interval covers as often as the AUC-scale (Wald) one. Away from 0.5: bench/bench_study_intervals.py."""
    rng = np.random.default_rng(7)
    auc_hits = diff_hits = wald_hits = 0
    for _ in range(300):
        rrrc = mrmc_analysis(turing_study(rng)).analyses["rrrc"]
        m = rrrc.modalities[0]
        auc_hits += m.ci_low <= 0.5 <= m.ci_high
        wald_hits += m.wald_low <= 0.5 <= m.wald_high
        diff_hits += rrrc.differences[0].ci_low <= 0 <= rrrc.differences[0].ci_high
    print(f"\nTuring null: AUC interval covers 0.5 in {auc_hits / 300:.3f} (Wald {wald_hits / 300:.3f}), "
          f"difference covers 0 in {diff_hits / 300:.3f}")
    assert auc_hits / 300 >= 0.92 and diff_hits / 300 >= 0.92 and abs(auc_hits - wald_hits) <= 6


def test_small_pilots_get_bounded_intervals_or_words():
    """The issue's pilots: 3 raters x 5 clips per model printed "AUC 0.72 (95% CI 0.12 to 1.32)"; 2 x 8
    printed "0.50 (-2.68 to 3.68)". Now: inside [0, 1], and no interval at all with 2 raters."""
    rng = np.random.default_rng(3)
    three = mrmc_analysis(turing_study(rng, readers=3, n_real=5, n_generated=5))
    for analysis in three.analyses.values():
        for m in analysis.modalities:
            assert 0 <= m.ci_low <= m.auc <= m.ci_high <= 1
        for d in analysis.differences:
            assert -1 <= d.ci_low <= d.estimate <= d.ci_high <= 1
    two = mrmc_analysis(turing_study(rng, readers=2, n_real=8, n_generated=8))
    m = two.analyses["rrrc"].modalities[0]
    assert m.note == "too few raters to estimate: at least 3 needed (2 so far)" and np.isnan(m.ci_low)
    assert np.isnan(two.analyses["rrrc"].differences[0].ci_low) and 0 <= m.auc <= 1
    assert two.analyses["frrc"].modalities[0].note == ""  # these 2 raters as fixed: an interval is possible


def test_a_design_too_small_to_test_prints_no_p_value(vandyke_csv, tmp_path, capsys):
    """Two readers: no interval, and no F test or p-value either (they were printed before, from the same
    too-small variance estimates the intervals are withheld for)."""
    frame = pd.read_csv(vandyke_csv)
    small = tmp_path / "two_readers.csv"
    frame[frame["reader"].isin(sorted(frame["reader"].unique())[:2])].to_csv(small, index=False)
    result = mrmc_analysis(pd.read_csv(small))
    rrrc = result.analyses["rrrc"]
    assert np.isnan(rrrc.p) and all(np.isnan(d.p) and np.isnan(d.ci_low) for d in rrrc.differences)
    assert main(["mrmc", str(small)]) == 0
    printed = capsys.readouterr().out
    assert "no F test: the design is too small" in printed and "p =" not in printed and " inf" not in printed
