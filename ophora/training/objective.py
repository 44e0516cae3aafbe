"""The denoising objective, following the base model's scheduler.

CogVideoX-2b's scheduler config (``scheduler/scheduler_config.json`` of THUDM/CogVideoX-2b, and so of Ophora)
says ``prediction_type: v_prediction`` with zero-terminal-SNR betas (``rescale_betas_zero_snr: true``,
``snr_shift_scale: 3.0``, 1000 training steps). The transformer therefore predicts the velocity
``v = sqrt(abar_t) * noise - sqrt(1 - abar_t) * x0``. diffusers' ``train_cogvideox_lora.py`` and the released Ophora
code write the loss as the x0 error weighted by ``1 / (1 - abar_t)``; since
``x0_hat - x0 = -sqrt(1 - abar_t) (v_hat - v)`` that is exactly the plain v-MSE computed here (without dividing
by ``1 - abar_t``, which is tiny at small t). Epsilon- and sample-prediction checkpoints are handled too, so the
loss always matches whatever base model is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# One CPU generator for the whole batch, or one per sample (what training uses, see ``sample_generators``).
Generators = torch.Generator | Sequence[torch.Generator]


def sample_generators(seed: int, positions: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per sample, seeded by the run's seed and the sample's position in the global stream.

    Why per sample: the posterior sample, noise and timestep a clip gets then depend only on where it sits in the
    run (optimizer step x global batch + slot), not on how the global batch is split into processes, micro-batches
    and accumulation steps. 2 GPUs x batch 1, 1 GPU x batch 1 x accumulation 2 and 1 GPU x batch 2 train on the
    same numbers, and a resumed run needs no saved generator state.
    """
    return [torch.Generator().manual_seed(int(np.random.SeedSequence([seed, position]).generate_state(1, np.uint64)[0]))
            for position in positions]


def _randn(shape: torch.Size, generator: Generators, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, dtype=dtype)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}.")
    return torch.stack([torch.randn(shape[1:], generator=g, dtype=dtype) for g in generator])


def _randint(high: int, batch: int, generator: Generators) -> torch.Tensor:
    if isinstance(generator, torch.Generator):
        return torch.randint(0, high, (batch,), generator=generator)
    return torch.cat([torch.randint(0, high, (1,), generator=g) for g in generator])


def sample_latents(latent_dist: torch.Tensor, scaling_factor: float, generator: Generators) -> torch.Tensor:
    """Draw from the stored VAE posterior (mean, logvar) and scale, as the transformer was trained to see."""
    mean, logvar = torch.chunk(latent_dist.float(), 2, dim=1)
    std = torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))
    noise = _randn(mean.shape, generator, mean.dtype)
    # Same arithmetic as DiagonalGaussianDistribution.sample, with our generator on CPU for exact resume.
    return (mean + std * noise.to(mean.device)) * scaling_factor


def rotary_embeddings(transformer_config, latent_frames: int, latent_height: int, latent_width: int,
                      device: torch.device):
    """RoPE tables for CogVideoX-5b-style transformers (None for 2b, which uses sin-cos position embeddings).

    Mirrors ``CogVideoXPipeline._prepare_rotary_positional_embeddings`` so training and sampling agree.
    """
    if not transformer_config.use_rotary_positional_embeddings:
        return None
    from diffusers.models.embeddings import get_3d_rotary_pos_embed
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import (
        get_resize_crop_region_for_grid,
    )

    p, p_t = transformer_config.patch_size, transformer_config.patch_size_t
    grid_h, grid_w = latent_height // p, latent_width // p
    base_w, base_h = transformer_config.sample_width // p, transformer_config.sample_height // p
    if p_t is None:
        crops = get_resize_crop_region_for_grid((grid_h, grid_w), base_w, base_h)
        return get_3d_rotary_pos_embed(embed_dim=transformer_config.attention_head_dim, crops_coords=crops,
                                       grid_size=(grid_h, grid_w), temporal_size=latent_frames, device=device)
    return get_3d_rotary_pos_embed(embed_dim=transformer_config.attention_head_dim, crops_coords=None,
                                   grid_size=(grid_h, grid_w), temporal_size=(latent_frames + p_t - 1) // p_t,
                                   grid_type="slice", max_size=(base_h, base_w), device=device)


def diffusion_loss(transformer, scheduler, latents: torch.Tensor, prompt_embeds: torch.Tensor,
                   generator: Generators, transformer_config=None,
                   input_dtype: torch.dtype | None = None) -> torch.Tensor:
    """One training loss for ``latents`` (B, C, F, H, W), scaled, and T5 ``prompt_embeds`` (B, L, D).

    Timesteps are uniform in [0, num_train_timesteps) and the noise is Gaussian, both drawn from ``generator``
    (on CPU, so a resumed run draws the same numbers on any device; a list gives one generator per sample). ``input_dtype`` casts only the
    transformer's inputs (DeepSpeed bf16 holds bf16 weights and does not autocast); targets stay fp32.
    """
    config = transformer_config or transformer.config
    batch = latents.shape[0]
    device = latents.device
    x0 = latents.permute(0, 2, 1, 3, 4).contiguous()  # the transformer takes (B, F, C, H, W)
    noise = _randn(x0.shape, generator, x0.dtype).to(device)
    timesteps = _randint(scheduler.config.num_train_timesteps, batch, generator).to(device)
    noisy = scheduler.add_noise(x0, noise, timesteps)
    rotary = rotary_embeddings(config, x0.shape[1], x0.shape[3], x0.shape[4], device)
    if input_dtype is not None:
        noisy, prompt_embeds = noisy.to(input_dtype), prompt_embeds.to(input_dtype)
    prediction = transformer(hidden_states=noisy, encoder_hidden_states=prompt_embeds, timestep=timesteps,
                             image_rotary_emb=rotary, return_dict=False)[0]
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "v_prediction":
        target = scheduler.get_velocity(x0, noise, timesteps)
    elif prediction_type == "epsilon":
        target = noise
    elif prediction_type == "sample":
        target = x0
    else:
        raise ValueError(f"Unsupported scheduler prediction_type {prediction_type!r}.")
    error = (prediction.float() - target.float()) ** 2
    return error.reshape(batch, -1).mean(dim=1).mean()
