"""Reliability per clip set (real and each model separately, never pooled) and intra-rater agreement from
repeat readings (quadratic-weighted kappa, ICC(A,1), Krippendorff's alpha), also through a real study."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ophora.study import StudyStore, load_definition
from ophora.study.analysis import compute_results, icc_table, intra_rater, reliability
from tests.study.helpers import full_answer, write_study


def _panel(seed: int = 0) -> pd.DataFrame:
    """4 raters; real clips all near 4.5, generated clips spread 1..5: pooled, the set difference alone would
    look like agreement on which clips are good."""
    rng = np.random.default_rng(seed)
    rows = []
    for clip_set, model, centres in (("real", "real", [4.5] * 8), ("gen", "ophora", list(np.linspace(1, 5, 8)))):
        for j, centre in enumerate(centres):
            for rater in range(4):
                score = int(np.clip(round(centre + rng.normal(0, 0.6)), 1, 5))
                rows.append({"rater": f"r{rater}", "clip_id": f"{clip_set}{j}", "clip_set": clip_set, "model": model,
                             "criterion": "realism", "score": score, "reading": 0})
    return pd.DataFrame(rows)


def test_reliability_is_per_clip_set_never_pooled():
    frame = _panel()
    table = reliability(frame, {"realism": (1, 5)}).set_index("clip_set")
    assert set(table.index) == {"real", "gen"} and table.loc["gen", "model"] == "ophora"
    for clip_set in ("real", "gen"):
        alone = icc_table(frame[frame["clip_set"] == clip_set])
        assert table.loc[clip_set, "icc2_A1"] == pytest.approx(alone.loc["ICC2", "ICC"])
        assert table.loc[clip_set, "clips"] == 8 and table.loc[clip_set, "raters"] == 4
    pooled = icc_table(frame).loc["ICC2", "ICC"]
    assert pooled > table.loc["real", "icc2_A1"]  # what pooling would have reported for the real clips


def _quadratic_kappa_by_hand(a, b, labels):
    k = len(labels)
    index = {v: i for i, v in enumerate(labels)}
    observed = np.zeros((k, k))
    for x, y in zip(a, b):
        observed[index[x], index[y]] += 1
    observed /= observed.sum()
    expected = np.outer(observed.sum(1), observed.sum(0))
    weights = np.array([[(i - j) ** 2 for j in range(k)] for i in range(k)]) / (k - 1) ** 2
    return 1 - (weights * observed).sum() / (weights * expected).sum()


def test_intra_rater_kappa_and_icc_from_repeat_readings():
    first = [1, 2, 3, 4, 5, 3, 2, 4, 5, 1]
    repeat = [1, 3, 3, 4, 4, 3, 2, 5, 5, 2]
    rows = []
    for k, (x, y) in enumerate(zip(first, repeat)):
        rater = f"r{k % 2}"
        rows += [{"rater": rater, "clip_id": f"c{k}", "criterion": "realism", "reading": 0, "score": x},
                 {"rater": rater, "clip_id": f"c{k}", "criterion": "realism", "reading": 1, "score": y}]
    table = intra_rater(pd.DataFrame(rows), {"realism": (1, 5)}).iloc[0]
    assert table["pairs"] == 10 and table["raters"] == 2 and table["exact_agreement"] == 0.6
    assert table["weighted_kappa_quadratic"] == pytest.approx(_quadratic_kappa_by_hand(first, repeat, [1, 2, 3, 4, 5]))
    long = pd.DataFrame({"unit": list(range(10)) * 2, "reading": [0] * 10 + [1] * 10, "score": first + repeat})
    assert table["icc_A1"] == pytest.approx(icc_table(long, targets="unit", raters="reading").loc["ICC2", "ICC"])
    assert intra_rater(pd.DataFrame(rows).query("reading == 0")).empty  # no repeats, no rows


def test_study_with_repeats_reports_intra_rater_and_per_set_reliability(tmp_path):
    definition = load_definition(write_study(tmp_path, n_real=3, n_generated=3, raters=("a", "b"), repeats=3))
    with StudyStore(tmp_path / "r.db") as store:
        codes = store.create_study(definition, blind_dir=tmp_path / "b")
        store.import_clips(definition.slug, definition.clips())
        store.open_study(definition.slug)
        for n, code in enumerate(codes.values()):
            while (item := store.next_item(code)) is not None:
                answer = full_answer(item, 1 + (item.position * (n + 2)) % 5)
                store.submit_rating(code, item.clip_id, answer["scores"], phase=answer["phase"],
                                    turing="synthetic" if item.position % 2 else "real", confidence=1 + item.position % 5)
        results = compute_results(store.ratings_frame(definition.slug), scales={"realism": (1, 5), "phase_matching": (1, 5)})
    assert set(results.reliability["clip_set"]) == {"real", "gen"}
    assert set(results.intra_rater["criterion"]) == {"phase_matching", "realism"}
    assert (results.intra_rater["pairs"] == 6).all()  # 2 raters x 3 repeats


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # pingouin's raw ICC(k) on this panel
def test_icc_and_alpha_stay_inside_their_range_and_small_panels_get_words():
    """The issue saw "ICC -3": two raters who order six clips in opposite directions give pingouin ICC(A,1)
    -1.5 and ICC(A,k) 6.0. Shown: 0 with a note, intervals inside 0-1 or "not estimable"; alpha >= -1."""
    a, b = [1, 2, 3, 4, 5, 3], [5, 4, 3, 2, 1, 3]
    rows = [{"rater": rater, "clip_id": f"c{j}", "score": score, "model": "ophora", "criterion": "realism",
             "reading": 0} for j, pair in enumerate(zip(a, b)) for rater, score in zip(("r1", "r2"), pair)]
    frame = pd.DataFrame(rows)
    raw = icc_table(frame)
    assert raw.loc["ICC2", "ICC"] < -1 and raw.loc["ICC2k", "ICC"] > 1  # what pingouin computes
    row = reliability(frame, {"realism": (1, 5)}).iloc[0]
    assert row["icc2_A1"] == 0 and row["icc3_C1"] == 0 and row["icc2k_Ak"] == 0
    assert "ICC2 estimate -1.50 shown as 0" in row["note"]
    for label in ("icc2_A1_ci95", "icc3_C1_ci95", "icc2k_Ak_ci95"):
        text = row[label]
        assert text == "not estimable from these ratings" or all(0 <= float(v) <= 1 for v in text.strip("[]").split(","))
    assert -1 <= row["kripp_alpha_ordinal"] < 0
    few = reliability(frame[frame["clip_id"].isin(["c0", "c1", "c2"])], {"realism": (1, 5)}).iloc[0]
    assert few["note"] == "too few clips rated by every rater to estimate: at least 5 needed" and np.isnan(few["icc2_A1"])
