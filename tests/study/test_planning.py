"""Planning: Obuchowski-Rockette power (Hillis, Obuchowski & Berbaum) consistent with the published Van Dyke
analysis, mean-score plans that deliver their half-width in simulated studies, and `study plan`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ophora.study.analysis import score_summary
from ophora.study.cli import main
from ophora.study.mrmc import mrmc_analysis
from ophora.study.planning import (ORPilot, clips_for_halfwidth, make_plan, mean_halfwidth, power_difference,
                                   power_margin)
from tests.study.test_mixed import simulate


@pytest.fixture(scope="module")
def vandyke(shared_dir):
    return pd.read_csv(shared_dir / "reference" / "mrmc" / "vandyke_dataset02.csv")


def test_power_at_the_pilot_design_is_the_noncentral_f_of_the_published_analysis(vandyke):
    """At the pilot's own readers and cases, with the observed difference as effect, the planned RRRC test
    has the published F (4.46) as noncentrality and the published Hillis ddf (15.26)."""
    pilot = ORPilot.from_result(mrmc_analysis(vandyke))
    assert pilot.cases == 114 and pilot.modalities == 2
    power = power_difference(pilot, 5, 114, 0.04380032)
    expected = stats.ncf.sf(stats.f.ppf(0.95, 1, 15.2597), 1, 15.2597, 4.4563)
    assert power == pytest.approx(expected, abs=1e-3)
    # more readers or more cases: more power; a plan meets its target
    assert power_difference(pilot, 10, 114, 0.05) > power_difference(pilot, 5, 114, 0.05)
    assert power_difference(pilot, 5, 300, 0.05) > power_difference(pilot, 5, 114, 0.05)
    plan = make_plan(mrmc_pilot=vandyke, auc_difference=0.05, auc_margin=0.05, power=0.8)
    rows = plan.auc.dropna()
    assert (rows["power"] >= 0.8).all() and not rows.empty
    diff = rows[rows["question"].str.startswith("detect")].set_index("readers")["clips"]
    assert diff.is_monotonic_decreasing
    k = int(diff.loc[10])
    assert power_difference(pilot, 10, k - 1, 0.05) < 0.8 <= power_difference(pilot, 10, k, 0.05)
    assert power_margin(pilot, 10, 2000, 0.05, 0.5) > power_margin(pilot, 10, 200, 0.05, 0.5)


def test_one_model_pilot_plans_the_margin_only(vandyke):
    one = vandyke[vandyke["modality"] == 1]
    plan = make_plan(mrmc_pilot=one, auc_difference=0.05, auc_margin=0.1, expected_auc=0.5)
    assert set(plan.auc["question"]) == {"show AUC < 0.6 when it is 0.5"}
    with pytest.raises(ValueError, match="at least two models"):
        power_difference(ORPilot.from_result(mrmc_analysis(one)), 5, 100, 0.05)


def test_mean_score_plan_delivers_its_half_width_in_simulated_studies():
    """Components of the issue's simulation (rater SD 0.5, clip SD 0.8, error SD 0.7): the planned clips for
    8 raters give intervals whose average half-width is the target, and the plan is the smallest such."""
    var_r, var_c, var_e = 0.25, 0.64, 0.49
    clips = clips_for_halfwidth(var_r, var_c, var_e, 8, 0.5)
    assert mean_halfwidth(var_r, var_c, var_e, 8, clips) <= 0.5 < mean_halfwidth(var_r, var_c, var_e, 8, clips - 1)
    summary = score_summary(simulate(seed=21, studies=300, raters=8, clips=clips))
    half = ((summary["ci_high"] - summary["ci_low"]) / 2).mean()
    print(f"\nplanned 8 raters x {clips} clips for half-width 0.5; simulated mean half-width {half:.3f}")
    assert half == pytest.approx(0.5, rel=0.1)
    assert clips_for_halfwidth(var_r, var_c, var_e, 2, 0.3) is None  # rater variance alone is too large


def test_cli_plan_from_score_and_mrmc_csvs(tmp_path, vandyke, capsys):
    scores = tmp_path / "pilot_scores.csv"
    simulate(seed=2, studies=1, raters=4, clips=15).assign(criterion="realism").to_csv(scores, index=False)
    mrmc = tmp_path / "pilot_mrmc.csv"
    vandyke.to_csv(mrmc, index=False)
    out = tmp_path / "plan.json"
    assert main(["plan", "--scores", str(scores), "--mrmc", str(mrmc), "--half-width", "0.4", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Mean scores, 95% CI half-width 0.4" in printed and "Detect an AUC difference of 0.05" in printed
    data = json.loads(out.read_text())
    assert {"criterion", "raters", "clips_per_model", "expected_halfwidth"} <= set(data["scores"][0])
    assert {"question", "readers", "clips", "power"} <= set(data["auc"][0])
    assert main(["plan"]) == 2
    assert "give a pilot" in capsys.readouterr().err
    assert main(["plan", "--mrmc", str(mrmc), "--power", "1.5"]) == 2
    assert "power must be between" in capsys.readouterr().err


def test_cli_plan_from_a_study_in_its_database(tmp_path, capsys):
    from ophora.study import StudyStore, load_definition
    from tests.study.helpers import full_answer, write_study

    definition = load_definition(write_study(tmp_path, n_real=3, n_generated=3, raters=("a", "b", "c")))
    db = tmp_path / "pilot.db"
    rng = np.random.default_rng(0)
    with StudyStore(db) as store:
        codes = store.create_study(definition, blind_dir=tmp_path / "blind")
        store.import_clips(definition.slug, definition.clips())
        store.open_study(definition.slug)
        for code in codes.values():
            while (item := store.next_item(code)) is not None:
                answer = full_answer(item, int(rng.integers(1, 6)))
                store.submit_rating(code, item.clip_id, answer["scores"], phase=answer["phase"],
                                    turing=str(rng.choice(["real", "synthetic"])), confidence=int(rng.integers(1, 6)))
    out = tmp_path / "plan.json"
    assert main(["plan", definition.slug, "--db", str(db), "--half-width", "0.8", "--auc-margin", "0.1",
                 "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert {row["criterion"] for row in data["scores"]} == {"phase_matching", "realism"}
    assert {row["question"] for row in data["auc"]} == {"show AUC < 0.6 when it is 0.5"}  # one model: margin only
