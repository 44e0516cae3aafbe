"""How well the study import's picture screening works on footage it was not tuned on.

Corpus: the Ophora sample clips in ../shared/samples (real model output) and five ffmpeg test sources
(testsrc2, smptehdbars, mandelbrot, life, cellauto) at two sizes. Each clip is screened as is (false alarms),
with the project's SYNTHETIC label burned in by ``add_synthetic_mark`` and then re-encoded at CRF 18/28/38
and rescaled to 0.5x/0.75x/1.5x (detection), and with black bars of 8, 20 and 40 px (letterbox and
pillarbox; border depth found within the crop margin). Prints the figures quoted in docs/studies.md.

    PYTHONPATH=$PWD python bench/bench_screening.py [--shared ../shared]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from ophora.generation.video import add_synthetic_mark, read_clip, write_clip
from ophora.study.blinding import ffmpeg_exe
from ophora.study.screening import EDGE_MARGIN, MARK_THRESHOLD, measure_borders, mark_score, sample_luma

SOURCES = ("testsrc2", "smptehdbars", "mandelbrot", "life=s={size}:mold=10:r=8:ratio=0.1", "cellauto")


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


def corpus(shared: Path, folder: Path) -> list[Path]:
    clips = sorted((shared / "samples").rglob("*.mp4"))
    for size in ("720x480", "480x320"):
        for source in SOURCES:
            name = source.split("=")[0]
            spec = source.format(size=size) if "{size}" in source else f"{source}=size={size}:rate=8"
            out = folder / f"{name}_{size}.mp4"
            _ffmpeg("-f", "lavfi", "-i", spec, "-frames:v", "24", "-c:v", "libx264", "-crf", "20",
                    "-pix_fmt", "yuv420p", str(out))
            clips.append(out)
    return clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", default="../shared")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clips = corpus(Path(args.shared), folder)
        clean_scores, marked_scores, border_errors, false_borders = [], [], [], 0
        for clip in clips:
            frames, _ = read_clip(clip)
            frames = frames[:24]
            clean_scores.append(mark_score(sample_luma(clip)))
            false_borders += measure_borders(sample_luma(clip)).any
            labelled = write_clip(add_synthetic_mark(frames), folder / f"m_{clip.stem}.mp4", fps=8)
            for crf in (18, 28, 38):
                for scale in (0.5, 0.75, 1.0, 1.5):
                    out = folder / "variant.mp4"
                    _ffmpeg("-i", str(labelled), "-vf", f"scale=trunc(iw*{scale}/2)*2:trunc(ih*{scale}/2)*2",
                            "-c:v", "libx264", "-crf", str(crf), "-pix_fmt", "yuv420p", str(out))
                    marked_scores.append((crf, scale, mark_score(sample_luma(out))))
            h, w = frames.shape[1:3]
            for bar in (8, 20, 40):
                for name, vf, true in (("letterbox", f"scale={w}:{h - 2 * bar},pad={w}:{h}:0:{bar}", "top"),
                                       ("pillarbox", f"scale={w - 2 * bar}:{h},pad={w}:{h}:{bar}:0", "left")):
                    out = folder / "barred.mp4"
                    _ffmpeg("-i", str(clip), "-frames:v", "24", "-vf", vf, "-c:v", "libx264", "-crf", "23",
                            "-pix_fmt", "yuv420p", str(out))
                    found = getattr(measure_borders(sample_luma(out)), true)
                    border_errors.append(found - bar)
        clean = np.array(clean_scores)
        hits = np.array([s for _, _, s in marked_scores])
        print(f"corpus: {len(clips)} clips ({len(clips) - 10} Ophora samples, 10 ffmpeg test sources)")
        print(f"label score, unlabelled clips: max {clean.max():.3f}, median {np.median(clean):.3f} "
              f"(threshold {MARK_THRESHOLD}); false alarms {int((clean >= MARK_THRESHOLD).sum())}/{len(clean)}")
        print(f"label score, labelled clips (CRF 18-38, scale 0.5-1.5x): min {hits.min():.3f}, median "
              f"{np.median(hits):.3f}; found {int((hits >= MARK_THRESHOLD).sum())}/{len(hits)}")
        for crf, scale, score in marked_scores:
            if score < MARK_THRESHOLD:
                print(f"  missed: CRF {crf}, scale {scale}: score {score:.3f}")
        errors = np.array(border_errors)
        print(f"bars of 8/20/40 px: measured depth - true depth from {errors.min()} to {errors.max()} px "
              f"(crop margin {EDGE_MARGIN} px included); missed {int((errors < 0).sum())}/{len(errors)}; "
              f"borders reported on unbarred clips: {false_borders}/{len(clips)}")
    print(f"took {time.perf_counter() - start:.0f} s (shared machine: timings are noisy)")


if __name__ == "__main__":
    main()
