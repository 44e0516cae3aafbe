"""Measure the text PHI screen on the team's synthetic corpus and print recall, clean-kept share and speed.

The corpus (tests/curation/data/deid_*.jsonl, see the README there) has a development part, written before
the screen was tuned, and a held-out part, written after it was finished; each is reported on its own.
``--write`` stores the figures (not the timings, which depend on the machine) in
ophora/curation/deid_measured.json, which every release card prints; tests/curation/test_deid_corpus.py
fails when that file no longer matches what the screen measures.
Usage: python bench/bench_deid.py [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CORPUS = REPO / "tests" / "curation" / "data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="store the figures in ophora/curation/deid_measured.json")
    args = parser.parse_args()
    from ophora.curation.config import load_config
    from ophora.curation.deid import MEASURED_PATH, measure, measured_figures, shared_deidentifier

    began = time.perf_counter()
    deid = shared_deidentifier(load_config()["privacy"]["deid"])
    print(f"screen ready in {time.perf_counter() - began:.1f} s (imports, dictionary, name lists)")
    figures = measured_figures(deid, CORPUS)
    for part in ("dev", "heldout", "total"):
        f = figures[part]
        print(f"{part:>8}: PHI recall {f['phi_caught']}/{f['phi_items']} = {f['recall']:.3f} over "
              f"{f['phi_narrations']} narrations; clean narrations kept unchanged {f['clean_kept']}/"
              f"{f['clean_narrations']} = {f['clean_kept_share']:.3f}")
        print("          per kind: " + ", ".join(f"{k} {v['caught']}/{v['items']}" for k, v in f["per_kind"].items()))
    rows = {part: [json.loads(line) for line in (CORPUS / f"deid_phi_{part}.jsonl").read_text().splitlines()]
            for part in ("dev", "heldout")}
    for part, phi in rows.items():
        print(f"missed ({part}): {measure(deid, phi, [])['missed']}")
    began = time.perf_counter()
    for row in rows["dev"]:
        deid.screen(row["text"])
    seconds = time.perf_counter() - began
    print(f"speed: {len(rows['dev']) / seconds:.0f} narrations/s ({1000 * seconds / len(rows['dev']):.1f} ms each, "
          f"one process; timings on a shared machine are noisy)")
    if args.write:
        MEASURED_PATH.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {MEASURED_PATH.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
