"""Clips/second and peak memory of each evaluation metric, with random-weight extractors of the real architectures.

    python bench/bench_eval.py                 # the two real 720x480 49-frame sample clips from ../shared
    python bench/bench_eval.py --clips 4 --threads 2 --clip-arch base
    python bench/bench_eval.py --metrics cdfvd,jedi --video-arch tiny --clips 8   # pipeline cost only
    python bench/bench_eval.py --device cuda --clips 64 --video-arch full          # on a GPU

Per clip (default protocol): FID = 16 frames through Inception-v3 at 299; FVD = one 16-frame 224x224 I3D pass;
CLIPScore = 8 frames through CLIP (ViT-L/14 by default, the default CLIPScore model) plus the instruction;
CD-FVD = the 16-frame window through VideoMAE-v2 ViT-g/14 (1B parameters; ``--video-arch tiny`` for a toy);
JEDi = the same window through V-JEPA 2 ViT-L with its SSv2 pooler. Video models see ``--batch-size`` clips per
pass. Decoding the MP4 is included, as in a real run. Peak memory: the process's peak resident set after each
metric (it only grows, so read each line's increase), plus peak CUDA memory on a GPU. Also times one 2048-d
Frechet distance and a 200-resample bootstrap interval of it.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ophora.eval.clips import ClipRecord, collect_clips
from ophora.eval.frechet import frechet_distance_of_features, frechet_distance_of_samples
from ophora.eval.intervals import bootstrap
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


def _peak_memory(device: str) -> str:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    text = f"peak RSS {rss / 1024:6.2f} GiB"
    if device.startswith("cuda"):
        text += f", peak CUDA {torch.cuda.max_memory_allocated() / 1024**3:.2f} GiB"
        torch.cuda.reset_peak_memory_stats()
    return text


def _time(name: str, extractors: Extractors, records: list[ClipRecord], protocol: Protocol, device: str) -> None:
    extract_features(records[:1], extractors, protocol, "warm-up", device=device)
    start = time.perf_counter()
    extract_features(records, extractors, protocol, "benchmark", need_prompts=False, device=device)
    seconds = time.perf_counter() - start
    print(f"{name:<14} {len(records) / seconds:8.3f} clips/s   {seconds / len(records):7.2f} s/clip   "
          f"{_peak_memory(device)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clip-arch", choices=("tiny", "base", "large"), default="large")
    parser.add_argument("--metrics", default="fid,fvd,cdfvd,jedi,clipscore")
    parser.add_argument("--video-arch", choices=("tiny", "full"), default="full",
                        help="CD-FVD / JEDi networks: the real sizes (ViT-g/14, ViT-L) or toys (pipeline cost)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    protocol = Protocol(batch_size=args.batch_size)
    device = args.device
    wanted = args.metrics.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        records = _clips(args.clips, Path(tmp))
        print(f"torch {torch.__version__}, {args.threads} threads, {len(records)} clips of {records[0].path.name} "
              f"(random-weight extractors)")
        if "fid" in wanted:
            from ophora.eval.inception import random_fid_inception

            _time("FID", Extractors(fid=random_fid_inception()[0].to(device)), records, protocol, device)
        if "fvd" in wanted:
            from ophora.eval.i3d import random_i3d

            _time("FVD", Extractors(fvd=random_i3d()[0].to(device)), records, protocol, device)
        if "cdfvd" in wanted:
            from ophora.eval.tiny import TINY_VIDEOMAE
            from ophora.eval.videomae import random_videomae

            model = random_videomae(TINY_VIDEOMAE if args.video_arch == "tiny" else None)[0].to(device)
            _time(f"CD-FVD/{args.video_arch}", Extractors(cdfvd=model), records, protocol, device)
            del model
        if "jedi" in wanted:
            from ophora.eval.vjepa import random_vjepa, tiny_vjepa_config

            model = random_vjepa(tiny_vjepa_config() if args.video_arch == "tiny" else None)[0].to(device)
            _time(f"JEDi/{args.video_arch}", Extractors(jedi=model), records, protocol, device)
            del model
        if "clipscore" in wanted:
            from ophora.eval.clip_score import load_clip_scorer
            from ophora.eval.tiny import save_random_clip

            scorer, _ = load_clip_scorer(str(save_random_clip(Path(tmp) / "clip", args.clip_arch)), offline=True,
                                         device=device)
            _time(f"CLIPScore/{args.clip_arch}", Extractors(clip=scorer), records, protocol, device)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2500, 2048)), rng.normal(size=(2500, 2048))
    start = time.perf_counter()
    frechet_distance_of_features(a, b)
    print(f"Frechet distance, 2048-d from 2500 samples each: {time.perf_counter() - start:.2f} s")
    clips_a, clips_b = rng.normal(size=(300, 400)), rng.normal(size=(300, 400))
    start = time.perf_counter()
    bootstrap(lambda i, j: frechet_distance_of_samples(clips_a[i], clips_b[j]), [300, 300], resamples=200)
    print(f"FVD-size interval (400-d, 300 clips per set, 200 resamples): {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
