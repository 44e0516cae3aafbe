"""Generation benchmark: per-step latency and peak memory, raw diffusers vs our engine, full precision vs 8-bit.

Each configuration runs in its own subprocess so its peak memory (RSS on CPU, torch.cuda.max_memory_allocated
on CUDA) is its own. Same prompt, same seed everywhere. Prints a table; compare ratios within one run.

  python bench/bench_generation.py                       # tiny random-weight model, on CPU or GPU
  python bench/bench_generation.py --full-size --steps 5 # the real CogVideoX-2b architecture, random weights (GPU)
  python bench/bench_generation.py --transformer-footprint  # the 2B transformer alone, fp32 vs int8, fits a CPU box
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PROMPT = "Inject balanced salt solution under the capsule rim with a cannula until a fluid wave frees the nucleus."


def _build_full_size_folder(path: Path, depth: int | None = None) -> Path:
    """Save the CogVideoX-2b architecture (T5-XXL, 2B transformer, CogVideoX VAE) with random fp16 weights.

    ``depth`` (CI): that many T5 layers, transformer blocks and VAE layers per block, every layer its full-size
    shape, so the builder's code path is tested without writing 11.5 GiB."""
    import torch
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    from ophora.generation.tiny import COGVIDEOX_2B_SCHEDULER_CONFIG, _build_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    fewer = {} if depth is None else {"num_layers": depth}
    with torch.device(device):
        text_encoder = T5EncoderModel(T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240,
                                               num_layers=depth or 24, num_heads=64, feed_forward_proj="gated-gelu",
                                               is_encoder_decoder=False, use_cache=False)).half()
        transformer = CogVideoXTransformer3DModel(**fewer).half()  # the defaults are CogVideoX-2b
        vae = AutoencoderKLCogVideoX(**({} if depth is None else {"layers_per_block": depth})).half()
    pipe = CogVideoXPipeline(tokenizer=_build_tokenizer(), text_encoder=text_encoder, vae=vae,
                             transformer=transformer, scheduler=CogVideoXDDIMScheduler(**COGVIDEOX_2B_SCHEDULER_CONFIG))
    pipe.save_pretrained(path)
    return path


class _RssPeak:
    """Sample this process's resident memory every 5 ms (CPU peak memory)."""

    def __init__(self) -> None:
        import psutil

        self._process, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _run_one(config: dict) -> dict:
    """One measurement, in this (fresh) process."""
    import torch

    from ophora.generation.engine import GenerationRequest, generate, resolve_request
    from ophora.generation.loading import load_pipeline

    torch.set_num_threads(config["threads"])
    loaded = load_pipeline(model=config["model"], quantization=config["quantization"], precision=config["precision"],
                           memory=config["memory"])
    request = resolve_request(loaded, GenerationRequest(prompt=PROMPT, seed=42, num_inference_steps=config["steps"],
                                                        num_frames=config["frames"], height=config["height"],
                                                        width=config["width"]))
    cuda = loaded.plan.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    step_times: list[float] = []
    with _RssPeak() as rss:
        start = time.perf_counter()
        if config["runner"] == "engine":
            result = generate(loaded, request)
            step_times = result.step_seconds
        else:  # the plain diffusers call the published sampler makes
            last = [time.perf_counter()]

            def on_step(pipe, i, t, kwargs):
                if cuda:
                    torch.cuda.synchronize()
                now = time.perf_counter()
                step_times.append(now - last[0])
                last[0] = now
                return kwargs

            loaded.pipe(prompt=request.prompt, num_frames=request.num_frames, height=request.height,
                        width=request.width, num_inference_steps=request.num_inference_steps, guidance_scale=6.0,
                        use_dynamic_cfg=True, generator=torch.Generator().manual_seed(42), output_type="np",
                        callback_on_step_end=on_step)
        total = time.perf_counter() - start
    denoise = step_times[1:] or step_times  # the first includes prompt encoding
    return {
        "config": config["name"], "device": loaded.plan.device, "precision": loaded.plan.precision,
        "quantization": loaded.plan.quantization, "steps": len(step_times),
        "median_step_s": statistics.median(denoise), "total_s": total,
        "peak_gib": (torch.cuda.max_memory_allocated() if cuda else rss.peak) / 1024**3,
        "peak_kind": "cuda allocated" if cuda else "process RSS",
    }


def _transformer_footprint(kind: str, threads: int) -> dict:
    """Resident memory of the full-size CogVideoX-2b transformer (random weights) as the loader leaves it, and
    one denoising forward at a small latent (9x96x144 frames): what 8-bit buys without T5-XXL or a GPU."""
    import gc

    import psutil
    import torch
    from diffusers import CogVideoXTransformer3DModel

    from ophora.generation.loading import quantize_int8_quanto, release_freed_memory

    torch.set_num_threads(threads)
    process = psutil.Process()
    before = process.memory_info().rss
    torch.manual_seed(0)
    model = CogVideoXTransformer3DModel().eval()  # the defaults are CogVideoX-2b; fp32 on CPU, as planned there
    if kind == "int8":
        quantize_int8_quanto(model)
    gc.collect()
    release_freed_memory()  # as the loader does after quantizing; the same call for fp32 keeps it fair
    weights = process.memory_info().rss - before
    latents = torch.randn(1, 3, 16, 12, 18)  # (B, F, C, H, W): 9 frames at 96x144
    text = torch.randn(1, 226, 4096)
    times = []
    with torch.inference_mode():
        for _ in range(3):
            start = time.perf_counter()
            model(hidden_states=latents, encoder_hidden_states=text, timestep=torch.tensor([500]), return_dict=False)
            times.append(time.perf_counter() - start)
    return {"config": f"2b transformer {kind}", "weights_gib": weights / 1024**3, "forward_s": min(times[1:])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-size", action="store_true", help="real CogVideoX-2b architecture, random weights")
    parser.add_argument("--model", help="benchmark an existing pipeline folder instead")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    parser.add_argument("--memory", default="none", help="memory mode for every configuration")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds; configurations alternate each round and the fastest round counts")
    parser.add_argument("--transformer-footprint", action="store_true",
                        help="only the full-size 2B transformer, fp32 vs optimum-quanto int8 (CPU is enough)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--footprint-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(_run_one(json.loads(args.one))))
        return 0
    if args.footprint_one:
        print("RESULT " + json.dumps(_transformer_footprint(args.footprint_one, args.threads)))
        return 0
    if args.transformer_footprint:
        rows = {}
        for kind in ("fp32", "int8"):
            done = subprocess.run([sys.executable, __file__, "--footprint-one", kind, "--threads", str(args.threads)],
                                  capture_output=True, text=True)
            line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                print(f"{kind}: failed\n{done.stderr[-2000:]}")
                return 1
            rows[kind] = json.loads(line[7:])
        print(f"\n{'configuration':<26}{'weights GiB (RSS)':>18}{'forward s':>11}")
        for r in rows.values():
            print(f"{r['config']:<26}{r['weights_gib']:>18.2f}{r['forward_s']:>11.2f}")
        print(f"\nint8 / fp32: weights {rows['int8']['weights_gib'] / rows['fp32']['weights_gib']:.3f}x, "
              f"forward {rows['int8']['forward_s'] / rows['fp32']['forward_s']:.3f}x")
        return 0

    import torch

    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model = args.model
        elif args.full_size:
            print("building the full-size architecture with random weights ...", flush=True)
            model = str(_build_full_size_folder(Path(tmp) / "full"))
        else:
            from ophora.generation.tiny import save_tiny_pipeline

            model = str(save_tiny_pipeline(Path(tmp) / "tiny"))
        half = "fp16" if cuda else "bf16"
        base = {"model": model, "steps": args.steps or (5 if args.full_size else 10), "frames": args.frames,
                "height": args.height, "width": args.width, "threads": args.threads, "memory": args.memory}
        configs = [
            {**base, "name": f"raw diffusers {half}", "runner": "raw", "precision": half, "quantization": "none"},
            {**base, "name": f"engine {half}", "runner": "engine", "precision": half, "quantization": "none"},
            {**base, "name": "engine fp32", "runner": "engine", "precision": "fp32", "quantization": "none"},
            {**base, "name": "engine int8", "runner": "engine", "precision": half, "quantization": "int8"},
        ]
        best: dict[str, dict] = {}
        for _ in range(args.repeat):  # interleaved, so a busy machine slows every configuration alike
            for config in configs:
                done = subprocess.run([sys.executable, __file__, "--one", json.dumps(config)], capture_output=True,
                                      text=True)
                line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
                if line is None:
                    print(f"{config['name']}: failed\n{done.stderr[-2000:]}")
                    continue
                result = json.loads(line[7:])
                if config["name"] not in best or result["median_step_s"] < best[config["name"]]["median_step_s"]:
                    best[config["name"]] = result
        results = [best[c["name"]] for c in configs if c["name"] in best]
    print(f"\n{'configuration':<28}{'device':<8}{'precision':<10}{'quant':<20}{'median step s':>14}{'total s':>10}{'peak GiB':>10}")
    for r in results:
        print(f"{r['config']:<28}{r['device']:<8}{r['precision']:<10}{r['quantization']:<20}{r['median_step_s']:>14.4f}"
              f"{r['total_s']:>10.2f}{r['peak_gib']:>10.2f}")
    by_name = {r["config"]: r for r in results}
    raw, ours = by_name.get(f"raw diffusers {half}"), by_name.get(f"engine {half}")
    if raw and ours:
        print(f"\nengine / raw diffusers, median step: {ours['median_step_s'] / raw['median_step_s']:.3f}x; "
              f"total: {ours['total_s'] / raw['total_s']:.3f}x")
    int8 = by_name.get("engine int8")
    same = next((r for r in results if r["config"].startswith("engine") and r["quantization"] == "none"
                 and int8 and r["precision"] == int8["precision"]), None)
    if int8 and same:  # on CPU quanto runs with fp32 activations, so compare against fp32
        print(f"int8 ({int8['precision']} activations) / {same['config']}: median step "
              f"{int8['median_step_s'] / same['median_step_s']:.3f}x, peak memory "
              f"{int8['peak_gib'] / same['peak_gib']:.3f}x ({results[0]['peak_kind']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
