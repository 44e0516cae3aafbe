"""What the curation's face screen finds, misses and costs, on faces it was not tuned on.

Corpus: real surgical frames (the Ophora sample clips in ../shared/samples, as shot, mirrored and upside down)
are the backgrounds and the clean set. Faces are pasted on them at random places, at a height of 20%, 30%, 45%
and 60% of the frame, with random brightness, then JPEG-compressed (quality 70) as a video encoder would
blur them:
- tuning part (the settings were chosen on it): faces 0-49 of scikit-image's LFW subset, seed 11;
- held-out part (never looked at while choosing): LFW faces 50-99, the astronaut photo of scikit-image and
  the photo matplotlib ships, seed 2027.
For each detector setting it prints the cheap pass's cost per 720x480 frame on one core, the share of faces
the whole screen (cheap pass, then the stricter confirmation where it fires) finds at each size, and false
alarms on the clean frames. ``--write`` stores the held-out figures of the configured screen for the dataset
card (ophora/curation/frame_screen_measured.json).

    PYTHONPATH=$PWD python bench/bench_face_screen.py [--shared ../shared] [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    from ophora.curation.config import load_config
    from ophora.curation.face_corpus import (HELD_OUT_SEED, TUNING_SEED, clean_frames, face_corpus,
                                             measure_face_screen)
    from ophora.curation.release import FRAME_MEASURED_PATH as MEASURED

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", default=str(REPO.parent / "shared"))
    parser.add_argument("--write", action="store_true", help="store the held-out figures for the dataset card")
    args = parser.parse_args()
    configured = load_config()["privacy"]["face_prescreen"]
    haar = {**configured, "cascade": "haar", "scale_factor": 1.2, "min_neighbors": 3,  # the screen before
            "strict_min_neighbors": 6}
    settings = {"Haar (before)": haar, "LBP (configured)": configured}
    clean = clean_frames(Path(args.shared))
    parts = {"tuning": face_corpus("tuning", clean, TUNING_SEED),
             "held-out": face_corpus("held-out", clean, HELD_OUT_SEED)}
    results = {}
    for name, cfg in settings.items():
        for part, faces in parts.items():
            result = measure_face_screen(cfg, clean, faces)
            results[(name, part)] = result
            found = ", ".join(f"{h} high {a}/{b}" for h, (a, b) in result["found"].items())
            print(f"{name:17s} {part:8s}: cheap pass {result['cheap_pass_ms_per_frame']:.2f} ms/frame; found {found}; "
                  f"clean frames: cheap pass fired on {result['clean_fired']}/{result['clean_frames']}, "
                  f"confirmed {result['clean_confirmed']}")
    if args.write:
        measured = json.loads(MEASURED.read_text()) if MEASURED.is_file() else {}
        measured["face"] = {"corpus": "faces never used for tuning (50 LFW faces, two photographs) pasted on real "
                                      "surgical frames at 20-60% of the frame height, JPEG-compressed; clean set: "
                                      "every frame of the real clips as shot, mirrored and upside down",
                            "seed": HELD_OUT_SEED, **results[("LBP (configured)", "held-out")]}
        MEASURED.write_text(json.dumps(measured, indent=2) + "\n")
        print(f"wrote {MEASURED.relative_to(REPO)}")


if __name__ == "__main__":
    main()
