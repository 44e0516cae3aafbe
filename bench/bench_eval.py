"""Clips/second of each evaluation metric on CPU, with random-weight extractors of the real architectures.

    python bench/bench_eval.py                 # the two real 720x480 49-frame sample clips from ../shared
    python bench/bench_eval.py --clips 4 --threads 2 --clip-arch base

Per clip (default protocol): FID = 16 frames through Inception-v3 at 299; FVD = one 16-frame 224x224 I3D pass;
CLIPScore = 8 frames through CLIP (ViT-L/14 by default, the default CLIPScore model) plus the instruction.
Decoding the MP4 is included, as in a real run. Also times one 2048-d Frechet distance.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ophora.eval.clips import ClipRecord, collect_clips
from ophora.eval.frechet import frechet_distance_of_features
from ophora.eval.metrics import Extractors, Protocol, extract_features

SHARED_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples" / "ophora-generated"


def _clips(count: int, workdir: Path) -> list[ClipRecord]:
    if SHARED_SAMPLES.is_dir():
        records = collect_clips(SHARED_SAMPLES)
    else:
        from ophora.generation.video import write_clip

        rng = np.random.default_rng(0)
        write_clip(rng.integers(0, 255, (49, 480, 720, 3), dtype=np.uint8), workdir / "synthetic.mp4", fps=8)
        records = collect_clips(workdir)
    records = [ClipRecord(r.path, r.prompt or "Carefully remove cortex while managing aspiration.", r.phase)
               for r in records]
    return [records[i % len(records)] for i in range(count)]


def _time(name: str, extractors: Extractors, records: list[ClipRecord], protocol: Protocol) -> None:
    extract_features(records[:1], extractors, protocol, "warm-up")
    start = time.perf_counter()
    extract_features(records, extractors, protocol, "benchmark", need_prompts=False)
    seconds = time.perf_counter() - start
    print(f"{name:<11} {len(records) / seconds:8.3f} clips/s   {seconds / len(records):7.2f} s/clip", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clip-arch", choices=("tiny", "base", "large"), default="large")
    parser.add_argument("--metrics", default="fid,fvd,clipscore")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    protocol = Protocol()
    wanted = args.metrics.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        records = _clips(args.clips, Path(tmp))
        print(f"torch {torch.__version__}, {args.threads} threads, {len(records)} clips of {records[0].path.name} "
              f"(random-weight extractors)")
        if "fid" in wanted:
            from ophora.eval.inception import random_fid_inception

            _time("FID", Extractors(fid=random_fid_inception()[0]), records, protocol)
        if "fvd" in wanted:
            from ophora.eval.i3d import random_i3d

            _time("FVD", Extractors(fvd=random_i3d()[0]), records, protocol)
        if "clipscore" in wanted:
            from ophora.eval.clip_score import load_clip_scorer
            from ophora.eval.tiny import save_random_clip

            scorer, _ = load_clip_scorer(str(save_random_clip(Path(tmp) / "clip", args.clip_arch)), offline=True)
            _time(f"CLIPScore/{args.clip_arch}", Extractors(clip=scorer), records, protocol)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2500, 2048)), rng.normal(size=(2500, 2048))
    start = time.perf_counter()
    frechet_distance_of_features(a, b)
    print(f"Frechet distance, 2048-d from 2500 samples each: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
