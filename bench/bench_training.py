"""Seconds per optimizer step and peak memory of the training loop: full fine-tune vs LoRA.

    python bench/bench_training.py                      # tiny random model, CPU (or the GPU if present)
    python bench/bench_training.py --full-size          # the real CogVideoX-2b transformer (random weights), GPU
    python bench/bench_training.py --full-size --num-layers 2 --device cpu   # check the full-size path on CPU

Why random weights: speed and memory depend on the architecture, not the values, and nothing is downloaded.
The full-size run uses the 2b transformer (30 layers, 30 heads x 64, text dim 4096, 16 latent channels) on
49x480x720 clips (13x60x90 latents, 226 T5 tokens) with the published settings (fp16 autocast, gradient
checkpointing, AdamW). Each setting runs in its own process so peak memory is not polluted by the previous one.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_full_size_base(folder: Path, num_layers: int) -> Path:
    """A pipeline folder holding what training reads: the 2b transformer (random), the scheduler, VAE config."""
    import torch
    from diffusers import CogVideoXDDIMScheduler, CogVideoXTransformer3DModel

    from ophora.generation.tiny import COGVIDEOX_2B_SCHEDULER_CONFIG

    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel(num_attention_heads=30, attention_head_dim=64, num_layers=num_layers,
                                              text_embed_dim=4096, in_channels=16, out_channels=16,
                                              time_embed_dim=512, sample_frames=49, sample_height=60, sample_width=90)
    transformer.to(torch.float16).save_pretrained(folder / "transformer")
    CogVideoXDDIMScheduler(**COGVIDEOX_2B_SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")
    # Training reads only the VAE's config (its scaling factor); CogVideoX-2b's VAE: 16 channels, 1.15258426.
    (folder / "vae").mkdir(parents=True, exist_ok=True)
    (folder / "vae" / "config.json").write_text(json.dumps(
        {"_class_name": "AutoencoderKLCogVideoX", "latent_channels": 16, "scaling_factor": 1.15258426}))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "CogVideoXPipeline"}))
    return folder


def make_random_encoded(folder: Path, clips: int, latent_shape: tuple, text_shape: tuple, bucket: str) -> Path:
    """An encoded data folder in the format `train encode` writes, filled with random posteriors/embeddings."""
    import torch

    from ophora.training.encode import save_shard, write_index

    (folder / "shards").mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    tensors, entries = {}, []
    for i in range(clips):
        key = f"{i:08d}"
        mean = torch.randn(latent_shape, generator=generator)
        tensors[f"{key}/latent_dist"] = torch.cat([mean, torch.full_like(mean, -4.0)]).half()
        tensors[f"{key}/prompt_embeds"] = torch.randn(text_shape, generator=generator).half() * 0.2
        entries.append({"key": key, "video": f"random-{i}.mp4", "instruction": "random", "bucket": bucket,
                        "latent_shape": [2 * latent_shape[0], *latent_shape[1:]], "text_tokens": text_shape[0]})
    save_shard(folder / "shards" / "shard-00000.safetensors", tensors, entries, [])
    write_index(folder, 1, {"version": 1, "buckets": [bucket]})
    return folder


def run_one(args) -> dict:
    import torch

    from ophora.training.config import config_from_dict
    from ophora.training.trainer import fit

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    work = Path(args.work)
    on_gpu = args.device != "cpu" and torch.cuda.is_available()
    if args.full_size:
        base = work / "base"
        if not (base / "model_index.json").is_file():
            make_full_size_base(base, args.num_layers)
        data = work / "data"
        if not (data / "index.json").is_file():
            frames, height, width = (int(v) for v in args.sample.split("x"))
            make_random_encoded(data, 2, (16, (frames - 1) // 4 + 1, height // 8, width // 8), (226, 4096),
                                args.sample)
    else:
        from ophora.generation.tiny import save_tiny_pipeline

        base = work / "tiny"
        if not (base / "model_index.json").is_file():
            save_tiny_pipeline(base)
        data = work / "data"
        if not (data / "index.json").is_file():
            make_random_encoded(data, 2, (4, 3, 12, 18), (226, 32), "9x96x144")
    config = config_from_dict({
        "stage": f"bench-{args.one}", "base_model": str(base), "data": [str(data)], "output_dir": str(work / f"run-{args.one}"),
        "training": args.one, "lora": {"rank": args.lora_rank, "alpha": args.lora_rank}, "max_train_steps": 1000,
        "global_batch_size": 1, "train_batch_size": 1, "learning_rate": 1e-4, "lr_warmup_steps": 10, "checkpointing_steps": 10_000,
        "validation_steps": 0, "gradient_checkpointing": not args.no_gradient_checkpointing,
        "mixed_precision": ("fp16" if on_gpu else "no") if args.mixed_precision is None else args.mixed_precision,
        "use_8bit_adam": args.use_8bit_adam})
    result = fit(config, stop_at_step=args.steps, cpu=not on_gpu, checkpoint_on_stop=False)
    return {"mode": args.one, "seconds_per_step": result.seconds_per_step,
            "peak_gpu_memory_gib": None if result.peak_memory_bytes is None else result.peak_memory_bytes / 1024**3,
            "peak_cpu_rss_gib": _peak_rss_gib(), "device": "cuda" if on_gpu else "cpu",
            "losses": [round(v, 4) for v in result.losses.values()]}


def _peak_rss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-size", action="store_true", help="the real 2B transformer architecture (GPU)")
    parser.add_argument("--num-layers", type=int, default=30, help="transformer blocks of --full-size (30 = 2b)")
    parser.add_argument("--sample", default="49x480x720", help="FRAMESxHEIGHTxWIDTH of --full-size clips")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per setting (the first is not timed)")
    parser.add_argument("--modes", default="full,lora", help="comma list of full, lora")
    parser.add_argument("--lora-rank", type=int, default=64)
    parser.add_argument("--device", default=None, help="cpu to force CPU")
    parser.add_argument("--mixed-precision", default=None, choices=["no", "fp16", "bf16"])
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    parser.add_argument("--use-8bit-adam", action="store_true")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one mode, print JSON
    args = parser.parse_args()
    if args.one:
        print("BENCH-RESULT " + json.dumps(run_one(args)), flush=True)
        return 0
    with tempfile.TemporaryDirectory(prefix="ophora-bench-") as scratch:
        work = args.work or scratch
        rows = []
        for mode in args.modes.split(","):
            command = [sys.executable, __file__, "--one", mode, "--work", work] + [
                a for a in sys.argv[1:] if not a.startswith("--modes") and a not in args.modes.split(",")]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            line = next((l for l in done.stdout.splitlines() if l.startswith("BENCH-RESULT ")), None)
            if line is None:
                print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
                return 1
            rows.append(json.loads(line[len("BENCH-RESULT "):]))
    size = f"CogVideoX-2b architecture ({args.num_layers} layers), {args.sample}" if args.full_size else \
        "tiny random model, 9x96x144"
    print(f"Training benchmark: {size}, batch 1, {args.steps} steps "
          f"(gradient checkpointing {'off' if args.no_gradient_checkpointing else 'on'})")
    print(f"{'mode':<6} {'device':<6} {'s/step':>8} {'peak GPU GiB':>13} {'peak RSS GiB':>13}")
    for row in rows:
        gpu = "-" if row["peak_gpu_memory_gib"] is None else f"{row['peak_gpu_memory_gib']:.2f}"
        print(f"{row['mode']:<6} {row['device']:<6} {row['seconds_per_step']:>8.3f} {gpu:>13} "
              f"{row['peak_cpu_rss_gib']:>13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
