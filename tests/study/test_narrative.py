"""The clinician's summary: one paragraph per model whose opening follows the result (told apart, could not
tell, inconclusive), every interval possible and every difference with one, phase rankings only when their
intervals part, rounded numbers and readable names; the issue's 3 x 5 and 2 x 8 pilots say "inconclusive"."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ophora.study.analysis import compute_results, figure_by_criterion, figure_by_phase
from ophora.study.narrative import model_paragraphs, readable, summary_markdown

SCALES = {"phase_matching": (1, 5), "construction_realism": (1, 5)}


def _study(seed: int = 0, raters: int = 5, clips: int = 20, synthetic: dict | None = None,
           criteria=("phase_matching", "construction_realism")) -> pd.DataFrame:
    """``raters`` raters x ``clips`` clips per set. Default: 'ophora' clips often called synthetic and scored
    lower, 'v2' clips called synthetic as often as real ones. ``synthetic``: model -> P(called synthetic)."""
    rng = np.random.default_rng(seed)
    synthetic = synthetic or {"real": 0.3, "ophora": 0.8, "v2": 0.3}
    phases = {"real": "incision", "ophora": "capsulorhexis", "v2": "incision", "v3": "incision"}
    rows = []
    rater_effect = rng.normal(0, 0.5, raters)
    for i in range(raters):
        for model, p_synthetic in synthetic.items():
            for k in range(clips):
                answer = "synthetic" if rng.random() < p_synthetic else "real"
                for criterion in criteria:
                    score = int(np.clip(round(4 - 1.0 * (model == "ophora") + rater_effect[i] + rng.normal(0, 0.7)), 1, 5))
                    rows.append({"rater": f"r{i}", "clip_id": f"{model}{k}", "clip_set": model, "model": model,
                                 "phase": phases[model], "source": "real" if model == "real" else "generated",
                                 "reading": 0, "criterion": criterion, "score": score, "turing_answer": answer,
                                 "turing_confidence": int(rng.integers(1, 6)), "turing_correct": None,
                                 "phase_answer": None, "phase_correct": None})
    return pd.DataFrame(rows)


def _intervals(text: str) -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b in re.findall(r"95% CI (-?\d+\.\d+) to (-?\d+\.\d+)", text)]


def test_one_paragraph_per_model_told_apart_or_inconclusive():
    results = compute_results(_study(), scales=SCALES)
    paragraphs = dict(model_paragraphs(results))
    assert list(paragraphs) == ["ophora", "v2", "real"]
    ophora, v2 = paragraphs["ophora"], paragraphs["v2"]
    auc = results.turing_auc.set_index(["modality", "analysis"])
    assert auc.loc[("ophora", "rrrc"), "ci_low"] > 0.5
    assert ophora.startswith("Ophora: Raters told Ophora clips from real ones better than chance (0.5): AUC ")
    # v2's interval reaches from below 0.5 to above the margin: absence of evidence, not evidence of absence
    assert auc.loc[("v2", "rrrc"), "ci_low"] <= 0.5 and auc.loc[("v2", "rrrc"), "ci_high"] >= 0.6
    assert v2.startswith("V2: Inconclusive: the study is too small to say whether raters can tell V2 clips")
    assert "could not" not in v2 and re.search(r"The study planner .* at \d+ raters each reading about \d+ clips", v2)
    assert "5 raters, 40 clips" in ophora and "below real clips (95% CI" in ophora and "Holm-adjusted" in ophora
    assert "not clearly different from real clips (difference +0.1, 95% CI" in v2  # every difference: an interval
    assert "below V2 clips (95% CI" in ophora
    assert "Construction realism" in ophora and "Phase matching" in ophora and "phase_matching" not in ophora
    text = summary_markdown(results)
    assert not re.search(r"\d\.\d{4}", text)  # rounded: AUC 2 decimals, scores 1, p-values at most 3
    assert text.startswith("5 raters scored 60 clips.")
    assert all(-4 <= low <= high <= 5 for low, high in _intervals(text))
    assert "scored lowest in" not in text  # one phase per model here: no ranking


def test_could_not_tell_only_when_the_interval_excludes_the_margin_and_the_wrong_way_round():
    """8 raters x 60 clips per set: 'v2' answered like real clips (the interval stays below 0.6), 'v3'
    called synthetic less often than the real clips."""
    results = compute_results(_study(seed=1, raters=8, clips=60, synthetic={"real": 0.5, "v2": 0.5, "v3": 0.2},
                                     criteria=("phase_matching",)), scales=SCALES)
    paragraphs = dict(model_paragraphs(results))
    auc = results.turing_auc.set_index(["modality", "analysis"])
    assert auc.loc[("v2", "rrrc"), "ci_high"] < 0.6 and auc.loc[("v3", "rrrc"), "ci_high"] < 0.5
    assert paragraphs["v2"].startswith("V2: Raters could not reliably tell V2 clips from real ones: AUC ")
    assert "the whole interval lies below 0.60, the margin set in the study file before rating" in paragraphs["v2"]
    assert paragraphs["v3"].startswith("V3: Raters told V3 clips from real ones, the wrong way round")
    results.turing_margin = 0.02  # a stricter margin stated in the study file: the same data are inconclusive
    assert dict(model_paragraphs(results))["v2"].startswith("V2: Inconclusive: the study is too small")


def test_the_issue_pilots_say_inconclusive_and_print_no_impossible_interval():
    """3 raters x 5 clips printed "AUC 0.72 (95% CI 0.12 to 1.32)" and "2.4 (95% CI -1.1 to 6.0)" on a 1-5
    scale; 2 raters x 8 clips "AUC 0.50 (95% CI -2.68 to 3.68)"."""
    pilot = compute_results(_study(seed=2, raters=3, clips=5, synthetic={"real": 0.4, "ophora": 0.7}), scales=SCALES)
    three = summary_markdown(pilot)
    for figure in (figure_by_criterion(pilot.ratings), figure_by_phase(pilot.ratings)):  # axes: the 1-5 scale
        assert tuple(figure.layout.yaxis.range) == (1, 5)
        for bar in figure.data:
            assert all(1 <= m - e and m + e2 <= 5 for m, e, e2 in zip(bar.y, bar.error_y.arrayminus, bar.error_y.array))
    ophora = three.split("\n\n")[1]
    assert ophora.startswith("Ophora: Inconclusive: the study is too small to say")
    auc = [(low, high) for low, high in _intervals(ophora.split("Mean scores")[0])]
    assert len(auc) == 1 and 0 <= auc[0][0] <= auc[0][1] <= 1
    assert all(-4 <= low <= high <= 5 for low, high in _intervals(three))
    two = summary_markdown(compute_results(_study(seed=3, raters=2, clips=8, synthetic={"real": 0.5, "ophora": 0.5}),
                                           scales=SCALES))
    ophora = two.split("\n\n")[1]
    assert ophora.startswith("Ophora: Inconclusive: too few raters to say whether raters can tell Ophora clips from "
                             "real ones: AUC ")
    assert "an interval needs at least 3 raters" in ophora
    assert "Mean scores (no interval, too few raters to estimate: at least 3 needed (2 so far)): " in ophora
    assert re.search(r"Construction realism \d\.\d, difference from real clips -?\d\.\d;", ophora)
    assert "95% CI" not in two and "could not" not in two


def test_phase_ranking_only_when_the_intervals_part():
    frame = _study(seed=4, raters=5, clips=20, synthetic={"real": 0.3, "ophora": 0.8}, criteria=("phase_matching",))
    late = frame["clip_id"].str.extract(r"(\d+)$")[0].astype(int) >= 10
    far = frame.assign(phase=np.where(late, "phacoemulsification", frame["phase"]),
                       score=np.where(late & (frame["model"] == "ophora"), np.minimum(frame["score"] + 2, 5), frame["score"]))
    text = dict(model_paragraphs(compute_results(far, scales=SCALES)))["ophora"]
    assert re.search(r"scored lowest in Capsulorhexis \(\d\.\d, 95% CI .*\) and highest in Phacoemulsification "
                     r"\(\d\.\d, 95% CI", text)
    near = frame.assign(phase=np.where(late, "phacoemulsification", frame["phase"]))
    assert "scored lowest" not in dict(model_paragraphs(compute_results(near, scales=SCALES)))["ophora"]


def test_readable_names():
    assert readable("phase_matching") == "Phase matching"
    assert readable("phacoemulsification") == "Phacoemulsification" and readable("incision") == "Incision"
    assert readable("ophora-v2") == "Ophora v2"
