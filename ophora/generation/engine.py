"""Generate one clip: validate the request, run the diffusers pipeline with progress and cancel, return frames.

Read top to bottom: ``GenerationRequest`` holds the published sampler settings as defaults;
``validate_request`` turns every bad input into a clear message before any GPU time is spent;
``generate`` runs ``CogVideoXPipeline`` with a CPU ``torch.Generator`` (so a seed fixes the initial noise on
every machine; GPU kernels may still differ in the last bits, see ``SEED_NOTE``), reports each step with an
ETA, and stops between steps when asked to.
"""

from __future__ import annotations

import platform
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import numpy as np
import torch

from ophora.generation.loading import LoadedPipeline, runtime_versions
from ophora.generation.request import (MAX_FRAMES, MAX_SEED, GenerationInputError, GenerationRequest, ModelSpec,
                                       check_request)
from ophora.generation.request import resolve_request as resolve_with_spec
from ophora.generation.speed import cache_config, speed_preset

__all__ = ["MAX_FRAMES", "MAX_SEED", "GenerationInputError", "GenerationRequest", "GenerationCancelled",
           "GenerationResult", "StepProgress", "SEED_NOTE", "generate", "model_spec", "native_size",
           "resolve_request", "validate_request"]

SEED_NOTE = ("The seed fixes the initial noise exactly: it is drawn on the CPU with torch.Generator, the same on "
             "every machine. It does not fix GPU arithmetic: different GPUs, drivers, CUDA/cuDNN or torch versions, "
             "and non-deterministic GPU kernels can change the last bits of each step, so the same seed and settings "
             "give the same clip on the same machine and software, and a very close one elsewhere. "
             "--deterministic turns on torch's deterministic algorithms (slower).")


class GenerationCancelled(RuntimeError):
    """The user cancelled between denoising steps; nothing was written."""


@dataclass
class StepProgress:
    step: int  # steps done, 1-based
    total: int
    elapsed_s: float
    eta_s: float | None

    @property
    def fraction(self) -> float:
        return self.step / self.total

    def __str__(self) -> str:
        eta = f", about {self.eta_s:.0f} s left" if self.eta_s is not None else ""
        return f"step {self.step}/{self.total}{eta}"


@dataclass
class GenerationResult:
    frames: np.ndarray  # uint8, (frames, height, width, 3)
    request: GenerationRequest
    provenance: dict
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    step_seconds: list[float] = field(default_factory=list)


def model_spec(loaded: LoadedPipeline) -> ModelSpec:
    """The loaded model's sizes, from the same configs ``preflight`` reads from disk."""
    return ModelSpec.from_configs(dict(loaded.pipe.transformer.config), dict(loaded.pipe.vae.config))


def native_size(loaded: LoadedPipeline) -> tuple[int, int, int]:
    """(frames, height, width) the transformer was built for: its sample sizes times the VAE compression."""
    spec = model_spec(loaded)
    return spec.native_frames, spec.native_height, spec.native_width


def resolve_request(loaded: LoadedPipeline, request: GenerationRequest) -> GenerationRequest:
    """Fill ``None`` sizes with the model's native ones; 0 stays 0 (an error, never "native")."""
    return resolve_with_spec(model_spec(loaded), request)


def count_prompt_tokens(loaded: LoadedPipeline, text: str) -> int:
    """T5 tokens of ``text`` including the end-of-sequence token, without truncation."""
    return len(loaded.pipe.tokenizer(text, add_special_tokens=True, truncation=False).input_ids)


def validate_request(loaded: LoadedPipeline, request: GenerationRequest, max_sequence_length: int = 226) -> list[str]:
    """Raise ``GenerationInputError`` for requests that cannot run; return warnings for ones that run degraded."""
    pipe = loaded.pipe
    check_request(request, model_spec(loaded))
    cache_config(request.speed, loaded, request)  # a preset this model cannot use is refused before any step
    warnings: list[str] = []
    native_frames, native_h, native_w = native_size(loaded)
    if (request.height, request.width) != (native_h, native_w):
        warnings.append(f"{request.width}x{request.height} differs from the model's native {native_w}x{native_h}; "
                        f"expect lower quality.")
    if request.guidance_scale > 15:
        warnings.append(f"Guidance {request.guidance_scale} is far above the published 6; expect oversaturated clips.")
    for label, text in (("instruction", request.prompt), ("negative prompt", request.negative_prompt)):
        if not text:
            continue
        n_tokens = count_prompt_tokens(loaded, text)
        if n_tokens > max_sequence_length:
            ids = pipe.tokenizer(text, truncation=False).input_ids
            dropped = pipe.tokenizer.decode(ids[max_sequence_length - 1:], skip_special_tokens=True)
            if len(dropped) > 160:
                dropped = f"{dropped[:70]} ... {dropped[-70:]}"
            warnings.append(f"The {label} is {n_tokens} tokens; the T5 encoder reads only {max_sequence_length}. "
                            f"These words are ignored: '{dropped}'. Shorten it to keep them.")
    return warnings


def software_versions() -> dict:
    import diffusers
    import transformers

    import ophora

    return {"ophora_studio": ophora.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(), **runtime_versions()}


def build_provenance(loaded: LoadedPipeline, request: GenerationRequest, warnings: list[str]) -> dict:
    """Everything needed to reproduce or audit a clip; written to the sidecar and the MP4 metadata."""
    scheduler = loaded.pipe.scheduler
    return {
        "synthetic": True,
        "notice": "Synthetic video generated by an AI model. Not a recording of a real surgery.",
        "generator": "Ophora Studio",
        "model": loaded.describe(),
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "seed": request.seed,
        "seed_generator": "torch.Generator(cpu)",
        "seed_fixes": "initial noise (CPU generator); not GPU kernel nondeterminism",
        "num_inference_steps": request.num_inference_steps,
        "guidance_scale": request.guidance_scale,
        "use_dynamic_cfg": request.use_dynamic_cfg,
        "num_frames": request.num_frames,
        "height": request.height,
        "width": request.width,
        "fps": request.fps,
        "scheduler": {"class": type(scheduler).__name__,
                      "timestep_spacing": scheduler.config.get("timestep_spacing"),
                      "prediction_type": scheduler.config.get("prediction_type")},
        "software": software_versions(),
        "warnings": list(warnings),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def generate(
    loaded: LoadedPipeline,
    request: GenerationRequest,
    progress: Callable[[StepProgress], None] | None = None,
    cancel: threading.Event | None = None,
) -> GenerationResult:
    """Run the pipeline for one clip. Raises ``GenerationInputError`` or ``GenerationCancelled``."""
    request = resolve_request(loaded, request)
    warnings = validate_request(loaded, request)
    step_times: list[float] = []
    start = time.perf_counter()
    last = [start]

    def on_step_end(pipe, step_index, timestep, callback_kwargs):
        now = time.perf_counter()
        step_times.append(now - last[0])
        last[0] = now
        done, total = step_index + 1, request.num_inference_steps
        # The first step carries warm-up cost; estimate from later steps once there are some.
        recent = step_times[1:] or step_times
        eta = (total - done) * (sum(recent) / len(recent))
        if progress is not None:
            progress(StepProgress(step=done, total=total, elapsed_s=now - start, eta_s=eta))
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled(f"Cancelled after step {done} of {total}.")
        return callback_kwargs

    if cancel is not None and cancel.is_set():
        raise GenerationCancelled("Cancelled before the first step.")
    generator = torch.Generator(device="cpu").manual_seed(request.seed)
    with speed_preset(loaded, request) as speed, torch.inference_mode():
        output = loaded.pipe(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt or None,
            num_frames=request.num_frames,
            height=request.height,
            width=request.width,
            num_inference_steps=request.num_inference_steps,
            guidance_scale=request.guidance_scale,
            use_dynamic_cfg=request.use_dynamic_cfg,
            generator=generator,
            output_type="np",
            callback_on_step_end=on_step_end,
        )
    video = np.asarray(output.frames[0])
    frames = (np.clip(video, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    expected = (request.num_frames, request.height, request.width, 3)
    if frames.shape != expected:  # e.g. VAE tiling at a size its tiles do not divide
        raise RuntimeError(f"The pipeline returned frames of shape {frames.shape}, expected {expected}. "
                           f"Try again with VAE tiling off or at the model's native size.")
    seconds = time.perf_counter() - start
    provenance = build_provenance(loaded, request, warnings)
    provenance.update(speed=request.speed, speed_threshold=request.speed_threshold, speed_preset=speed)
    provenance["duration_s"] = round(seconds, 3)
    return GenerationResult(frames=frames, request=request, provenance=provenance, warnings=warnings,
                            seconds=seconds, step_seconds=step_times)
