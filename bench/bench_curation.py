"""Benchmark the whole `python -m ophora curate` command against plain decoding of the same files.

Both sides run as commands, start-up included: the curate command (default config: every frame screened for
faces and burned-in text, cuts, window, rule refiner, PHI screens; no LLM) with 1 and 2 workers, and a plain
OpenCV decode of the same files by the same number of processes (one FFmpeg decoder thread each, as the
curation decodes; ``--plain-threads opencv-default`` gives the plain side OpenCV's default of one decoder
thread per core instead, which makes it faster with 1 process and costs more CPU). A curation worker
decodes on one FFmpeg thread, but screens each frame on a side thread while the clip decodes, so one
worker can use a second core: the wall-clock ratio with 1 worker counts that core, the CPU-seconds ratio
(all processes of each command) does not, and with as many workers as cores the two agree.
Clips are 49-frame 720x480 clips like the training data: the two real Ophora clips and copies of them made
different (mirrored, upside down, darker or brighter, panned; re-encoded), so no file is decoded from a warm
cache twice. Prints seconds, clips/minute and the ratio plain/curate for each worker count (the goal is >= 0.6),
the CPU seconds both commands used (less sensitive to other jobs on a shared machine), then the text screen's
cascade recall against Tesseract on every whole frame of a random burned-in corpus.

Usage: python bench/bench_curation.py [--clips 160] [--workers 1 2] [--recall-frames 40]
Timings on a shared machine are noisy: run it twice and on an idle machine before quoting a figure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CAPTION = "In this video the surgeon injects fluid under the capsule with a cannula to free the nucleus."


def decode_file(path: str, one_thread: bool = True) -> int:
    import contextlib

    import cv2

    from ophora.curation.decode import single_decode_thread

    cv2.setNumThreads(1)
    with single_decode_thread() if one_thread else contextlib.nullcontext():
        capture = cv2.VideoCapture(path)
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    return frames


def plain_decode(paths: list[str], workers: int, one_thread: bool = True) -> int:
    """The reference: decode every file with ``workers`` processes and do nothing else."""
    import functools
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    if workers <= 1:
        return sum(decode_file(path, one_thread) for path in paths)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        return sum(pool.map(functools.partial(decode_file, one_thread=one_thread), paths))


def make_clips(folder: Path, count: int) -> list[str]:
    """``count`` distinct 49-frame 720x480 clips from the real Ophora clips: mirrored or not, upside down or
    not, brightness shifted by -24 to +24 and panned by multiples of 8 px, so each is its own bitstream."""
    import numpy as np

    from ophora.generation.video import read_clip, write_clip

    real = sorted((REPO.parent / "shared/samples/ophora-generated").glob("*.mp4"))
    sources = [read_clip(path)[0] for path in real]
    paths = []
    for k in range(count):
        frames = sources[k % len(sources)]
        variant = k // len(sources)
        if variant % 2:
            frames = frames[:, :, ::-1]  # mirrored
        if (variant // 2) % 2:
            frames = frames[:, ::-1]  # upside down
        shift = -24 + 6 * ((variant // 4) % 9)  # darker or brighter: the same continuous shot, another bitstream
        frames = np.roll(frames, 8 * (variant // 36), axis=2)  # panned
        frames = np.clip(frames.astype(np.int16) + shift, 0, 255).astype(np.uint8)
        paths.append(str(write_clip(np.ascontiguousarray(frames[:49]), folder / f"clip{k:03d}.mp4", fps=8)))
    return paths


def timed_command(command: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and its processes): on a shared machine the CPU seconds
    move much less with other jobs' load than the wall time does."""
    import resource

    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed:\n{result.stderr[-2000:]}")
    return seconds, (after.ru_utime - used.ru_utime) + (after.ru_stime - used.ru_stime)


def cascade_recall(frames_count: int) -> dict:
    from ophora.curation.config import load_config
    from ophora.curation.privacy import TextScreen
    from ophora.curation.screen_corpus import burned_in_frames
    from ophora.generation.video import read_clip

    real = sorted((REPO.parent / "shared/samples/ophora-generated").glob("*.mp4"))
    frames = [frame for path in real for frame in read_clip(path)[0]]
    return TextScreen(load_config()["privacy"]["text_prescreen"]).cascade_recall(
        burned_in_frames(frames, frames_count, seed=2026))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=160, help="49-frame clips (start-up weighs less with more)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--recall-frames", type=int, default=40, help="0: skip the recall measurement")
    parser.add_argument("--plain-threads", choices=["one", "opencv-default"], default="one",
                        help="FFmpeg decoder threads of the plain side: one per process, as the curation decodes "
                             "(default), or OpenCV's default of one per core")
    parser.add_argument("--plain-decode", nargs="+", metavar="VIDEO", help=argparse.SUPPRESS)  # the reference side
    args = parser.parse_args()
    if args.plain_decode:
        plain_decode(args.plain_decode, args.workers[0], args.plain_threads == "one")
        return 0
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_clips(folder, args.clips)
        pd.DataFrame({"video": paths, "caption": [CAPTION] * len(paths)}).to_csv(folder / "clips.csv", index=False)
        print(f"{len(paths)} clips of 49 frames, 720x480; whole commands, start-up included")
        for workers in args.workers:
            plain, plain_cpu = timed_command([sys.executable, __file__, "--workers", str(workers),
                                              "--plain-threads", args.plain_threads, "--plain-decode", *paths])
            curate, curate_cpu = timed_command([sys.executable, "-m", "ophora", "curate", "--input",
                                                str(folder / "clips.csv"), "--out",
                                                str(folder / f"curated{workers}.parquet"), "--workers", str(workers),
                                                "--fresh", "--quiet"])
            kept = int((pd.read_parquet(folder / f"curated{workers}.parquet")["decision"] == "keep").sum())
            print(f"{workers} worker(s): plain decode {plain:6.1f} s ({len(paths) / plain * 60:6.1f} clips/min), "
                  f"curate {curate:6.1f} s ({len(paths) / curate * 60:6.1f} clips/min, {kept} kept); "
                  f"ratio {plain / curate:4.2f} (goal >= 0.60); CPU seconds plain {plain_cpu:5.1f}, "
                  f"curate {curate_cpu:5.1f} (ratio {plain_cpu / curate_cpu:4.2f})")
    if args.recall_frames:
        recall = cascade_recall(args.recall_frames)
        print(f"text screen cascade on {recall['frames']} frames with burned-in text: cheap pass fired on "
              f"{recall['cheap_pass_fired']}, cascade flagged {recall['cascade_frames']}, Tesseract on every whole "
              f"frame read {recall['ocr_frames']}; recall against it {recall['recall']:.2f} "
              f"({recall['both']}/{recall['ocr_frames']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
