"""One-shot GPU check: dependencies, memory, latency, speed presets and training, in one JSON, in under 8 minutes.

Written for a first GPU that may be an offline hospital workstation or a short-lived rented machine with a
stock PyTorch image (see docs/gpu.md). On the full-size CogVideoX-2b architecture with random weights (T5-XXL,
the 2B transformer, the CogVideoX VAE; nothing is downloaded) at the published 49x480x720 it measures:

- ``dependencies`` (first, under 10 s): every package the GPU rows import, against the pins; CUDA, free VRAM and
  disk. Anything missing is printed with the exact commands to fetch its wheels on a connected machine and
  install them offline;
- ``int8_bitsandbytes``, ``int8_model_offload``, ``model_offload_vae_tiling``: seconds per clip (``--steps``
  steps timed, scaled to the published 50) and peak VRAM through the real loader and engine;
- ``fp16_no_offload`` and one ``speed_*`` row per preset: a whole clip at 50 steps each, seconds and peak VRAM,
  and PSNR/SSIM of the preset's clip against the exact fp16 clip with the same seed (random weights: a measure
  of how far the preset moves the output, not of visual quality);
- ``training_full``, ``training_lora``: two optimizer steps at global batch 1 through the real training loop;
- ``torchao_int8_compile`` (optional): int8 weight-only + ``torch.compile``, if torchao is installed.

Every row runs in a fresh process with its own time limit (``ROWS``); a crash, an out-of-memory or a timeout
costs that row only, and the parent process never initialises CUDA. The JSON is rewritten after every row;
the exit code is 1 when any row failed. ``--only ROW[,ROW]`` reruns chosen rows into the same JSON.

  python bench/gpu_check.py --out gpu_check.json                       # on the GPU machine (under 8 minutes)
  python bench/gpu_check.py --out gpu_check.json --only speed_pab,training_lora
  python bench/gpu_check.py --dry-run --out /tmp/check.json            # CPU, tiny model: the code path (CI)
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
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
RESULT = "GPU-CHECK-RESULT "

# What the GPU rows import (GPU_ROOTS, pinned in requirements.txt and checked to the version) and everything
# those need (checked for presence; the version is the one we tested with, used to fetch a missing wheel).
# tests/generation/test_gpu_check.py keeps this list in step with both. torch itself comes with the machine's
# image: its CUDA build must match the driver, so it is reported, never replaced.
GPU_PACKAGES = {
    "accelerate": "1.15.0", "annotated-doc": "0.0.7", "annotated-types": "0.8.0", "anyio": "4.16.0",
    "bitsandbytes": "0.50.2", "certifi": "2026.10.19.post1", "charset-normalizer": "3.5.3", "click": "8.5.1",
    "diffusers": "0.42.1", "filelock": "4.3.2", "fsspec": "2026.9.0", "h11": "0.16.0", "hf-xet": "1.8.0",
    "httpcore2": "2.17.0", "httpx2": "2.17.0", "huggingface-hub": "2.4.0", "idna": "3.21",
    "importlib-metadata": "10.2.0", "lazy-importer": "0.1.0", "markdown-it-py": "4.3.0", "mdurl": "0.1.2",
    "ninja": "1.13.2", "numpy": "2.4.6", "optimum-quanto": "0.2.7", "packaging": "26.4", "peft": "0.21.2",
    "pillow": "12.3.0", "psutil": "7.2.2", "pydantic": "2.14.4", "pydantic-core": "2.50.5", "pygments": "2.21.0",
    "pyyaml": "6.0.4", "regex": "2026.12.2", "requests": "2.34.2", "rich": "15.0.0", "safetensors": "0.8.0",
    "sentencepiece": "0.2.3", "shellingham": "1.5.4", "tokenizers": "0.23.3", "tqdm": "4.70.1",
    "transformers": "5.24.0", "truststore": "0.10.5", "typer": "0.29.2", "typing-extensions": "4.16.0",
    "typing-inspection": "0.4.5", "urllib3": "2.8.0", "zipp": "4.1.2",
}
# The packages the rows import by name (the rest of GPU_PACKAGES is what these need).
GPU_ROOTS = ("diffusers", "transformers", "accelerate", "bitsandbytes", "optimum-quanto", "peft", "safetensors",
             "sentencepiece", "tokenizers", "huggingface-hub", "numpy", "psutil", "pyyaml", "tqdm")
# Wheel sizes in MB for CPython 3.11 manylinux x86_64, measured with `pip download --no-deps` (2026-12-05); every
# other package of GPU_PACKAGES is a wheel of at most a few MB.
WHEEL_MB = {"bitsandbytes": 43.1, "transformers": 13.5, "diffusers": 6.4, "tokenizers": 3.4, "sentencepiece": 1.7,
            "huggingface-hub": 0.9, "peft": 0.8, "safetensors": 0.5, "accelerate": 0.4, "optimum-quanto": 0.2}
MIN_FREE_DISK_GIB = 30  # the full-size folder (11.5 GiB fp16), encoded training data, and room to spare
MIN_FREE_VRAM_GIB = 30  # fp16 without offload peaks near 25 GiB at 49x480x720

INFERENCE = {  # name -> loader options (int8 rows: --steps steps, scaled to 50)
    "int8_bitsandbytes": {"precision": "fp16", "quantization": "int8", "memory": "none", "vae_tiling": True},
    "int8_model_offload": {"precision": "fp16", "quantization": "int8", "memory": "model_offload", "vae_tiling": True},
    "model_offload_vae_tiling": {"precision": "fp16", "quantization": "none", "memory": "model_offload",
                                 "vae_tiling": True},
}
FP16 = {"precision": "fp16", "quantization": "none", "memory": "none", "vae_tiling": True}
PRESETS = ("pab", "fastercache", "firstblock", "taylorseer")  # magcache needs calibration on trained weights


@dataclass(frozen=True)
class Row:
    """One measured row: the child section that runs it, its time limit, and (dry run) what stands in for it.

    Limits, seconds: process start and imports, 8 (measured on CPU: the dependency row's imports take 7 s of CPU
    in a fresh process); loading the 11.5 GiB fp16 folder, about 15 (an estimate: page-cache reads at several
    GB/s; not measured here); plus the GPU work from published figures (CogVideoX-2b, 50 steps at 49x480x720 on
    an H100: about 45 s; one 2B training step with gradient checkpointing: about 6 s); plus a third for margin.
    They add up to 470 s: 8 minutes by design, with the parent's own seconds to spare. The first GPU run's
    ``wall_s`` per row replaces these estimates."""

    section: str
    limit_s: float
    stands_in_for: str  # what the dry run's version of this row is not


ROWS: dict[str, Row] = {
    "dependencies": Row("dependencies", 10, "the same check, with CUDA, VRAM and disk reported but not required"),
    "build": Row("build", 70, "the tiny model instead of the full-size folder (built at reduced depth in "
                              "build_full_size_reduced)"),
    "int8_bitsandbytes": Row("inference", 35, "optimum-quanto int8 on CPU in fp32 (bitsandbytes 8-bit needs CUDA)"),
    "int8_model_offload": Row("inference", 40, "optimum-quanto int8 on CPU; offload is meaningless without a GPU"),
    "model_offload_vae_tiling": Row("inference", 40, "CPU, fp32, no offload (offload needs a GPU)"),
    "fp16_no_offload": Row("presets", 200, "fp32 on CPU at the tiny model's native size and --steps steps; "
                                           "the speed_* rows share this row's process and limit"),
    **{f"speed_{p}": Row("presets", 0, "the tiny model's clip at --steps steps, fp32 on CPU") for p in PRESETS},
    "training_full": Row("training", 40, "the tiny model's transformer on CPU, fp32 (no mixed precision)"),
    "training_lora": Row("training", 35, "the tiny model's transformer on CPU, fp32 (no mixed precision)"),
    "torchao_int8_compile": Row("torchao", 60, "not run: the torchao row needs CUDA"),
}
DRY_RUN_ONLY = {"build_full_size_reduced": Row("build_full_size", 120, "the full-size builder itself, at depth 1: "
                                                                         "the same shapes per layer, fewer layers")}
BUDGET_S = 470
DRY_RUN_LIMIT_S = 240  # per row on a shared CI box: the dry run checks the code path, not the timing


# ---------------------------------------------------------------------------------------------- dependency row
def wheel_commands(missing: dict[str, str], python: str) -> list[str]:
    """The commands that bring ``missing`` {name: version} to an offline machine as wheels and install them."""
    pins = " ".join(f"{name}=={version}" for name, version in sorted(missing.items()))
    return [f"pip download --only-binary=:all: --no-deps --python-version {python} --platform manylinux_2_28_x86_64 "
            f"--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d wheels {pins}",
            "pip install --no-index --no-deps --target ophora-deps wheels/*.whl   # on the GPU machine",
            "export PYTHONPATH=$PWD/ophora-deps:$PYTHONPATH"]


def check_dependencies(dry_run: bool) -> dict:
    """Installed versions against ``GPU_PACKAGES``, each root package imported, CUDA, VRAM and disk; under 10 s."""
    start = time.perf_counter()
    problems: dict[str, str] = {}
    missing: dict[str, str] = {}
    for name, pinned in GPU_PACKAGES.items():
        try:
            found = md.version(name)
        except md.PackageNotFoundError:
            problems[name], missing[name] = "missing", pinned
            continue
        if found != pinned and name in GPU_ROOTS:  # what they need may differ: pip resolved it, as in CI
            problems[name], missing[name] = f"{found} installed, tested with {pinned}", pinned
    imports: dict[str, str] = {}
    for name in GPU_ROOTS:
        if name in missing:
            continue
        module = {"optimum-quanto": "optimum.quanto", "huggingface-hub": "huggingface_hub", "pyyaml": "yaml"}.get(
            name, name)
        try:
            importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 - a broken install is a row, not a crash
            imports[name] = f"{type(error).__name__}: {error}"[:300]
    info: dict = {"python": platform.python_version(), "host": platform.node()}
    try:
        import torch

        info.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
        if torch.cuda.is_available():  # this child exits after the row: the parent never holds a CUDA context
            free, total = torch.cuda.mem_get_info()
            info.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gib=total / 1024**3, free_vram_gib=free / 1024**3)
    except Exception as error:  # noqa: BLE001
        imports["torch"] = f"{type(error).__name__}: {error}"[:300]
    info["free_disk_gib"] = shutil.disk_usage(Path.cwd()).free / 1024**3
    errors = [f"{name}: {why}" for name, why in {**problems, **imports}.items()]
    if not dry_run:
        if not info.get("cuda_available"):
            errors.append("CUDA is not available to torch: install the CUDA build of torch that matches the driver "
                          "(see `nvidia-smi`), or use a machine image with one")
        elif info["free_vram_gib"] < MIN_FREE_VRAM_GIB:
            errors.append(f"{info['free_vram_gib']:.0f} GiB of GPU memory free; the fp16 rows need about "
                          f"{MIN_FREE_VRAM_GIB} (stop other GPU processes)")
        if info["free_disk_gib"] < MIN_FREE_DISK_GIB:
            errors.append(f"{info['free_disk_gib']:.0f} GiB of disk free here; the check needs {MIN_FREE_DISK_GIB}")
    python = ".".join(platform.python_version_tuple()[:2])
    row = {"environment": info, "packages_checked": len(GPU_PACKAGES), "problems": errors,
           "seconds": time.perf_counter() - start}
    if missing:
        known = sum(WHEEL_MB.get(n, 0) for n in missing)
        row["fetch"] = {"packages": sorted(f"{n}=={v}" for n, v in missing.items()),
                        "size_mb": f"about {known + 2 * sum(1 for n in missing if n not in WHEEL_MB):.0f}",
                        "commands": wheel_commands(missing, python)}
    if errors:
        row["error"] = f"{len(errors)} problem(s): " + "; ".join(errors)[:1500]
    return row


# ---------------------------------------------------------------------------------------------- measurements
def build_model(work: Path, dry_run: bool) -> dict:
    """The pipeline folder every other row loads: full-size random weights, or the tiny model."""
    folder = work / "model"
    shutil.rmtree(folder, ignore_errors=True)
    for stale in [*work.glob("frames-*.npy"), *work.glob("fp16_no_offload-*.json")]:
        stale.unlink()  # clips of the previous random weights are no reference for the new ones
    start = time.perf_counter()
    if dry_run:
        from ophora.generation.tiny import save_tiny_pipeline

        save_tiny_pipeline(folder)
    else:
        from bench_generation import _build_full_size_folder

        _build_full_size_folder(folder)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return {"seconds": time.perf_counter() - start, "folder_gib": size / 1024**3}


def build_full_size_reduced(work: Path) -> dict:
    """The full-size builder at depth 1, checked by the loader's own preflight (configs, weight headers)."""
    from bench_generation import _build_full_size_folder

    from ophora.generation.options import LoadOptions
    from ophora.generation.preflight import preflight

    folder = work / "full-size-depth-1"
    start = time.perf_counter()
    _build_full_size_folder(folder, depth=1)
    built_s = time.perf_counter() - start
    preflight(LoadOptions(model=str(folder), local_files_only=True))
    configs = {part: json.loads((folder / part / "config.json").read_text())
               for part in ("transformer", "text_encoder")}
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    shutil.rmtree(folder, ignore_errors=True)
    return {"seconds": built_s, "folder_gib": size / 1024**3,
            "transformer": {k: configs["transformer"][k] for k in ("num_layers", "num_attention_heads",
                                                                   "attention_head_dim", "sample_frames")},
            "text_encoder": {k: configs["text_encoder"][k] for k in ("num_layers", "d_model", "d_ff")}}


def _peak_rss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _load(work: Path, settings: dict, dry_run: bool):
    from ophora.generation.loading import LoadOptions, load_pipeline

    settings = {**settings, "precision": "fp32"} if dry_run else settings
    start = time.perf_counter()
    loaded = load_pipeline(LoadOptions(model=str(work / "model"), device="cpu" if dry_run else "cuda",
                                       local_files_only=True, **settings))
    return loaded, settings, time.perf_counter() - start


def _clip(loaded, steps: int, speed: str = "exact") -> tuple[object, dict]:
    """One clip at the model's native size; its seconds and peak VRAM (CUDA), with the memory counters reset."""
    import statistics

    import torch

    from ophora.generation.engine import GenerationRequest, generate

    cuda = loaded.plan.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    result = generate(loaded, GenerationRequest(prompt=PROMPT, seed=SEED, num_inference_steps=steps, speed=speed))
    if cuda:
        torch.cuda.synchronize()
    request = result.request
    median = statistics.median(result.step_seconds[1:] or result.step_seconds)  # step 1 carries the text encoding
    return result, {"size": f"{request.num_frames}x{request.height}x{request.width}", "steps": steps,
                    "clip_s": result.seconds, "median_step_s": median,
                    # steps 2..N: without the first step's text encoding and kernel warm-up, which only the first
                    # clip of a process pays (the speed-ups compare these)
                    "steps_after_first_s": sum(result.step_seconds[1:]),
                    "peak_vram_gib": torch.cuda.max_memory_allocated() / 1024**3 if cuda else None,
                    "peak_vram_reserved_gib": torch.cuda.max_memory_reserved() / 1024**3 if cuda else None}


def run_inference(name: str, work: Path, steps: int, dry_run: bool) -> dict:
    """Load with one configuration, generate one clip at the model's native size, time it, keep its frames."""
    import numpy as np

    loaded, settings, load_s = _load(work, INFERENCE[name], dry_run)
    result, row = _clip(loaded, steps)
    np.save(work / f"frames-{name}.npy", result.frames)
    row.update(settings=settings, plan={"device": loaded.plan.device, "precision": loaded.plan.precision,
                                        "quantization": loaded.plan.quantization, "memory": loaded.plan.memory},
               load_s=load_s,
               clip_s_scaled_to_50_steps=row["clip_s"] + (PUBLISHED_STEPS - steps) * row["median_step_s"],
               peak_rss_gib=_peak_rss_gib())
    return row


def psnr(reference, other) -> float:
    """Peak signal-to-noise ratio of two uint8 clips in dB (inf when identical)."""
    import numpy as np

    mse = float(np.mean((reference.astype(np.float64) - other.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def ssim(reference, other) -> float:
    """Mean SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5) over frames, on luma, uint8 clips."""
    import torch
    import torch.nn.functional as F

    def luma(clip):
        x = torch.from_numpy(clip).double()
        return (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]).unsqueeze(1)  # (frames, 1, H, W)

    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    window = (g[:, None] * g[None, :] / g.sum() ** 2)[None, None]
    a, b = luma(reference), luma(other)
    mu_a, mu_b = F.conv2d(a, window), F.conv2d(b, window)
    var_a = F.conv2d(a * a, window) - mu_a**2
    var_b = F.conv2d(b * b, window) - mu_b**2
    cov = F.conv2d(a * b, window) - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(value.mean())


def run_presets(names: list[str], work: Path, steps: int, dry_run: bool) -> None:
    """fp16 exact (the reference) and each preset, at ``steps`` steps, on one loaded pipeline; prints one result
    line per row as it finishes, so a timeout keeps the rows already measured."""
    import numpy as np

    loaded, settings, load_s = _load(work, FP16, dry_run)
    reference_file = work / f"frames-fp16_no_offload-{steps}.npy"
    exact_file = work / f"fp16_no_offload-{steps}.json"
    if "fp16_no_offload" in names or not (reference_file.is_file() and exact_file.is_file()):
        result, row = _clip(loaded, steps)
        np.save(reference_file, result.frames)
        exact_file.write_text(json.dumps(row))
        row.update(settings=settings, load_s=load_s, speed="exact")
        print(RESULT + json.dumps({"row": "fp16_no_offload", **row}), flush=True)
    reference = np.load(reference_file)
    exact_s = json.loads(exact_file.read_text())["steps_after_first_s"]
    for name in names:
        if not name.startswith("speed_"):
            continue
        preset = name.removeprefix("speed_")
        try:
            result, row = _clip(loaded, steps, speed=preset)
            row.update(speed=preset, config=result.provenance["speed_preset"]["config"],
                       psnr_db_vs_exact=psnr(reference, result.frames), ssim_vs_exact=ssim(reference, result.frames),
                       speedup_vs_exact=exact_s / row["steps_after_first_s"] if row["steps_after_first_s"] else None)
        except Exception as error:  # noqa: BLE001 - one preset's failure is its row
            row = {"error": f"{type(error).__name__}: {error}"[:1500]}
        print(RESULT + json.dumps({"row": name, **row}), flush=True)


def run_training(mode: str, work: Path, dry_run: bool) -> dict:
    """Two optimizer steps of the transformer at global batch 1 through the real training loop (the published
    global batch of 128 would mean 128 accumulation passes per step on one GPU)."""
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
        "max_train_steps": 1000, "train_batch_size": 1, "global_batch_size": 1, "learning_rate": 1e-4,
        "lr_warmup_steps": 10, "checkpointing_steps": 10_000, "validation_steps": 0, "gradient_checkpointing": True,
        "mixed_precision": "fp16" if on_gpu else "no"})
    result = fit(config, stop_at_step=2, cpu=not on_gpu, checkpoint_on_stop=False, local_files_only=True)
    return {"mode": mode, "seconds_per_step": result.seconds_per_step, "global_batch_size": 1,
            "peak_vram_gib": None if result.peak_memory_bytes is None else result.peak_memory_bytes / 1024**3,
            "peak_rss_gib": _peak_rss_gib(), "losses": [round(v, 4) for v in result.losses.values()],
            "gradient_checkpointing": True, "mixed_precision": config.mixed_precision}


def run_torchao(work: Path, steps: int) -> dict:
    """int8 weight-only (torchao) on the transformer and ``torch.compile``; the first clip compiles, the second is
    timed."""
    import torchao.quantization as tq

    loaded, settings, load_s = _load(work, FP16, dry_run=False)
    config = tq.Int8WeightOnlyConfig() if hasattr(tq, "Int8WeightOnlyConfig") else tq.int8_weight_only()
    tq.quantize_(loaded.pipe.transformer, config)
    loaded.pipe.transformer.compile(mode="max-autotune-no-cudagraphs")  # in place: the pipeline keeps its module
    start = time.perf_counter()
    _clip(loaded, 1)
    compile_s = time.perf_counter() - start
    _, row = _clip(loaded, steps)
    row.update(torchao=md.version("torchao"), load_s=load_s, compile_s=compile_s,
               clip_s_scaled_to_50_steps=row["clip_s"] + (PUBLISHED_STEPS - steps) * row["median_step_s"])
    return row


# ---------------------------------------------------------------------------------------------- orchestration
def _child(args) -> None:
    section, work = args.child, args.work
    if section == "presets":
        run_presets(args.name.split(","), work, args.preset_steps, args.dry_run)
        return
    if section == "dependencies":
        row = check_dependencies(args.dry_run)
    elif section == "build":
        row = build_model(work, args.dry_run)
    elif section == "build_full_size":
        row = build_full_size_reduced(work)
    elif section == "inference":
        row = run_inference(args.name, work, args.steps, args.dry_run)
    elif section == "training":
        row = run_training(args.name.removeprefix("training_"), work, args.dry_run)
    else:
        row = run_torchao(work, args.steps)
    print(RESULT + json.dumps({"row": args.name, **row}), flush=True)


def _run_child(section: str, name: str, args, timeout_s: float) -> dict[str, dict]:
    """Run one section in a fresh process; returns {row: result}. A crash, an out-of-memory or the time limit
    becomes an error row (rows a multi-row section finished before it stopped keep their figures)."""
    command = [sys.executable, __file__, "--child", section, "--name", name, "--work", str(args.work),
               "--steps", str(args.steps), "--preset-steps", str(args.preset_steps)] + (
        ["--dry-run"] if args.dry_run else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
        stdout, stderr, failure = done.stdout, done.stderr, f"exit code {done.returncode}"
    except subprocess.TimeoutExpired as expired:
        decode = lambda b: b.decode(errors="replace") if isinstance(b, bytes) else (b or "")  # noqa: E731
        stdout, stderr = decode(expired.stdout), decode(expired.stderr)
        failure = f"timed out after {timeout_s:.0f} s (its limit)"
    rows: dict[str, dict] = {}
    for line in stdout.splitlines():
        if line.startswith(RESULT):
            payload = json.loads(line[len(RESULT):])
            rows[payload.pop("row")] = payload
    wall = time.perf_counter() - start
    for wanted in name.split(","):
        if wanted not in rows:
            rows[wanted] = {"error": failure, "stderr_tail": stderr[-1500:]}
        rows[wanted]["wall_s"] = wall
    return rows


def _skip(reason: str) -> dict:
    return {"skipped": reason}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON to write (and update)")
    parser.add_argument("--dry-run", action="store_true", help="CPU and the tiny model: checks the code path")
    parser.add_argument("--only", help="comma-separated rows to (re)run into the same JSON, e.g. "
                                       f"speed_pab,training_lora; rows: {', '.join(ROWS)}")
    parser.add_argument("--steps", type=int, default=None,
                        help="denoising steps of the memory rows (default 4 on the GPU, 2 in --dry-run), scaled to 50")
    parser.add_argument("--preset-steps", type=int, default=None,
                        help="steps of the fp16 and speed_* rows (default 50, the published setting; 8 in --dry-run)")
    parser.add_argument("--work", type=Path, help="scratch folder, kept for --only reruns (default: beside --out); "
                                                  "it holds the 11.5 GiB model folder: delete it when done")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--name", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.steps = args.steps or (2 if args.dry_run else 4)
    args.preset_steps = args.preset_steps or (8 if args.dry_run else PUBLISHED_STEPS)
    args.work = args.work or args.out.resolve().parent / "gpu_check_work"
    if args.child:
        _child(args)
        return 0

    rows = dict(ROWS, **(DRY_RUN_ONLY if args.dry_run else {}))
    chosen = list(rows)
    if args.only:
        chosen = [r.strip() for r in args.only.split(",") if r.strip()]
        unknown = [r for r in chosen if r not in rows]
        if unknown:
            parser.error(f"unknown row(s) {', '.join(unknown)}; rows: {', '.join(rows)}")
    report: dict = {}
    if args.only and args.out.is_file():
        report = json.loads(args.out.read_text())
    report.update(what="Ophora Studio GPU check: CogVideoX-2b architecture, random weights" if not args.dry_run
                  else "Ophora Studio GPU check, DRY RUN: tiny model on CPU (figures mean nothing)",
                  dry_run=args.dry_run, budget_s=BUDGET_S, steps=args.steps, preset_steps=args.preset_steps,
                  caveat="Random weights: PSNR/SSIM of a preset against exact measure how far it moves the output, "
                         "not visual quality; presets that skip by measured change (firstblock) may skip "
                         "differently on trained weights.")
    report.setdefault("rows", {})
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()

    def save() -> None:
        report["elapsed_s"] = time.monotonic() - start
        report["updated_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=str))

    def record(results: dict[str, dict]) -> None:
        for name, row in results.items():
            if args.dry_run and name in rows:
                row["dry_run_stands_in_for"] = rows[name].stands_in_for
            report["rows"][name] = row
            status = row.get("error") or row.get("skipped") or "ok"
            print(f"{name}: {status if status != 'ok' else json.dumps(row, default=str)[:300]}", flush=True)
        save()

    def limit(name: str) -> float:
        return DRY_RUN_LIMIT_S if args.dry_run else rows[name].limit_s

    record(_run_child("dependencies", "dependencies", args, limit("dependencies")))
    deps = report["rows"]["dependencies"]
    if "fetch" in deps:
        print("\nMissing or other versions. On a connected machine with the same Python:\n  "
              + "\n  ".join(deps["fetch"]["commands"])
              + f"\n({len(deps['fetch']['packages'])} packages, {deps['fetch']['size_mb']} MB; docs/gpu.md)\n",
              flush=True)
    if "error" in deps and not args.dry_run:
        for name in chosen:
            if name != "dependencies":
                report["rows"][name] = _skip("not run: the dependency check failed (see its row)")
        save()
        print(f"wrote {args.out}: fix the dependency row first, then run again")
        return 1

    needs_model = any(rows[n].section not in ("dependencies", "build", "build_full_size") for n in chosen)
    if "build" in chosen or (needs_model and not (args.work / "model" / "model_index.json").is_file()):
        record(_run_child("build", "build", args, limit("build")))
    model_ok = (args.work / "model" / "model_index.json").is_file()
    presets = [n for n in chosen if rows[n].section == "presets"]
    for name in chosen:
        row = rows[name]
        if row.section in ("dependencies", "build") or (row.section == "presets" and name != presets[0]):
            continue
        if row.section not in ("build_full_size",) and not model_ok:
            record({n: _skip("not run: no model folder (the build row failed)")
                    for n in (presets if row.section == "presets" else [name])})
            continue
        if row.section == "torchao":
            if args.dry_run:
                record({name: _skip("dry run: the torchao row needs CUDA")})
                continue
            if importlib.util.find_spec("torchao") is None:
                record({name: _skip("torchao is not installed (optional): add its wheel to measure int8 "
                                    "weight-only + torch.compile, then run with --only torchao_int8_compile")})
                continue
            left = BUDGET_S - (time.monotonic() - start)
            if left < row.limit_s and not args.only:
                record({name: _skip(f"{left:.0f} s left of the 8-minute budget; run it alone with "
                                    f"--only {name}")})
                continue
        record(_run_child(row.section, ",".join(presets) if row.section == "presets" else name, args,
                          limit("fp16_no_offload" if row.section == "presets" else name)))

    failed = [n for n, r in report["rows"].items() if n in chosen and "error" in r]
    save()
    print(f"wrote {args.out} ({report['elapsed_s']:.0f} s; {len(failed)} failed: {', '.join(failed) or 'none'}). "
          f"Rerun failed rows with --only {','.join(failed) or 'ROW'}; delete {args.work} when done.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
