"""Fast sampling presets: one of diffusers' own cache hooks on the transformer, for one clip, then removed.

Why: visitors at a kiosk wait for every clip, and the diffusers we pin ships training-free caches that skip
part of the transformer's work between denoising steps. Each preset is a diffusers config with the values its
authors or the diffusers docs give for CogVideoX; nothing here caches by hand. ``exact`` attaches nothing, so
its frames are bit-identical to the published sampler's. ``generate`` attaches a preset for one clip and
removes it after (also on an error or a cancel), so no state leaks from one clip into the next.

How far each preset moves a clip (PSNR/SSIM against ``exact``, same seed) and how much faster it is on a GPU
is measured by ``bench/gpu_check.py``; see docs/gpu.md.

MagCache needs magnitude ratios measured on the model itself: ``python -m ophora calibrate-magcache --model
PATH`` runs one calibration clip and saves them beside the model (``magcache_ratios.json``); ``magcache`` is
refused until they exist, and refused if the model's weights changed since.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ophora.generation.options import SPEED_LABELS, SPEEDS
from ophora.generation.request import GenerationInputError, GenerationRequest

if TYPE_CHECKING:
    from ophora.generation.loading import LoadedPipeline

__all__ = ["SPEEDS", "SPEED_LABELS", "MAGCACHE_FILE", "SpeedPresetError", "cache_config", "speed_preset",
           "attached_cache", "check_speed_before_load", "magcache_ratios_path", "read_magcache_ratios",
           "calibrate_magcache",
           "describe_config"]

MAGCACHE_FILE = "magcache_ratios.json"
FASTERCACHE_NEEDS_GUIDANCE = ("FasterCache reuses the unguided half of guidance, and guidance 1 has none: raise "
                              "guidance above 1 (6 is the published setting) or use another speed.")
# TaylorSeer's default pattern matches no CogVideoX module; this one matches each block's joint attention.
COGVIDEOX_ATTENTION = r"transformer_blocks\.\d+\.attn1"


class SpeedPresetError(GenerationInputError):
    """A speed preset this model or request cannot use; the message says what to do instead."""


def cache_config(name: str, loaded: "LoadedPipeline", request: GenerationRequest):
    """The diffusers cache config for preset ``name`` (``None`` for ``exact``). Raises ``SpeedPresetError``."""
    import torch
    from diffusers import (FasterCacheConfig, FirstBlockCacheConfig, MagCacheConfig, PyramidAttentionBroadcastConfig,
                           TaylorSeerCacheConfig)

    pipe = loaded.pipe
    if name not in SPEEDS:
        raise SpeedPresetError(f"Unknown speed {name!r}; choose one of: {', '.join(SPEEDS)}.")
    if name == "exact":
        return None
    if not callable(getattr(pipe.transformer, "enable_cache", None)):
        raise SpeedPresetError(f"This model's transformer ({type(pipe.transformer).__name__}) does not support "
                               f"diffusers' caches; generate with speed 'exact'.")
    if name == "pab":  # the diffusers docs' CogVideoX example (1.34x in the PR that added it)
        return PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=2,
                                               spatial_attention_timestep_skip_range=(100, 800),
                                               current_timestep_callback=lambda: pipe.current_timestep)
    if name == "fastercache":  # the diffusers docs' CogVideoX example
        if request.guidance_scale <= 1:
            raise SpeedPresetError(FASTERCACHE_NEEDS_GUIDANCE)
        return FasterCacheConfig(spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 681),
                                 low_frequency_weight_update_timestep_range=(99, 641),
                                 high_frequency_weight_update_timestep_range=(-1, 301),
                                 spatial_attention_block_identifiers=("transformer_blocks",),
                                 attention_weight_callback=lambda _: 0.3, tensor_format="BFCHW",
                                 current_timestep_callback=lambda: pipe.current_timestep)
    if name == "firstblock":
        return FirstBlockCacheConfig(threshold=request.speed_threshold or 0.05)  # diffusers' default
    if name == "taylorseer":  # diffusers' defaults, on CogVideoX's attention modules
        return TaylorSeerCacheConfig(cache_interval=5, disable_cache_before_step=3, max_order=1,
                                     taylor_factors_dtype=torch.float32 if loaded.plan.precision == "fp32"
                                     else torch.bfloat16,
                                     cache_identifiers=[COGVIDEOX_ATTENTION])
    ratios = read_magcache_ratios(loaded)  # "magcache"
    return MagCacheConfig(mag_ratios=ratios, num_inference_steps=request.num_inference_steps,
                          threshold=request.speed_threshold or 0.06)  # diffusers' default


def describe_config(config) -> dict | None:
    """A diffusers cache config as JSON for provenance: its class and every field that is data (not a callback)."""
    if config is None:
        return None
    fields: dict = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if callable(value):
            continue
        if hasattr(value, "tolist"):  # a tensor of ratios
            value = [round(float(v), 5) for v in value.tolist()]
        elif isinstance(value, tuple):
            value = list(value)
        elif not isinstance(value, (str, int, float, bool, list, type(None))):
            value = str(value)  # e.g. a torch dtype
        fields[field.name] = value
    return {"hook": type(config).__name__, **fields}


def _hook_count(module) -> int:
    return sum(len(getattr(m, "_diffusers_hook").hooks) for m in module.modules() if hasattr(m, "_diffusers_hook"))


@contextlib.contextmanager
def attached_cache(loaded: "LoadedPipeline", config) -> Iterator[int]:
    """Attach a diffusers cache ``config`` to the transformer for the block, then remove it; yields the number of
    hooks attached. A config that matches no module of this model is refused (it would silently do nothing)."""
    transformer = loaded.pipe.transformer
    if config is None:
        yield 0
        return
    before = _hook_count(transformer)
    try:
        transformer.enable_cache(config)
    except Exception as error:  # noqa: BLE001 - any failure inside diffusers' apply_* may leave hooks behind
        # enable_cache records its config only after every hook attached: record it so disable_cache removes
        # whatever was attached before the failure (removing an absent hook is a no-op), or later "exact"
        # clips would run through a half-attached cache.
        transformer._cache_config = config
        transformer.disable_cache()
        raise SpeedPresetError(f"The speed preset's cache ({type(config).__name__}) cannot attach to this model "
                               f"({type(transformer).__name__}): {error}. Generate with speed 'exact'.") from error
    try:
        attached = _hook_count(transformer) - before
        if attached <= 0:
            raise SpeedPresetError(f"The speed preset's cache ({type(config).__name__}) found no layer to attach to in "
                                   f"this model ({type(transformer).__name__}); generate with speed 'exact'.")
        yield attached
    finally:
        transformer.disable_cache()


@contextlib.contextmanager
def speed_preset(loaded: "LoadedPipeline", request: GenerationRequest) -> Iterator[dict]:
    """Attach ``request.speed`` for one clip; yields what provenance records (its label and the hook's config)."""
    config = cache_config(request.speed, loaded, request)
    with attached_cache(loaded, config):
        yield {"label": SPEED_LABELS[request.speed], "config": describe_config(config)}


# ---------------------------------------------------------------------------------------------- MagCache ratios
def magcache_ratios_path(loaded: "LoadedPipeline") -> Path:
    """Where this model's MagCache ratios live: beside the weights that decide them (the fine-tuned transformer
    folder when one is loaded, else the model folder); for a hub model, in the Ophora cache, by fingerprint."""
    for folder in (loaded.options.transformer, loaded.model_path):
        if folder and Path(folder).expanduser().is_dir():
            return Path(folder).expanduser() / MAGCACHE_FILE
    root = Path(os.environ.get("OPHORA_CACHE", Path.home() / ".cache" / "ophora"))
    key = hashlib.sha256(loaded.model_fingerprint.encode()).hexdigest()[:16]
    return root / "magcache" / f"{key}.json"


def check_speed_before_load(options, request: GenerationRequest) -> None:
    """Refuse before minutes of loading: ``fastercache`` without guidance, and ``magcache`` for a local model
    folder without saved ratios (the fingerprint check needs the loaded model and runs in ``generate``)."""
    if (request.speed == "fastercache" and isinstance(request.guidance_scale, (int, float))
            and request.guidance_scale <= 1):
        raise SpeedPresetError(FASTERCACHE_NEEDS_GUIDANCE)
    if request.speed != "magcache":
        return
    for folder in (options.transformer, options.model):
        if folder and Path(folder).expanduser().is_dir():
            if not (Path(folder).expanduser() / MAGCACHE_FILE).is_file():
                transformer = f" --transformer {options.transformer}" if options.transformer else ""
                raise SpeedPresetError(f"MagCache has not been calibrated for this model yet: run `python -m ophora "
                                       f"calibrate-magcache --model {options.model}{transformer}` once (one clip), "
                                       f"or use another speed.")
            return


def read_magcache_ratios(loaded: "LoadedPipeline") -> list[float]:
    """The calibrated ratios for exactly this model; ``SpeedPresetError`` saying how to calibrate otherwise."""
    path = magcache_ratios_path(loaded)
    calibrate = f"python -m ophora calibrate-magcache --model {loaded.options.model}" + (
        f" --transformer {loaded.options.transformer}" if loaded.options.transformer else "")
    if not path.is_file():
        raise SpeedPresetError(f"MagCache has not been calibrated for this model yet: run `{calibrate}` once "
                               f"(one clip), or use another speed.")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        ratios = [float(r) for r in saved["ratios"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SpeedPresetError(f"{path} is damaged ({error}): run `{calibrate}` again.") from None
    if saved.get("model_fingerprint") != loaded.model_fingerprint:
        raise SpeedPresetError(f"MagCache was calibrated for other weights than the ones loaded now (the model "
                               f"changed since): run `{calibrate}` again.")
    if len(ratios) < 2:
        raise SpeedPresetError(f"{path} holds {len(ratios)} ratio(s); run `{calibrate}` again.")
    return ratios


def calibrate_magcache(loaded: "LoadedPipeline", request: GenerationRequest) -> Path:
    """Run one clip with MagCache in calibration mode (nothing skipped) and save the measured ratios beside the
    model. Why a file: the ratios depend on the weights, and calibration costs one full clip."""
    from diffusers import MagCacheConfig

    from ophora.generation.engine import generate

    ratios: list[float] = []

    class _Capture(logging.Handler):  # diffusers logs the ratios once, at the last calibration step
        def emit(self, record: logging.LogRecord) -> None:
            if isinstance(record.msg, str) and record.msg.startswith("MagCache Calibration Results:"):
                ratios[:] = json.loads(record.getMessage().split(":", 1)[1])

    path = magcache_ratios_path(loaded)
    config = MagCacheConfig(calibrate=True, num_inference_steps=request.num_inference_steps)
    mag_logger = logging.getLogger("diffusers.hooks.mag_cache")
    handler, level, propagate = _Capture(), mag_logger.level, mag_logger.propagate
    mag_logger.addHandler(handler)
    mag_logger.setLevel(logging.INFO)
    mag_logger.propagate = False
    try:
        with attached_cache(loaded, config), contextlib.redirect_stdout(io.StringIO()):
            generate(loaded, dataclasses.replace(request, speed="exact"))
    finally:
        mag_logger.removeHandler(handler)
        mag_logger.setLevel(level)
        mag_logger.propagate = propagate
    if len(ratios) != request.num_inference_steps:
        raise RuntimeError(f"MagCache calibration measured {len(ratios)} ratios for {request.num_inference_steps} "
                           f"steps; nothing was saved.")
    payload = {"ratios": ratios, "num_inference_steps": request.num_inference_steps,
               "model_fingerprint": loaded.model_fingerprint, "model": loaded.options.model,
               "transformer": loaded.options.transformer, "prompt": request.prompt, "seed": request.seed,
               "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    partial.replace(path)
    return path
