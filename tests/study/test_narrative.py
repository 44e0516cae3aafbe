"""The clinician's summary: one paragraph per model, the right conclusion from each interval, rounded
numbers and readable names."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ophora.study.analysis import compute_results
from ophora.study.narrative import model_paragraphs, readable, summary_markdown


def _study(seed: int = 0) -> pd.DataFrame:
    """5 raters, 20 real clips, 20 'ophora' clips (often called synthetic, scored lower), 20 'v2' clips
    (called synthetic as often as real ones)."""
    rng = np.random.default_rng(seed)
    rows = []
    clips = ([(f"real{k}", "real", "incision") for k in range(20)] + [(f"o{k}", "ophora", "capsulorhexis") for k in range(20)]
             + [(f"v{k}", "v2", "incision") for k in range(20)])
    rater_effect = rng.normal(0, 0.5, 5)
    for i in range(5):
        for clip, model, phase in clips:
            p_synthetic = {"real": 0.3, "ophora": 0.8, "v2": 0.3}[model]
            answer = "synthetic" if rng.random() < p_synthetic else "real"
            for criterion in ("phase_matching", "construction_realism"):
                score = int(np.clip(round(4 - 1.0 * (model == "ophora") + rater_effect[i] + rng.normal(0, 0.7)), 1, 5))
                rows.append({"rater": f"r{i}", "clip_id": clip, "clip_set": model, "model": model, "phase": phase,
                             "source": "real" if model == "real" else "generated", "reading": 0, "criterion": criterion,
                             "score": score, "turing_answer": answer, "turing_confidence": int(rng.integers(1, 6)),
                             "turing_correct": None, "phase_answer": None, "phase_correct": None})
    return pd.DataFrame(rows)


def test_one_paragraph_per_model_with_the_right_conclusions():
    results = compute_results(_study())
    paragraphs = dict(model_paragraphs(results))
    assert list(paragraphs) == ["ophora", "v2", "real"]
    ophora, v2 = paragraphs["ophora"], paragraphs["v2"]
    auc = results.turing_auc.set_index(["modality", "analysis"])
    assert auc.loc[("ophora", "rrrc"), "ci_low"] > 0.5 and "could tell them apart better than chance" in ophora
    assert auc.loc[("v2", "rrrc"), "ci_low"] <= 0.5 <= auc.loc[("v2", "rrrc"), "ci_high"]
    assert "could not reliably tell them from real clips" in v2
    assert ophora.startswith("Ophora: Raters told Ophora clips from real ones with AUC ")
    assert "5 raters, 40 clips" in ophora and "below real clips" in ophora and "Holm-adjusted" in ophora
    assert "Construction realism" in ophora and "Phase matching" in ophora and "phase_matching" not in ophora
    text = summary_markdown(results)
    assert not re.search(r"\d\.\d{4}", text)  # rounded: AUC 2 decimals, scores 1, p-values at most 3
    assert text.startswith("5 raters scored 60 clips.")


def test_readable_names():
    assert readable("phase_matching") == "Phase matching"
    assert readable("phacoemulsification") == "Phacoemulsification" and readable("incision") == "Incision"
    assert readable("ophora-v2") == "Ophora v2"
