"""Statistics checked against published values (sources named per test), through the project's own
analysis functions and, end to end, through ratings stored in a real study database."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ophora.study import StudyStore, load_definition
from ophora.study.analysis import (answer_agreement, compute_results, icc_table,
                                   krippendorff_alpha, reliability, score_summary, turing_roc, turing_table)
from tests.study.helpers import write_study

# Shrout, P. E. & Fleiss, J. L. (1979). Intraclass correlations: uses in assessing rater reliability.
# Psychological Bulletin 86(2), 420-428, Table 2: 6 targets x 4 judges, and the ICCs reported there.
SHROUT_FLEISS = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]
SHROUT_FLEISS_ICC = {"ICC1": 0.17, "ICC2": 0.29, "ICC3": 0.71, "ICC1k": 0.44, "ICC2k": 0.62, "ICC3k": 0.91}

# pingouin's bundled `icc` dataset (8 wines x 4 judges) and the values in pingouin.intraclass_corr's docs.
PINGOUIN_ICC = {"ICC1": 0.728, "ICC2": 0.728, "ICC3": 0.729, "ICC1k": 0.914, "ICC2k": 0.914, "ICC3k": 0.915}

# Krippendorff, K. (2011). Computing Krippendorff's Alpha-Reliability, section C: reliability data of
# 4 observers x 12 units with missing values (None), and the alphas given there.
KRIPP = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]
KRIPP_ALPHA = {"nominal": 0.743, "ordinal": 0.815, "interval": 0.849, "ratio": 0.797}


def _long(matrix, *, raters_are_rows: bool, criterion: str = "realism") -> pd.DataFrame:
    rows = []
    for i, line in enumerate(matrix):
        for j, value in enumerate(line):
            if value is None:
                continue
            rater, clip = (f"obs{i}", f"u{j:02d}") if raters_are_rows else (f"judge{j}", f"t{i}")
            rows.append({"rater": rater, "clip_id": clip, "criterion": criterion, "score": value, "reading": 0,
                         "model": "m", "phase": "p"})
    return pd.DataFrame(rows)


def test_icc_matches_shrout_fleiss_1979_table_2():
    table = icc_table(_long(SHROUT_FLEISS, raters_are_rows=False))
    for form, published in SHROUT_FLEISS_ICC.items():
        assert table.loc[form, "ICC"] == pytest.approx(published, abs=0.005), form


def test_icc_matches_pingouin_wine_example():
    import pingouin as pg

    wine = pg.read_dataset("icc")  # ships with pingouin: works offline
    frame = wine.rename(columns={"Wine": "clip_id", "Judge": "rater", "Scores": "score"})
    table = icc_table(frame)
    assert table.loc["ICC2", "Type"] == "ICC(A,1)"  # two-way random, absolute agreement
    for form, published in PINGOUIN_ICC.items():
        assert table.loc[form, "ICC"] == pytest.approx(published, abs=0.0005), form
    # The report's reliability table picks ICC(2,1) = ICC(A,1), ICC(3,1) and ICC(2,k) from the same call.
    rel = reliability(frame.assign(criterion="taste", reading=0)).iloc[0]
    assert rel["icc2_A1"] == pytest.approx(0.728, abs=0.0005)
    assert rel["icc3_C1"] == pytest.approx(0.729, abs=0.0005)
    assert rel["icc2k_Ak"] == pytest.approx(0.914, abs=0.0005)


@pytest.mark.parametrize("level", list(KRIPP_ALPHA))
def test_krippendorff_alpha_matches_krippendorff_2011(level):
    assert krippendorff_alpha(_long(KRIPP, raters_are_rows=True), level=level) == pytest.approx(KRIPP_ALPHA[level], abs=0.0005)


def test_krippendorff_example_end_to_end_through_the_study_database(tmp_path):
    """Store Krippendorff's reliability data as real ratings (4 raters x 12 clips, missing = not rated) and
    get his published ordinal alpha back from the analysis of the database."""
    definition = load_definition(write_study(tmp_path, n_real=12, n_generated=0, raters=["a", "b", "c", "d"],
                                             ask_phase=False, turing=False))
    with StudyStore(tmp_path / "k.db") as store:
        codes = store.create_study(definition, blind_dir=tmp_path / "b")
        store.import_clips(definition.slug, definition.clips())
        store.open_study(definition.slug)
        key = store.clips_frame(definition.slug)
        unit_of = {path.rsplit("real_case", 1)[1][:2]: cid for path, cid in zip(key["original_path"], key["clip_id"])}
        for rater, line in zip("abcd", KRIPP):
            for unit, value in enumerate(line):
                if value is not None:
                    store.submit_rating(codes[rater], unit_of[f"{unit:02d}"], {"phase_matching": value, "realism": value})
        frame = store.ratings_frame(definition.slug)
    assert len(frame) == 2 * sum(v is not None for line in KRIPP for v in line)
    realism = frame[frame["criterion"] == "realism"]
    assert krippendorff_alpha(realism, level="ordinal") == pytest.approx(0.815, abs=0.0005)
    assert krippendorff_alpha(realism, level="interval") == pytest.approx(0.849, abs=0.0005)


def test_summaries_and_turing_accuracy_by_hand_counts():
    rows = []
    for rater in ("a", "b"):
        for k in range(4):
            model = "ophora" if k < 2 else "real"
            truth = "synthetic" if model == "ophora" else "real"
            answer = truth if (rater == "a" or k % 2 == 0) else ("real" if truth == "synthetic" else "synthetic")
            for criterion, score in (("realism", 2 + k), ("phase_matching", 5)):
                rows.append({"rater": rater, "clip_id": f"c{k}", "model": model, "phase": "incision" if k % 2 else "viscoelastic",
                             "criterion": criterion, "score": score, "reading": 0, "turing_answer": answer,
                             "turing_correct": answer == truth, "turing_confidence": 3, "phase_answer": None,
                             "phase_correct": None})
    frame = pd.DataFrame(rows)
    s = score_summary(frame).set_index(["model", "criterion"])
    assert s.loc[("ophora", "realism"), "mean"] == 2.5 and s.loc[("real", "realism"), "mean"] == 4.5
    assert s.loc[("ophora", "realism"), "n"] == 4
    t = turing_table(frame, ["rater"]).set_index("rater")
    assert t.loc["a", "accuracy"] == 1.0 and t.loc["b", "accuracy"] == 0.5 and t.loc["a", "n"] == 4
    results = compute_results(frame)
    assert set(results.by_model_phase["phase"]) == {"incision", "viscoelastic"}


def test_half_finished_study_gets_alpha_and_a_note_instead_of_a_crash():
    """Raters who have rated different subsets: no complete block for ICC, but alpha (which allows missing
    data) equals Krippendorff's value for the same matrix."""
    frame = _long(KRIPP, raters_are_rows=True)  # observer 1 misses units 10-12, observer 3 unit 1 ...
    rel = reliability(frame, {"realism": (1, 5)}).iloc[0]
    assert rel["kripp_alpha_ordinal"] == pytest.approx(0.815, abs=0.0005)
    assert rel["icc_clips"] == 8  # units rated by all four observers
    sparse = frame[frame["clip_id"].isin(["u09", "u10", "u11"])]
    rel = reliability(sparse).iloc[0]
    assert rel["note"] == "too few clips rated by every rater to estimate: at least 5 needed"
    assert np.isnan(rel["icc2_A1"]) and pd.isna(rel["icc2_A1_ci95"])


# Fleiss, J. L. (1971). Measuring nominal scale agreement among many raters. Psychological Bulletin 76(5),
# 378-382: the worked example reproduced in most textbooks (10 subjects, 14 raters, 5 categories; each row
# counts the raters who chose each category), kappa = 0.210.
FLEISS_COUNTS = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                 [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
PHASES = ["incision", "rhexis", "hydrodissection", "phaco", "iol"]


def _answer_rows(per_clip: dict[str, list[str]], column: str) -> pd.DataFrame:
    rows = []
    for clip, answers in per_clip.items():
        for rater, answer in enumerate(answers):
            if answer is not None:
                rows.append({"rater": f"r{rater:02d}", "clip_id": clip, "reading": 0, column: answer,
                             "phase_answer" if column != "phase_answer" else "turing_answer": None})
    return pd.DataFrame(rows)


def test_fleiss_kappa_matches_fleiss_1971():
    per_clip = {}
    for i, counts in enumerate(FLEISS_COUNTS):
        per_clip[f"s{i:02d}"] = [phase for phase, n in zip(PHASES, counts) for _ in range(n)]
    table = answer_agreement(_answer_rows(per_clip, "phase_answer")).set_index("question")
    assert table.loc["phase", "fleiss_kappa"] == pytest.approx(0.210, abs=0.0005)
    assert table.loc["phase", "kappa_clips"] == 10 and table.loc["phase", "kappa_raters"] == 14


def test_nominal_alpha_of_answers_matches_krippendorff_2011():
    """The same 4 x 12 reliability data as categorical answers (missing ones left out): nominal alpha 0.743."""
    per_clip = {f"u{u:02d}": [None if row[u] is None else f"category-{row[u]}" for row in KRIPP]
                for u in range(12)}
    rows = _answer_rows(per_clip, "turing_answer")
    table = answer_agreement(rows).set_index("question")
    assert table.loc["real_or_synthetic", "kripp_alpha_nominal"] == pytest.approx(0.743, abs=0.0005)
    assert "phase" not in table.index  # nobody was asked the phase: no row, not a row of NaNs


def test_turing_roc_by_hand():
    """Rater a: generated clips answered synthetic with confidence 5 and 2, real clips answered real with
    confidence 4 and synthetic with confidence 1, so scores generated {5, 2} vs real {-4, 1}: 4 of 4 pairs
    ordered correctly, AUC 1.0, yet accuracy 3/4. Rater b calls everything real with confidence 3: AUC 0.5."""
    rows = []
    clips = [("g1", "generated", "ophora"), ("g2", "generated", "ophora"), ("n1", "real", "real"),
             ("n2", "real", "real")]
    answers = {"a": [("synthetic", 5), ("synthetic", 2), ("real", 4), ("synthetic", 1)],
               "b": [("real", 3)] * 4}
    for rater, given in answers.items():
        for (clip, source, model), (answer, confidence) in zip(clips, given):
            rows.append({"rater": rater, "clip_id": clip, "source": source, "model": model, "reading": 0,
                         "turing_answer": answer, "turing_confidence": confidence})
    roc = turing_roc(pd.DataFrame(rows)).set_index("rater")
    assert roc.loc["a", "auc"] == 1.0 and roc.loc["a", "accuracy"] == 0.75
    assert roc.loc["a", "sensitivity"] == 1.0 and roc.loc["a", "specificity"] == 0.5
    assert roc.loc["b", "auc"] == 0.5 and roc.loc["b", "sensitivity"] == 0.0 and roc.loc["b", "specificity"] == 1.0
    # pooled, with ties: AUC is the Mann-Whitney probability that a generated clip scores above a real one
    gen, real = [5, 2, -3, -3], [-4, 1, -3, -3]
    wins = sum((g > r) + 0.5 * (g == r) for g in gen for r in real)
    assert roc.loc["all raters", "auc"] == pytest.approx(wins / 16)
    assert roc.loc["all raters", "n"] == 8
