"""What a user can ask of the loader, without importing torch or diffusers.

Why a module of its own: `python -m ophora generate --help`, `python launch.py --help` and every input error
must answer in well under two seconds, so the choices and the request checks cannot live beside the torch
imports of ``loading.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MODEL = "General-Medical-AI/Ophora"
PRECISIONS = ("auto", "fp16", "bf16", "fp32")
QUANTIZATIONS = ("auto", "none", "int8")
MEMORY_MODES = ("auto", "none", "model_offload", "sequential_offload")
SCHEDULERS = ("dpm", "checkpoint")
# Sampling speed presets (``ophora/generation/speed.py``): "exact" is the published sampler and the default
# everywhere; the others attach one of diffusers' own cache hooks to the transformer for one clip.
SPEEDS = ("exact", "pab", "fastercache", "firstblock", "taylorseer", "magcache")
# The presets that skip by measured change take a threshold (``--speed-threshold``); these are their defaults.
THRESHOLD_SPEEDS = ("firstblock", "magcache")
# What a surgeon reads in the app's "Speed" dropdown and in the kiosk's start-up line (no config keys).
SPEED_LABELS = {
    "exact": "Exact (the published sampler)",
    "pab": "Faster: reuse attention between steps (Pyramid Attention Broadcast)",
    "fastercache": "Faster: reuse attention and the unguided pass (FasterCache; more memory)",
    "firstblock": "Faster: skip steps that change little (First Block Cache)",
    "taylorseer": "Faster: predict attention from earlier steps (TaylorSeer; more memory)",
    "magcache": "Faster: skip steps by measured change (MagCache; needs a one-off calibration)",
}


class ModelLoadError(RuntimeError):
    """The pipeline could not be loaded; the message says what to run or set."""


@dataclass
class LoadOptions:
    """What the user asked for; ``"auto"`` fields are resolved from the hardware by ``plan_loading``."""

    model: str = DEFAULT_MODEL  # hub id, local pipeline folder, or "tiny"
    transformer: str | None = None  # fine-tuned transformer folder (or pipeline folder with transformer/)
    revision: str | None = None  # hub branch, tag or commit
    precision: str = "auto"
    quantization: str = "auto"
    memory: str = "auto"
    scheduler: str = "dpm"  # "dpm": the published sampler's CogVideoXDPMScheduler (trailing); "checkpoint": as saved
    vae_slicing: bool = True
    vae_tiling: bool = True
    device: str | None = None  # None: CUDA if available, else CPU
    local_files_only: bool = False
    deterministic: bool = False  # torch deterministic algorithms (slower; see ``loading.set_determinism``)
