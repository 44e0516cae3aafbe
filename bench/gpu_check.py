"""One-shot GPU check: the memory table and int8 quality in one JSON, in under 9 minutes on one GPU.

What it measures, on the full-size CogVideoX-2b architecture with random weights (T5-XXL, the 2B transformer,
the CogVideoX VAE; nothing is downloaded) at the published 49x480x720:

- per-clip latency and peak VRAM through the real loader and engine for: fp16 without offload, bitsandbytes
  int8, int8 + model CPU offload, and model CPU offload + VAE tiling (``--steps`` denoising steps, timed per
  step, and scaled to the published 50 steps: measured clip time + (50 - steps) x median step);
- PSNR of the int8 clip against the fp16 clip with the same seed (random weights: a measure of how far 8-bit
  arithmetic moves the output, not of visual quality);
- one training step of the 2B transformer, full fine-tune vs LoRA (rank 64), through the real training loop:
  seconds per step and peak VRAM.

Every measurement runs in its own process with its own time limit (peak memory is its own, and a hang or an
out-of-memory costs one row, not the run); an error is recorded in its row and the check goes on. The JSON is
rewritten after every row, so even a killed run leaves its figures.

  python bench/gpu_check.py --out gpu_check.json              # on the GPU machine (about 8 minutes)
  python bench/gpu_check.py --dry-run --out /tmp/check.json   # the same code path on CPU, tiny model (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
for folder in (REPO, BENCH):  # the ophora package and the sibling benchmark helpers
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

PROMPT = "Inject balanced salt solution under the capsule rim with a cannula until a fluid wave frees the nucleus."
PUBLISHED_STEPS = 50
SEED = 42

# name -> loader options. Precision "fp16" becomes fp32 in --dry-run (CPU half kernels are partial).
INFERENCE = {
    "fp16_no_offload": {"precision": "fp16", "quantization": "none", "memory": "none", "vae_tiling": True},
    "int8_bitsandbytes": {"precision": "fp16", "quantization": "int8", "memory": "none", "vae_tiling": True},
    "int8_model_offload": {"precision": "fp16", "quantization": "int8", "memory": "model_offload", "vae_tiling": True},
    "model_offload_vae_tiling": {"precision": "fp16", "quantization": "none", "memory": "model_offload",
                                 "vae_tiling": True},
}
TRAINING = ("full", "lora")
# Share of the total budget each section may use (the rest is start-up and slack).
SHARES = {"build": 0.22, "inference": 0.13, "training": 0.09}


# ---------------------------------------------------------------------------------------------- measurements
def build_model(work: Path, dry_run: bool) -> dict:
    """The pipeline folder every other section loads: full-size random weights, or the tiny model."""
    folder = work / "model"
    start = time.perf_counter()
    if dry_run:
        from ophora.generation.tiny import save_tiny_pipeline

        save_tiny_pipeline(folder)
    else:
        from bench_generation import _build_full_size_folder

        _build_full_size_folder(folder)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return {"seconds": time.perf_counter() - start, "folder_gib": size / 1024**3}


def _peak_rss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def run_inference(name: str, work: Path, steps: int, dry_run: bool) -> dict:
    """Load with one configuration, generate one clip at the model's native size, time it, keep its frames."""
    import numpy as np
    import torch

    from ophora.generation.engine import GenerationRequest, generate
    from ophora.generation.loading import LoadOptions, load_pipeline

    settings = dict(INFERENCE[name])
    if dry_run:
        settings["precision"] = "fp32"
    device = "cpu" if dry_run else "cuda"
    cuda = device == "cuda"
    start = time.perf_counter()
    loaded = load_pipeline(LoadOptions(model=str(work / "model"), device=device, **settings))
    load_s = time.perf_counter() - start
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    result = generate(loaded, GenerationRequest(prompt=PROMPT, seed=SEED, num_inference_steps=steps))
    if cuda:
        torch.cuda.synchronize()
    np.save(work / f"frames-{name}.npy", result.frames)
    step_s = result.step_seconds
    median = statistics.median(step_s[1:] or step_s)  # the first step carries the text encoding
    request = result.request
    return {
        "settings": settings, "plan": {"device": loaded.plan.device, "precision": loaded.plan.precision,
                                       "quantization": loaded.plan.quantization, "memory": loaded.plan.memory},
        "size": f"{request.num_frames}x{request.height}x{request.width}", "steps": steps,
        "load_s": load_s, "clip_s": result.seconds, "median_step_s": median,
        "clip_s_scaled_to_50_steps": result.seconds + (PUBLISHED_STEPS - steps) * median,
        "peak_vram_gib": torch.cuda.max_memory_allocated() / 1024**3 if cuda else None,
        "peak_vram_reserved_gib": torch.cuda.max_memory_reserved() / 1024**3 if cuda else None,
        "peak_rss_gib": _peak_rss_gib(),
    }


def run_training(mode: str, work: Path, dry_run: bool) -> dict:
    """One timed optimizer step (after one warm-up step) of the transformer through the real training loop."""
    import torch
    from bench_training import make_random_encoded

    from ophora.training.config import config_from_dict
    from ophora.training.trainer import fit

    data = work / "encoded"
    if not (data / "index.json").is_file():
        if dry_run:  # the tiny model: 4 latent channels, 32-d text
            make_random_encoded(data, 2, (4, 3, 12, 18), (226, 32), "9x96x144")
        else:  # CogVideoX-2b at 49x480x720: 16 x 13 x 60 x 90 latents, 226 T5-XXL tokens
            make_random_encoded(data, 2, (16, 13, 60, 90), (226, 4096), "49x480x720")
    on_gpu = not dry_run and torch.cuda.is_available()
    config = config_from_dict({
        "stage": f"gpu-check-{mode}", "base_model": str(work / "model"), "data": [str(data)],
        "output_dir": str(work / f"train-{mode}"), "training": mode, "lora": {"rank": 64, "alpha": 64},
        "max_train_steps": 1000, "train_batch_size": 1, "learning_rate": 1e-4, "lr_warmup_steps": 10,
        "checkpointing_steps": 10_000, "validation_steps": 0, "gradient_checkpointing": True,
        "mixed_precision": "fp16" if on_gpu else "no"})
    result = fit(config, stop_at_step=2, cpu=not on_gpu, checkpoint_on_stop=False)
    return {"mode": mode, "seconds_per_step": result.seconds_per_step,
            "peak_vram_gib": None if result.peak_memory_bytes is None else result.peak_memory_bytes / 1024**3,
            "peak_rss_gib": _peak_rss_gib(), "losses": [round(v, 4) for v in result.losses.values()],
            "gradient_checkpointing": True, "mixed_precision": config.mixed_precision}


def psnr(reference, other) -> float:
    """Peak signal-to-noise ratio of two uint8 clips in dB (inf when identical)."""
    import numpy as np

    mse = float(np.mean((reference.astype(np.float64) - other.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# ---------------------------------------------------------------------------------------------- orchestration
def _child(section: str, name: str, work: Path, steps: int, dry_run: bool) -> dict:
    if section == "build":
        return build_model(work, dry_run)
    if section == "inference":
        return run_inference(name, work, steps, dry_run)
    return run_training(name, work, dry_run)


def _run_section(section: str, name: str, args, work: Path, timeout_s: float) -> dict:
    """Run one measurement in a fresh process; a crash, an out-of-memory or the time limit becomes an error row."""
    if timeout_s < 5:
        return {"error": "skipped: the time budget was used up by earlier sections"}
    command = [sys.executable, __file__, "--child", section, "--name", name, "--work", str(work), "--steps",
               str(args.steps)] + (["--dry-run"] if args.dry_run else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired as expired:
        tail = (expired.stderr or b"")[-1500:]
        return {"error": f"timed out after {timeout_s:.0f} s (its share of the budget)",
                "stderr_tail": tail.decode(errors="replace") if isinstance(tail, bytes) else tail,
                "wall_s": time.perf_counter() - start}
    line = next((l for l in done.stdout.splitlines() if l.startswith("GPU-CHECK-RESULT ")), None)
    if line is None:
        return {"error": f"exit code {done.returncode}", "stderr_tail": done.stderr[-1500:],
                "wall_s": time.perf_counter() - start}
    payload = json.loads(line[len("GPU-CHECK-RESULT "):])
    payload["wall_s"] = time.perf_counter() - start
    return payload


def _environment(dry_run: bool) -> dict:
    import importlib.metadata as md

    info = {"python": platform.python_version(), "dry_run": dry_run, "host": platform.node(),
            "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    for package in ("torch", "diffusers", "transformers", "accelerate", "bitsandbytes", "optimum-quanto", "peft"):
        try:
            info[package] = md.version(package)
        except md.PackageNotFoundError:
            info[package] = None
    try:
        import torch

        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info["gpu"] = props.name
            info["gpu_memory_gib"] = props.total_memory / 1024**3
    except Exception as error:  # noqa: BLE001 - the environment block must never stop the check
        info["torch_error"] = f"{type(error).__name__}: {error}"
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON to write")
    parser.add_argument("--dry-run", action="store_true", help="CPU and the tiny model: checks the code path")
    parser.add_argument("--steps", type=int, default=None,
                        help="denoising steps per clip (default 4 on the GPU, 2 in --dry-run); latency is also "
                             "reported scaled to 50 steps")
    parser.add_argument("--budget-s", type=float, default=510.0, help="the whole check's time limit (seconds)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, deleted after)")
    parser.add_argument("--child", choices=("build", "inference", "training"), help=argparse.SUPPRESS)
    parser.add_argument("--name", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.steps = args.steps or (2 if args.dry_run else 4)
    if args.child:
        print("GPU-CHECK-RESULT " + json.dumps(_child(args.child, args.name, args.work, args.steps, args.dry_run)),
              flush=True)
        return 0

    deadline = time.monotonic() + args.budget_s
    report: dict = {"what": "Ophora Studio GPU check: CogVideoX-2b architecture, random weights" if not args.dry_run
                    else "Ophora Studio GPU check, DRY RUN: tiny model on CPU (figures mean nothing)",
                    "environment": _environment(args.dry_run), "budget_s": args.budget_s, "steps": args.steps,
                    "build": None, "inference": {}, "int8_vs_fp16_psnr_db": None, "training": {}}

    def save() -> None:
        report["elapsed_s"] = args.budget_s - (deadline - time.monotonic())
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=str))

    def timeout(share: float) -> float:
        return min(args.budget_s * share, deadline - time.monotonic() - 5)

    with tempfile.TemporaryDirectory(prefix="ophora-gpu-check-") as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        report["build"] = _run_section("build", "", args, work, timeout(SHARES["build"]))
        save()
        print(f"build: {report['build']}", flush=True)
        if "error" not in report["build"]:
            for name in INFERENCE:
                report["inference"][name] = _run_section("inference", name, args, work, timeout(SHARES["inference"]))
                save()
                print(f"{name}: {report['inference'][name]}", flush=True)
            try:
                import numpy as np

                report["int8_vs_fp16_psnr_db"] = psnr(np.load(work / "frames-fp16_no_offload.npy"),
                                                      np.load(work / "frames-int8_bitsandbytes.npy"))
            except Exception as error:  # noqa: BLE001 - one of the two clips failed; its row says why
                report["int8_vs_fp16_psnr_db"] = {"error": f"{type(error).__name__}: {error}"}
            save()
            for mode in TRAINING:
                report["training"][mode] = _run_section("training", mode, args, work, timeout(SHARES["training"]))
                save()
                print(f"training {mode}: {report['training'][mode]}", flush=True)
    save()
    failed = [k for k, v in {**report["inference"], **report["training"]}.items() if "error" in v]
    print(f"wrote {args.out} ({report['elapsed_s']:.0f} s; {len(failed)} failed: {', '.join(failed) or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
