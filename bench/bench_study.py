"""Rating-submission latency with many raters at once on a SQLite study database.

    python bench/bench_study.py                 # 50 concurrent raters, 20 clips each
    python bench/bench_study.py --raters 50 --clips 40 --think-ms 500

Each rater is a thread (as in the app server: one process, one StudyStore) that loops next_item ->
submit_rating. Two rounds: "burst" (no think time: all 50 press submit at once, all the time; the worst
case, where SQLite's single writer makes raters queue) and "paced" (each rater pauses a random 0-2x
--think-ms between clips, still far busier than real raters who watch a clip for seconds). Prints the
median and p99 latency of submit_rating (the call a rater waits on) and of next_item for each round, and
that the record still verifies (`study verify`). `--profile`: one rater alone under cProfile afterwards.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ophora.study import StudyStore, parse_definition  # noqa: E402
from ophora.study.blinding import ffmpeg_exe  # noqa: E402
from ophora.study.db import integrity_check  # noqa: E402


def make_clips(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=8:duration=0.5",
                        "-vf", f"hue=h={i * 13 % 360},drawbox=x={i % 50}:y=2:w=4:h=4:color=white:t=fill",
                        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(folder / f"clip{i:03d}.mp4")],
                       check=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def run_round(args, think_ms: float) -> bool:
    work = Path(tempfile.mkdtemp(prefix="ophora-bench-"))
    make_clips(work / "clips", args.clips)
    definition = parse_definition({
        "slug": "bench", "title": "Benchmark", "seed": 1,
        "criteria": [{"name": n, "scale": {"min": 1, "max": 5}} for n in
                     ("phase_matching", "construction_realism", "action_realism")],
        "ask_phase": True, "turing_test": True,
        "clip_sets": [{"name": "set", "source": "generated", "model": "m", "folder": str(work / "clips"),
                       "phase": "incision"}],
        "raters": [f"rater{i:02d}" for i in range(args.raters)],
        "blinding": {"width": 64, "height": 48, "fps": 8},
    }, base_dir=work)
    db = work / "bench.db"
    store = StudyStore(db, pool_size=args.raters, max_overflow=10, sqlite_synchronous=args.synchronous)
    codes = store.create_study(definition, blind_dir=work / "blinded")
    store.import_clips("bench", definition.clips())
    store.open_study("bench")

    submit_ms: list[float] = []
    next_ms: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(args.raters)

    def rater(code: str) -> None:
        rng = random.Random(code)
        barrier.wait()
        while True:
            if think_ms:
                time.sleep(rng.uniform(0, 2 * think_ms) / 1000)
            t0 = time.perf_counter()
            item = store.next_item(code)
            t1 = time.perf_counter()
            if item is None:
                break
            store.submit_rating(code, item.clip_id, {c["name"]: 1 + item.position % 5 for c in item.criteria},
                                phase="incision", turing="synthetic", confidence=3, seconds=1.0)
            t2 = time.perf_counter()
            with lock:
                next_ms.append((t1 - t0) * 1000)
                submit_ms.append((t2 - t1) * 1000)

    start = time.perf_counter()
    with ThreadPoolExecutor(args.raters) as pool:
        list(pool.map(rater, codes.values()))
    wall = time.perf_counter() - start
    stored = len(store.ratings_frame("bench"))
    expected = args.raters * args.clips * len(definition.criteria)
    label = f"paced (think {think_ms:.0f} ms mean)" if think_ms else "burst (no think time)"
    print(f"[{label}] {args.raters} concurrent raters x {args.clips} clips, {len(submit_ms)} submissions "
          f"in {wall:.1f} s ({len(submit_ms) / wall:.0f}/s)")
    print(f"  submit_rating latency: median {statistics.median(submit_ms):.1f} ms, "
          f"p99 {percentile(submit_ms, 99):.1f} ms, max {max(submit_ms):.1f} ms")
    print(f"  next_item latency:     median {statistics.median(next_ms):.1f} ms, p99 {percentile(next_ms, 99):.1f} ms")
    check = store.verify_record("bench")
    print(f"  ratings stored: {stored} of {expected}; integrity_check: {integrity_check(store.engine)}; "
          f"{check.line if check.ok else 'RECORD CHECK FAILED: ' + check.problems[0]}")
    if args.profile and not think_ms:
        profile_one_rater(store, definition)
    store.close()
    shutil.rmtree(work, ignore_errors=True)
    return stored == expected


def profile_one_rater(store: StudyStore, definition) -> None:
    """--profile: one more rater alone (no contention) submits every clip under cProfile; prints the
    uncontended time per submission and where it goes."""
    import cProfile
    import pstats

    code = store.add_rater("bench", "profiled")
    prof, wall = cProfile.Profile(), []
    while (item := store.next_item(code)) is not None:
        scores = {c["name"]: 3 for c in item.criteria}
        t0 = time.perf_counter()
        prof.enable()
        store.submit_rating(code, item.clip_id, scores, phase="incision", turing="real", confidence=3, seconds=1.0)
        prof.disable()
        wall.append((time.perf_counter() - t0) * 1000)
    stats = pstats.Stats(prof)
    print(f"[profile] one rater alone: submit_rating median {statistics.median(wall):.1f} ms under cProfile, "
          f"{stats.total_calls / len(wall):.0f} Python calls per submission; top 12 by cumulative time:")
    stats.sort_stats("cumulative").print_stats(12)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raters", type=int, default=50)
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--think-ms", type=float, default=300.0, help="mean pause between clips in the paced round")
    parser.add_argument("--profile", action="store_true", help="after the burst round, profile one rater alone")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL",
                        help="SQLite synchronous mode (FULL, the default, fsyncs every committed rating)")
    args = parser.parse_args()
    print(f"SQLite study database (WAL, synchronous={args.synchronous}, BEGIN IMMEDIATE), one StudyStore, "
          f"one thread per rater")
    ok = run_round(args, 0.0)
    ok = run_round(args, args.think_ms) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
