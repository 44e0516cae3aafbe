"""The loss follows the scheduler's prediction type and matches diffusers' CogVideoX training scripts."""

from __future__ import annotations

import pytest
import torch

from ophora.training.dataset import EncodedClips, collate
from ophora.training.objective import diffusion_loss, sample_latents


def _inputs(tiny_model_dir, encoded_dir, prediction_type: str | None = None):
    from diffusers import CogVideoXDDIMScheduler, CogVideoXTransformer3DModel

    transformer = CogVideoXTransformer3DModel.from_pretrained(tiny_model_dir, subfolder="transformer").eval()
    scheduler = CogVideoXDDIMScheduler.from_pretrained(tiny_model_dir, subfolder="scheduler")
    if prediction_type:
        scheduler = CogVideoXDDIMScheduler.from_config(scheduler.config, prediction_type=prediction_type)
    batch = collate([EncodedClips([encoded_dir])[i] for i in (0, 1)])
    latents = sample_latents(batch["latent_dist"], 1.15258426, torch.Generator().manual_seed(0))
    return transformer, scheduler, latents, batch["prompt_embeds"]


def _draws(latents, scheduler, seed):
    """The noise and timesteps ``diffusion_loss`` draws from a generator seeded with ``seed`` (same order)."""
    generator = torch.Generator().manual_seed(seed)
    x0 = latents.permute(0, 2, 1, 3, 4).contiguous()
    noise = torch.randn(x0.shape, generator=generator)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],), generator=generator)
    return x0, noise, timesteps


@torch.no_grad()
def test_v_prediction_loss_equals_diffusers_weighted_x0_loss(tiny_model_dir, encoded_dir):
    """CogVideoX-2b's scheduler is v_prediction with zero-terminal SNR (as the objective's docstring says)."""
    transformer, scheduler, latents, embeds = _inputs(tiny_model_dir, encoded_dir)
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.rescale_betas_zero_snr
    assert scheduler.config.snr_shift_scale == 3.0
    loss = diffusion_loss(transformer, scheduler, latents, embeds, torch.Generator().manual_seed(5))

    # train_cogvideox_lora.py: x0 from the v prediction, squared error weighted by 1 / (1 - alphas_cumprod[t]).
    x0, noise, timesteps = _draws(latents, scheduler, 5)
    noisy = scheduler.add_noise(x0, noise, timesteps)
    output = transformer(hidden_states=noisy, encoder_hidden_states=embeds, timestep=timesteps, return_dict=False)[0]
    model_pred = scheduler.get_velocity(output, noisy, timesteps)
    weights = (1 / (1 - scheduler.alphas_cumprod.float()[timesteps])).flatten()
    while weights.ndim < model_pred.ndim:
        weights = weights.unsqueeze(-1)
    expected = torch.mean((weights * (model_pred - x0) ** 2).reshape(x0.shape[0], -1), dim=1).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample"])
@torch.no_grad()
def test_other_prediction_types_regress_their_own_target(tiny_model_dir, encoded_dir, prediction_type):
    transformer, scheduler, latents, embeds = _inputs(tiny_model_dir, encoded_dir, prediction_type)
    loss = diffusion_loss(transformer, scheduler, latents, embeds, torch.Generator().manual_seed(5))
    x0, noise, timesteps = _draws(latents, scheduler, 5)
    output = transformer(hidden_states=scheduler.add_noise(x0, noise, timesteps), encoder_hidden_states=embeds,
                         timestep=timesteps, return_dict=False)[0]
    target = noise if prediction_type == "epsilon" else x0
    torch.testing.assert_close(loss, torch.mean((output - target) ** 2), rtol=1e-5, atol=1e-7)
