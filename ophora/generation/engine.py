"""Generate one clip: validate the request, run the diffusers pipeline with progress and cancel, return frames.

Read top to bottom: ``GenerationRequest`` holds the published sampler settings as defaults;
``validate_request`` turns every bad input into a clear message before any GPU time is spent;
``generate`` runs ``CogVideoXPipeline`` with a CPU ``torch.Generator`` (so a seed is the same clip on every
machine), reports each step with an ETA, and stops between steps when asked to.
"""

from __future__ import annotations

import platform
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Callable

import numpy as np
import torch

from ophora.generation.loading import LoadedPipeline

MAX_SEED = 2**63 - 1
MAX_FRAMES = 49  # CogVideoX-2b: 8N+1 frames, N <= 6


class GenerationInputError(ValueError):
    """A request the model cannot run; the message says what to change."""


class GenerationCancelled(RuntimeError):
    """The user cancelled between denoising steps; nothing was written."""


@dataclass
class GenerationRequest:
    """One clip's settings. ``None`` sizes mean the model's native size (720x480x49 for Ophora)."""

    prompt: str
    negative_prompt: str = ""
    seed: int = 12345  # the published batch sampler's fixed seed
    num_inference_steps: int = 50
    guidance_scale: float = 6.0
    use_dynamic_cfg: bool = True
    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    fps: int = 8


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


def native_size(loaded: LoadedPipeline) -> tuple[int, int, int]:
    """(frames, height, width) the transformer was built for: its sample sizes times the VAE compression."""
    pipe = loaded.pipe
    cfg = pipe.transformer.config
    frames = min(MAX_FRAMES, int(cfg.sample_frames))
    return frames, int(cfg.sample_height) * pipe.vae_scale_factor_spatial, int(cfg.sample_width) * pipe.vae_scale_factor_spatial


def resolve_request(loaded: LoadedPipeline, request: GenerationRequest) -> GenerationRequest:
    """Fill ``None`` sizes with the model's native ones."""
    frames, height, width = native_size(loaded)
    return GenerationRequest(**{**asdict(request), "num_frames": request.num_frames or frames,
                                "height": request.height or height, "width": request.width or width})


def count_prompt_tokens(loaded: LoadedPipeline, text: str) -> int:
    """T5 tokens of ``text`` including the end-of-sequence token, without truncation."""
    return len(loaded.pipe.tokenizer(text, add_special_tokens=True, truncation=False).input_ids)


def validate_request(loaded: LoadedPipeline, request: GenerationRequest, max_sequence_length: int = 226) -> list[str]:
    """Raise ``GenerationInputError`` for requests that cannot run; return warnings for ones that run degraded."""
    pipe = loaded.pipe
    errors: list[str] = []
    warnings: list[str] = []
    if not isinstance(request.prompt, str) or not request.prompt.strip():
        errors.append("The instruction is empty: describe the surgical step to show, e.g. 'Inject balanced salt "
                      "solution under the capsule rim with a cannula'.")
    if not isinstance(request.seed, int) or isinstance(request.seed, bool) or not 0 <= request.seed <= MAX_SEED:
        errors.append(f"Seed must be a whole number from 0 to {MAX_SEED}; got {request.seed!r}.")
    if not isinstance(request.num_inference_steps, int) or not 1 <= request.num_inference_steps <= 500:
        errors.append(f"Steps must be a whole number from 1 to 500 (50 is the published setting); "
                      f"got {request.num_inference_steps!r}.")
    if not 1.0 <= float(request.guidance_scale) <= 30.0:
        errors.append(f"Guidance must be between 1 and 30 (6 is the published setting); got {request.guidance_scale}.")
    if not isinstance(request.fps, int) or not 1 <= request.fps <= 60:
        errors.append(f"fps must be a whole number from 1 to 60 (Ophora clips are 8 fps); got {request.fps!r}.")
    frames = request.num_frames
    temporal = pipe.vae_scale_factor_temporal * 2  # 8: the VAE compresses 4x and encodes frames in pairs of latents
    if not isinstance(frames, int) or frames < 1 or (frames - 1) % temporal or frames > MAX_FRAMES:
        valid = ", ".join(str(temporal * n + 1) for n in range(1, MAX_FRAMES // temporal + 1))
        errors.append(f"Frames must be {temporal}N+1 and at most {MAX_FRAMES} (one of {valid}); got {frames!r}.")
    multiple = pipe.vae_scale_factor_spatial * pipe.transformer.config.patch_size
    for name, value in (("Height", request.height), ("Width", request.width)):
        if not isinstance(value, int) or value < multiple or value % multiple or value > 2048:
            errors.append(f"{name} must be a multiple of {multiple} between {multiple} and 2048 pixels; got {value!r}.")
    if errors:
        raise GenerationInputError(" ".join(errors))

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
            "transformers": transformers.__version__, "torch": torch.__version__,
            "python": platform.python_version()}


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
    with torch.inference_mode():
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
    provenance["duration_s"] = round(seconds, 3)
    return GenerationResult(frames=frames, request=request, provenance=provenance, warnings=warnings,
                            seconds=seconds, step_seconds=step_times)
