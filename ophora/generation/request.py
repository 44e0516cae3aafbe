"""One clip's settings and the checks that need no weights: the model's sizes come from its config files.

Why apart from ``engine.py``: every check here runs before any weight is loaded (the full model takes minutes
to load), and without importing torch, so a mistyped ``--frames`` is answered at once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ophora.generation.options import SPEED_LABELS, SPEEDS, THRESHOLD_SPEEDS

MAX_SEED = 2**63 - 1
MAX_FRAMES = 49  # CogVideoX-2b: 8N+1 frames, N <= 6
MAX_STEPS = 500
GUIDANCE_RANGE = (1.0, 30.0)
FPS_RANGE = (1, 60)
MAX_SIDE = 2048


class GenerationInputError(ValueError):
    """A request the model cannot run; the message says what to change."""


@dataclass
class GenerationRequest:
    """One clip's settings. ``None`` sizes mean the model's native size (720x480x49 for Ophora); 0 is an error."""

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
    speed: str = "exact"  # a preset of ``ophora.generation.speed``; "exact" is the published sampler
    speed_threshold: float | None = None  # firstblock / magcache: skip below this change (None: the preset's)


@dataclass(frozen=True)
class ModelSpec:
    """The sizes a CogVideoX pipeline accepts, read from its transformer and VAE configs."""

    native_frames: int
    native_height: int
    native_width: int
    frame_multiple: int  # frames must be frame_multiple * N + 1
    size_multiple: int  # height and width must be multiples of this

    @classmethod
    def from_configs(cls, transformer: dict, vae: dict) -> "ModelSpec":
        """From ``transformer/config.json`` and ``vae/config.json`` (or the loaded modules' configs): the same
        arithmetic as ``CogVideoXPipeline`` (spatial factor 2**(blocks-1), latent frames encoded in pairs)."""
        spatial = 2 ** (len(vae.get("block_out_channels", (1, 1, 1, 1))) - 1)
        temporal = int(vae.get("temporal_compression_ratio", 4))
        patch = int(transformer.get("patch_size", 2))
        return cls(native_frames=min(MAX_FRAMES, int(transformer.get("sample_frames", MAX_FRAMES))),
                   native_height=int(transformer.get("sample_height", 60)) * spatial,
                   native_width=int(transformer.get("sample_width", 90)) * spatial,
                   frame_multiple=temporal * 2, size_multiple=spatial * patch)


def resolve_request(spec: ModelSpec, request: GenerationRequest) -> GenerationRequest:
    """Fill ``None`` sizes with the model's native ones (an explicit 0 stays 0 and fails the checks)."""
    return GenerationRequest(**{**asdict(request),
                                "num_frames": spec.native_frames if request.num_frames is None else request.num_frames,
                                "height": spec.native_height if request.height is None else request.height,
                                "width": spec.native_width if request.width is None else request.width})


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_request(request: GenerationRequest, spec: ModelSpec | None = None) -> None:
    """Raise ``GenerationInputError`` naming every setting the model cannot run, and what to use instead.

    With ``spec`` (the model's configs) sizes are checked against the model; without, ``None`` sizes are left
    for the model and the CogVideoX rules (8N+1 frames, multiples of 16) are checked."""
    errors: list[str] = []
    if not isinstance(request.prompt, str) or not request.prompt.strip():
        errors.append("The instruction is empty: describe the surgical step to show, e.g. 'Inject balanced salt "
                      "solution under the capsule rim with a cannula'.")
    if not _whole(request.seed) or not 0 <= request.seed <= MAX_SEED:
        errors.append(f"Seed must be a whole number from 0 to {MAX_SEED}; got {request.seed!r}.")
    if not _whole(request.num_inference_steps) or not 1 <= request.num_inference_steps <= MAX_STEPS:
        errors.append(f"Steps must be a whole number from 1 to {MAX_STEPS} (50 is the published setting); "
                      f"got {request.num_inference_steps!r}.")
    try:
        guidance = float(request.guidance_scale)
    except (TypeError, ValueError):
        guidance = math.nan
    if not GUIDANCE_RANGE[0] <= guidance <= GUIDANCE_RANGE[1]:  # NaN fails too
        errors.append(f"Guidance must be between {GUIDANCE_RANGE[0]:g} and {GUIDANCE_RANGE[1]:g} (6 is the published "
                      f"setting); got {request.guidance_scale!r}.")
    if not _whole(request.fps) or not FPS_RANGE[0] <= request.fps <= FPS_RANGE[1]:
        errors.append(f"fps must be a whole number from {FPS_RANGE[0]} to {FPS_RANGE[1]} (Ophora clips are 8 fps); "
                      f"got {request.fps!r}.")
    if request.speed not in SPEEDS:
        errors.append(f"Unknown speed {request.speed!r}; choose one of: "
                      + "; ".join(f"{name} ({SPEED_LABELS[name]})" for name in SPEEDS) + ".")
    if request.speed_threshold is not None:
        if request.speed not in THRESHOLD_SPEEDS:
            errors.append(f"A speed threshold applies only to the speeds {' and '.join(THRESHOLD_SPEEDS)}; "
                          f"leave it out for {request.speed!r}.")
        elif (isinstance(request.speed_threshold, bool) or not isinstance(request.speed_threshold, (int, float))
              or not 0 < request.speed_threshold <= 1):
            errors.append(f"The speed threshold must be a number above 0 and at most 1 (higher skips more and "
                          f"strays further from the exact clip); got {request.speed_threshold!r}.")
    frame_multiple = spec.frame_multiple if spec else 8
    size_multiple = spec.size_multiple if spec else 16
    native = (f" (leave it out for the model's native {{}})" if spec else " (leave it out for the model's native size)")
    frames = request.num_frames
    if frames is not None or spec is not None:
        if not _whole(frames) or frames < 1 or (frames - 1) % frame_multiple or frames > MAX_FRAMES:
            valid = ", ".join(str(frame_multiple * n + 1) for n in range(1, MAX_FRAMES // frame_multiple + 1))
            errors.append(f"Frames must be {frame_multiple}N+1 and at most {MAX_FRAMES} (one of {valid}); got "
                          f"{frames!r}" + native.format(spec.native_frames if spec else "") + ".")
    for name, value, default in (("Height", request.height, spec.native_height if spec else None),
                                 ("Width", request.width, spec.native_width if spec else None)):
        if value is None and spec is None:
            continue
        if not _whole(value) or value < size_multiple or value % size_multiple or value > MAX_SIDE:
            errors.append(f"{name} must be a multiple of {size_multiple} between {size_multiple} and {MAX_SIDE} "
                          f"pixels; got {value!r}" + native.format(default) + ".")
    if errors:
        raise GenerationInputError(" ".join(errors))
