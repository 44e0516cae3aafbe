"""Coverage of the study report's 95% intervals in simulated studies: mean scores, differences between
models and the Turing test's AUC, each against the method it replaced.

    python bench/bench_study_intervals.py                 # 4000 studies per design (~5-10 min on 2 cores)
    python bench/bench_study_intervals.py --studies 1000  # quicker, coarser (+-0.007)

Mean scores: raters and clips crossed, rater SD 0.5, clip SD 0.8, residual SD 0.7 (the components of the
issue's simulation), true mean 3. "generalized" is the interval the report prints
(:func:`ophora.study.mixed.mean_interval`); "t (Satterthwaite)" is mean +- t(df) x SE from the same table's
SE and df columns, the interval used before. Differences: model - real with shared raters, true -0.5 (t
interval with Satterthwaite df). AUC: the Turing design of tests/study/test_mrmc.py (real clips shared by two
models), RRRC Obuchowski-Rockette; "logit" is the printed interval, "Wald" the AUC-scale one that OR-DBM MRMC
and RJafroc print; the true AUC of a shifted model is the reader-averaged AUC of a 100-reader x 2000-clip
study. Prints coverage with its Monte Carlo standard error and the share of intervals outside the scale.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ophora.study.analysis import score_differences, score_summary  # noqa: E402
from ophora.study.mrmc import mrmc_analysis  # noqa: E402
from tests.study.test_mixed import MU, simulate  # noqa: E402
from tests.study.test_mrmc import turing_study  # noqa: E402

MEAN_DESIGNS = ((3, 40), (8, 30), (3, 10), (5, 20))
AUC_DESIGNS = ((5, 20, 0.0), (3, 10, 0.0), (5, 20, 1.5), (4, 12, 2.5))  # readers, clips per set, shift


def _line(label: str, hits: np.ndarray) -> str:
    share = float(hits.mean())
    return f"{label} {share:.3f} (+-{np.sqrt(share * (1 - share) / hits.size):.3f})"


def mean_scores(studies: int, seed: int) -> None:
    from scipy import stats

    print(f"Mean scores, {studies} simulated studies per design (true mean {MU}):")
    for raters, clips in MEAN_DESIGNS:
        start = time.perf_counter()
        table = score_summary(simulate(seed=seed, studies=studies, raters=raters, clips=clips))
        generalized = ((table["ci_low"] <= MU) & (MU <= table["ci_high"])).to_numpy()
        half = stats.t.ppf(0.975, table["df"]) * table["se"]
        satterthwaite = ((table["mean"] - half <= MU) & (MU <= table["mean"] + half)).to_numpy()
        width = float((table["ci_high"] - table["ci_low"]).mean()), float((2 * half).mean())
        print(f"  {raters} raters x {clips:>2} clips: {_line('generalized', generalized)}, "
              f"{_line('t (Satterthwaite)', satterthwaite)}; mean width {width[0]:.3f} vs {width[1]:.3f} "
              f"({time.perf_counter() - start:.1f} s)")
    for raters, clips in ((3, 10), (3, 40)):
        diffs = score_differences(simulate(seed=seed + 1, studies=studies // 2, raters=raters, clips=clips,
                                           models={"real": 0.0, "gen": -0.5}))
        hits = ((diffs["ci_low"] <= -0.5) & (-0.5 <= diffs["ci_high"])).to_numpy()
        print(f"  difference gen - real, {raters} x {clips} ({studies // 2} studies): {_line('t (Satterthwaite)', hits)}")


def _true_auc(shift: float, seed: int) -> float:
    if shift == 0:
        return 0.5
    big = mrmc_analysis(turing_study(np.random.default_rng(seed), readers=100, n_real=2000, n_generated=2000,
                                     shift=shift))
    return float(big.aucs[big.modalities.index("a")].mean())


def auc(studies: int, seed: int) -> None:
    print(f"Turing AUC (RRRC), {studies // 4} simulated studies per design:")
    rng = np.random.default_rng(seed)
    for readers, clips, shift in AUC_DESIGNS:
        start = time.perf_counter()
        truth = _true_auc(shift, seed)
        logit, wald, outside = [], [], []
        for _ in range(studies // 4):
            m = mrmc_analysis(turing_study(rng, readers=readers, n_real=clips, n_generated=clips,
                                           shift=shift)).analyses["rrrc"].modalities[0]
            logit.append(m.ci_low <= truth <= m.ci_high)
            wald.append(m.wald_low <= truth <= m.wald_high)
            outside.append(m.wald_low < 0 or m.wald_high > 1)
        print(f"  {readers} raters x {2 * clips} clips, true AUC {truth:.3f}: {_line('logit', np.array(logit))}, "
              f"{_line('Wald', np.array(wald))}; Wald outside [0, 1] in {np.mean(outside):.3f} "
              f"({time.perf_counter() - start:.1f} s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    mean_scores(args.studies, args.seed)
    auc(args.studies, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
