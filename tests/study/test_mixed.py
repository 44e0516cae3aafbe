"""Mean scores with raters and clips as crossed random effects: calibration by simulation, the classical
ANOVA interval on complete data, degenerate studies, differences with Holm, and the `study scores` CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ophora.study.analysis import score_differences, score_summary
from ophora.study.cli import main

RATER_SD, CLIP_SD, ERROR_SD, MU = 0.5, 0.8, 0.7, 3.0


def simulate(seed: int, studies: int, raters: int, clips: int, *, drop: float = 0.0,
             models: dict[str, float] | None = None) -> pd.DataFrame:
    """``studies`` independent studies in one tidy frame (criterion = study id), so one ``score_summary``
    call analyses them all. Each model gets its own clips; raters (and their effects) are shared."""
    rng = np.random.default_rng(seed)
    models = models or {"m": 0.0}
    parts = []
    for study in range(studies):
        rater_effect = rng.normal(0, RATER_SD, raters)
        for model, delta in models.items():
            y = (MU + delta + rater_effect[:, None] + rng.normal(0, CLIP_SD, clips)[None, :]
                 + rng.normal(0, ERROR_SD, (raters, clips)))
            keep = rng.random((raters, clips)) >= drop
            keep[:, 0] = keep[0, :] = True  # every rater and every clip keeps at least one rating
            r, c = np.nonzero(keep)
            parts.append(pd.DataFrame({"rater": r, "clip": [f"{model}-{j}" for j in c], "model": model,
                                       "criterion": f"study{study:04d}", "score": y[r, c]}))
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("raters, clips", [(5, 20), (3, 10)])
def test_nominal_95_intervals_cover_the_true_mean_in_at_least_93_percent(raters, clips):
    summary = score_summary(simulate(seed=11, studies=1000, raters=raters, clips=clips))
    coverage = float(((summary["ci_low"] <= MU) & (MU <= summary["ci_high"])).mean())
    print(f"\ncoverage {raters} raters x {clips} clips (1000 simulated studies): {coverage:.3f}")
    assert len(summary) == 1000 and summary["n"].eq(raters * clips).all()
    assert 0.93 <= coverage <= 0.985  # honest, and not so wide it is useless


def test_unbalanced_studies_and_differences_are_calibrated_too():
    """30% of rater x clip cells missing (a half-finished study), and model - real differences with shared
    raters (true difference -0.5)."""
    summary = score_summary(simulate(seed=5, studies=400, raters=5, clips=20, drop=0.3))
    coverage = float(((summary["ci_low"] <= MU) & (MU <= summary["ci_high"])).mean())
    diffs = score_differences(simulate(seed=6, studies=400, raters=3, clips=10, models={"real": 0.0, "gen": -0.5}))
    diff_coverage = float(((diffs["ci_low"] <= -0.5) & (-0.5 <= diffs["ci_high"])).mean())
    print(f"\ncoverage, 30% cells missing: {coverage:.3f}; gen - real difference (3 x 10): {diff_coverage:.3f}")
    assert coverage >= 0.93 and diff_coverage >= 0.93
    assert (diffs["comparison"] == "gen - real").all()


def test_complete_data_gives_the_classical_two_way_anova_interval():
    """On a full raters x clips table the interval is mean +- t * sqrt((MS_R + MS_C - MS_E) / (R C)) with
    Satterthwaite df, the mean squares from statsmodels' two-way ANOVA."""
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    frame = simulate(seed=3, studies=1, raters=4, clips=9)
    n_raters, n_clips = 4, 9
    anova = anova_lm(smf.ols("score ~ C(rater) + C(clip)", data=frame).fit())
    ms_r, ms_c, ms_e = anova["mean_sq"].to_numpy()
    df_r, df_c, df_e = anova["df"].to_numpy()
    assert ms_r > ms_e and ms_c > ms_e  # the plain formula applies (no component truncated)
    var = (ms_r + ms_c - ms_e) / (n_raters * n_clips)
    df = (ms_r + ms_c - ms_e) ** 2 / (ms_r ** 2 / df_r + ms_c ** 2 / df_c + ms_e ** 2 / df_e)
    half = stats.t.ppf(0.975, df) * np.sqrt(var)
    row = score_summary(frame).iloc[0]
    assert row["mean"] == pytest.approx(frame["score"].mean())
    assert row["df"] == pytest.approx(df) and row["se"] == pytest.approx(np.sqrt(var))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((row["mean"] - half, row["mean"] + half))
    assert row["var_error"] == pytest.approx(ms_e) and row["var_rater"] == pytest.approx((ms_r - ms_e) / n_clips)


def test_degenerate_studies_get_a_row_and_a_note_not_a_crash():
    rows = [("r1", f"c{j}", "m", "flat", 3) for j in range(5)] + [("r1", f"c{j}", "m", "one-rater", j % 3)
                                                                   for j in range(6)]
    rows += [("r1", "c0", "m", "single", 4)]
    rows += [(f"r{i}", "c0", "m", "one-clip", 2 + i % 2) for i in range(4)]
    rows += [(f"r{i}", f"c{j}", "m", "constant", 5) for i in range(3) for j in range(4)]
    table = score_summary(pd.DataFrame(rows, columns=["rater", "clip", "model", "criterion", "score"]))
    table = table.set_index("criterion")
    assert table.loc["flat", "ci_low"] == table.loc["flat", "ci_high"] == 3
    assert table.loc["constant", "ci_low"] == 5 == table.loc["constant", "ci_high"]
    assert "1 rater" in table.loc["one-rater", "note"] and table.loc["one-rater", "df"] == 5
    assert "1 clip" in table.loc["one-clip", "note"] and table.loc["one-clip", "df"] == 3
    assert np.isnan(table.loc["single", "ci_low"]) and table.loc["single", "mean"] == 4


def test_phases_differences_and_holm():
    frame = simulate(seed=9, studies=2, raters=4, clips=12, models={"real": 0.0, "ophora": -1.0, "v2": -0.2})
    frame["phase"] = np.where(frame["clip"].str.extract(r"-(\d+)$")[0].astype(int) % 2 == 0, "incision", "rhexis")
    by_phase = score_summary(frame, by_phase=True)
    assert list(by_phase.columns[:3]) == ["model", "phase", "criterion"] and len(by_phase) == 3 * 2 * 2
    diffs = score_differences(frame)
    assert set(diffs["comparison"]) == {"ophora - real", "v2 - real", "ophora - v2"}
    assert (diffs["p_holm"] >= diffs["p"]).all() and (diffs["p_holm"] <= 1).all()
    from statsmodels.stats.multitest import multipletests
    assert diffs["p_holm"].to_numpy() == pytest.approx(multipletests(diffs["p"], method="holm")[1])
    big = diffs[diffs["comparison"] == "ophora - real"]
    assert (big["ci_high"] < 0).all()  # a 1-point drop with 4 raters x 12 clips is detected


def test_cli_scores_csv_to_json(tmp_path, capsys):
    frame = simulate(seed=1, studies=1, raters=3, clips=8, models={"real": 0.0, "ophora": -0.4})
    frame = frame.assign(criterion="realism")
    path = tmp_path / "redcap_export.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "scores.json"
    assert main(["scores", str(path), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ophora - real" in printed and "realism" in printed
    data = json.loads(out.read_text())
    assert {row["model"] for row in data["scores"]} == {"real", "ophora"}
    assert {"mean", "ci_low", "ci_high", "n", "df"} <= set(data["scores"][0])
    assert data["differences"][0]["comparison"] == "ophora - real" and "p_holm" in data["differences"][0]


def test_cli_scores_errors_say_what_to_fix(tmp_path, capsys):
    missing = tmp_path / "missing.csv"
    pd.DataFrame({"rater": ["a"], "model": ["m"], "score": [3]}).to_csv(missing, index=False)
    assert main(["scores", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "lacks column(s) clip, criterion" in err
    text = tmp_path / "text.csv"
    pd.DataFrame({"rater": ["a", "b"], "clip": ["c", "c"], "model": ["m", "m"], "criterion": ["x", "x"],
                  "score": ["3", "good"]}).to_csv(text, index=False)
    assert main(["scores", str(text)]) == 2
    assert "row 3: 'good'" in capsys.readouterr().err
    assert main(["scores", str(tmp_path / "nope.csv")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_clips_nested_in_raters_still_get_an_interval():
    """Each rater rated their own clips (no clip seen twice): clip and error variance merge, the mean's
    variance is still estimable, and the intervals stay calibrated."""
    rng = np.random.default_rng(8)
    parts = []
    for study in range(400):
        rater_effect = rng.normal(0, RATER_SD, 5)
        for i in range(5):
            y = MU + rater_effect[i] + rng.normal(0, CLIP_SD, 6) + rng.normal(0, ERROR_SD, 6)
            parts.append(pd.DataFrame({"rater": i, "clip": [f"{i}-{j}" for j in range(6)], "model": "m",
                                       "criterion": f"s{study}", "score": y}))
    summary = score_summary(pd.concat(parts, ignore_index=True))
    coverage = float(((summary["ci_low"] <= MU) & (MU <= summary["ci_high"])).mean())
    print(f"\ncoverage, clips nested in raters (5 x 6 each, 400 studies): {coverage:.3f}")
    assert summary["note"].eq("").all() and coverage >= 0.93
