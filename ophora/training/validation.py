"""Validation clips during training, generated through the generation engine.

Why the engine: validation clips then come from exactly the sampler the app uses (DPM, trailing spacing, CPU
seed) and carry the same provenance sidecar. The frozen T5 and VAE are loaded once, lazily, in the training
precision, kept in CPU memory between validations (the 4.8 B-parameter T5 would otherwise sit on the GPU for
the whole run), and checked bit-identical after every validation so "frozen" is verified, not assumed.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def state_digest(module: torch.nn.Module) -> str:
    """sha256 of every tensor of ``module`` (names, dtypes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@contextmanager
def _whole_models():
    """Build models whole even inside a DeepSpeed ZeRO-3 run.

    Why: while a ZeRO-3 config is registered, transformers builds every model partitioned
    (``deepspeed.zero.Init``, a collective). The frozen T5 encoder is loaded by the main process alone, so the
    other processes would never join and the run would hang.
    """
    try:
        from transformers.integrations import deepspeed as hf_deepspeed
    except ImportError:
        yield
        return
    registered = hf_deepspeed._hf_deepspeed_config_weak_ref
    config = registered() if registered is not None else None
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if config is not None:
            hf_deepspeed.set_hf_deepspeed_config(config)


class FrozenParts:
    """The base pipeline's tokenizer, T5 encoder, VAE and scheduler; loaded on first use, never trained."""

    def __init__(self, base_model: str, device: torch.device, dtype: torch.dtype, local_files_only: bool = False):
        self.base_model, self.device, self.dtype = base_model, device, dtype
        self.local_files_only = local_files_only
        self.pipe = None
        self.digests: dict[str, str] = {}

    def load(self):
        if self.pipe is None:
            from diffusers import CogVideoXPipeline

            with _whole_models():
                self.pipe = CogVideoXPipeline.from_pretrained(self.base_model, transformer=None, torch_dtype=self.dtype,
                                                              local_files_only=self.local_files_only)
            for name in ("text_encoder", "vae"):
                module = getattr(self.pipe, name)
                module.requires_grad_(False).eval()
                self.digests[name] = state_digest(module)
        return self.pipe

    @contextmanager
    def on_device(self):
        """The frozen parts on the training device for the duration of a validation, then back to CPU."""
        pipe = self.load()
        pipe.text_encoder.to(self.device)
        pipe.vae.to(self.device)
        try:
            yield pipe
        finally:
            pipe.text_encoder.to("cpu")
            pipe.vae.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def verify(self) -> None:
        """Raise if the T5 encoder or VAE changed or became trainable since they were loaded."""
        if self.pipe is None:
            return
        for name, expected in self.digests.items():
            module = getattr(self.pipe, name)
            if any(p.requires_grad for p in module.parameters()):
                raise RuntimeError(f"The frozen {name} has trainable parameters.")
            if state_digest(module) != expected:
                raise RuntimeError(f"The frozen {name} changed during training.")


def run_validation(transformer, frozen: FrozenParts, prompts: list[str], out_dir: Path, step: int, *,
                   run: dict, num_frames: int, height: int, width: int, num_inference_steps: int, guidance_scale: float,
                   use_dynamic_cfg: bool, seed: int, fps: int, autocast) -> list[Path]:
    """Generate one clip per prompt with the current transformer; returns the written MP4 paths.

    ``run`` (stage, run folder, base model) goes into each clip's provenance next to the step.
    """
    with frozen.on_device() as base:
        paths = _generate_clips(base, transformer, frozen, prompts, out_dir, step, run=run, num_frames=num_frames,
                                height=height, width=width, num_inference_steps=num_inference_steps,
                                guidance_scale=guidance_scale, use_dynamic_cfg=use_dynamic_cfg, seed=seed, fps=fps,
                                autocast=autocast)
    frozen.verify()
    return paths


def _generate_clips(base, transformer, frozen: FrozenParts, prompts: list[str], out_dir: Path, step: int, *,
                    run: dict, num_frames: int, height: int, width: int, num_inference_steps: int, guidance_scale: float,
                    use_dynamic_cfg: bool, seed: int, fps: int, autocast) -> list[Path]:
    from diffusers import CogVideoXDPMScheduler, CogVideoXPipeline

    from ophora.generation.engine import GenerationRequest, generate
    from ophora.generation.loading import (
        Hardware,
        LoadedPipeline,
        LoadOptions,
        plan_loading,
    )
    from ophora.generation.video import write_clip

    pipe = CogVideoXPipeline(tokenizer=base.tokenizer, text_encoder=base.text_encoder, vae=base.vae,
                             transformer=transformer,
                             scheduler=CogVideoXDPMScheduler.from_config(base.scheduler.config,
                                                                         timestep_spacing="trailing"))
    pipe.vae.enable_slicing()
    pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
    device = str(frozen.device)
    options = LoadOptions(model=frozen.base_model, quantization="none", memory="none", device=device,
                          vae_slicing=True, vae_tiling=True)
    hardware = Hardware.detect(device)
    loaded = LoadedPipeline(pipe=pipe, options=options, plan=plan_loading(options, hardware), hardware=hardware,
                            model_path=frozen.base_model, model_fingerprint=f"training-step-{step}", is_tiny=False)
    was_training = transformer.training
    transformer.eval()
    paths = []
    try:
        for i, prompt in enumerate(prompts):
            request = GenerationRequest(prompt=prompt, seed=seed, num_inference_steps=num_inference_steps,
                                        guidance_scale=guidance_scale, use_dynamic_cfg=use_dynamic_cfg,
                                        num_frames=num_frames, height=height, width=width, fps=fps)
            with autocast():
                result = generate(loaded, request)
            # The engine describes the base model; say that the denoiser is the run's in-training transformer.
            result.provenance["training_step"] = step
            result.provenance["training"] = {**run, "step": step,
                                             "transformer": "in-training weights of this run at this step"}
            paths.append(write_clip(result.frames, out_dir / f"step-{step:06d}" / f"prompt-{i:02d}.mp4", fps=fps,
                                    provenance=result.provenance, synthetic_mark=True))
    finally:
        transformer.train(was_training)
    return paths
