"""Time and peak memory of a full study analysis: 20 raters x 400 clips x 3 criteria plus the Turing test.

    python bench/bench_study_analysis.py                      # 20 raters, 400 clips (200 real, 2 models x 100)
    python bench/bench_study_analysis.py --raters 40 --clips 800

Builds the tidy ratings table a finished study gives (``StudyStore.ratings_frame`` columns; every rater rates
every clip, 10% repeats), then times each part of ``compute_results`` (crossed random-effects scores,
differences, reliability per clip set, intra-rater agreement, OR MRMC of the Turing test, ...) and the
HTML report. Prints seconds per step, the total, and peak memory (Python allocations via tracemalloc and
the process's maximum resident set size).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ophora.study import analysis  # noqa: E402

CRITERIA = ("phase_matching", "construction_realism", "action_realism")
PHASES = ("incision", "capsulorhexis", "hydrodissection", "phacoemulsification")


def ratings_table(raters: int, clips: int, seed: int = 0, repeat_share: float = 0.1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_real = clips // 2
    models = ["real"] * n_real + ["ophora"] * ((clips - n_real) // 2) + ["ophora-v2"] * (clips - n_real - (clips - n_real) // 2)
    clip_ids = [f"c{j:05d}" for j in range(clips)]
    phase = [PHASES[j % len(PHASES)] for j in range(clips)]
    shift = {"real": 0.0, "ophora": -0.6, "ophora-v2": -0.2}
    synthetic_rate = {"real": 0.35, "ophora": 0.6, "ophora-v2": 0.5}
    clip_effect = rng.normal(0, 0.8, clips)
    rater_effect = rng.normal(0, 0.5, raters)
    rows = []
    for i in range(raters):
        repeats = set(rng.choice(clips, int(clips * repeat_share), replace=False))
        for j in range(clips):
            for reading in (0, 1) if j in repeats else (0,):
                answer = "synthetic" if rng.random() < synthetic_rate[models[j]] else "real"
                confidence = int(rng.integers(1, 6))
                for criterion in CRITERIA:
                    score = int(np.clip(round(4 + shift[models[j]] + rater_effect[i] + clip_effect[j]
                                              + rng.normal(0, 0.7)), 1, 5))
                    rows.append((f"rater{i:02d}", clip_ids[j], models[j], "real" if models[j] == "real" else "generated",
                                 models[j], phase[j], reading, criterion, score, answer, confidence,
                                 answer == ("real" if models[j] == "real" else "synthetic")))
    return pd.DataFrame(rows, columns=["rater", "clip_id", "clip_set", "source", "model", "phase", "reading", "criterion",
                                       "score", "turing_answer", "turing_confidence", "turing_correct"]).assign(
        phase_answer=None, phase_correct=None, study="bench")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raters", type=int, default=20)
    parser.add_argument("--clips", type=int, default=400)
    args = parser.parse_args()
    ratings = ratings_table(args.raters, args.clips)
    scales = {c: (1, 5) for c in CRITERIA}
    print(f"{args.raters} raters x {args.clips} clips x {len(CRITERIA)} criteria: {len(ratings)} rating rows "
          f"(incl. 10% repeat readings), 3 clip sets, Turing answers on every reading")
    tracemalloc.start()
    steps = [
        ("scores (model x criterion)", lambda: analysis.score_summary(ratings)),
        ("scores (model x phase x criterion)", lambda: analysis.score_summary(ratings, by_phase=True)),
        ("differences + Holm", lambda: analysis.score_differences(ratings)),
        ("reliability per clip set (ICC, alpha)", lambda: analysis.reliability(ratings, scales)),
        ("intra-rater (kappa, ICC, alpha)", lambda: analysis.intra_rater(ratings, scales)),
        ("Turing test MRMC (OR, jackknife)", lambda: analysis.turing_mrmc(ratings)),
    ]
    total_start = time.perf_counter()
    for name, step in steps:
        start = time.perf_counter()
        step()
        print(f"  {name:<40} {time.perf_counter() - start:6.2f} s")
    start = time.perf_counter()
    results = analysis.compute_results(ratings, scales=scales, title="Benchmark")
    compute = time.perf_counter() - start
    print(f"  {'compute_results (everything above + rest)':<40} {compute:6.2f} s")
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        analysis.export_html(results, Path(folder) / "report.html")
        analysis.export_csv(results, Path(folder) / "tables")
        print(f"  {'HTML report + CSV/iMRMC export':<40} {time.perf_counter() - start:6.2f} s")
    total = time.perf_counter() - total_start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    auc = results.turing_auc
    print(f"total {total:.1f} s (compute_results alone {compute:.1f} s); peak Python allocations {peak / 2**20:.0f} MiB, "
          f"max RSS {rss:.0f} MiB")
    print("AUC (rrrc): " + ", ".join(f"{r.modality} {r.auc:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"
                                     for r in auc[auc["analysis"] == "rrrc"].itertuples()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
