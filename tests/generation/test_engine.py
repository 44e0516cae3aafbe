"""The generation engine on the real diffusers CogVideoXPipeline with tiny random weights."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from ophora.generation.engine import (GenerationCancelled, GenerationInputError, GenerationRequest, generate,
                                      native_size)
from ophora.generation.loading import load_pipeline

FAST = dict(num_inference_steps=2, num_frames=9)


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_pipeline(model=str(tiny_model_dir))


def test_native_size_comes_from_the_model(loaded):
    assert native_size(loaded) == (9, 96, 144)


def test_same_seed_same_frames_and_other_seed_differs(loaded):
    a = generate(loaded, GenerationRequest(prompt="Inject balanced salt solution", seed=7, **FAST))
    b = generate(loaded, GenerationRequest(prompt="Inject balanced salt solution", seed=7, **FAST))
    c = generate(loaded, GenerationRequest(prompt="Inject balanced salt solution", seed=8, **FAST))
    assert a.frames.shape == (9, 96, 144, 3) and a.frames.dtype == np.uint8
    assert np.array_equal(a.frames, b.frames)
    assert np.abs(a.frames.astype(int) - c.frames.astype(int)).mean() > 1.0


def test_engine_matches_raw_diffusers_pipeline(loaded):
    """The engine adds validation, progress and provenance, never a different clip."""
    request = GenerationRequest(prompt="Polish the posterior capsule", seed=3, **FAST)
    ours = generate(loaded, request).frames
    raw = loaded.pipe(prompt=request.prompt, num_frames=9, height=96, width=144, num_inference_steps=2,
                      guidance_scale=6.0, use_dynamic_cfg=True, generator=torch.Generator().manual_seed(3),
                      output_type="np").frames[0]
    assert np.array_equal(ours, (np.clip(raw, 0, 1) * 255).round().astype(np.uint8))


def test_published_sampler_settings_are_the_defaults(loaded):
    request = GenerationRequest(prompt="x")
    assert (request.num_inference_steps, request.guidance_scale, request.use_dynamic_cfg, request.fps) == (50, 6.0, True, 8)
    assert type(loaded.pipe.scheduler).__name__ == "CogVideoXDPMScheduler"
    assert loaded.pipe.scheduler.config.timestep_spacing == "trailing"
    assert loaded.pipe.vae.use_slicing and loaded.pipe.vae.use_tiling


def test_progress_reports_every_step_with_eta(loaded):
    seen = []
    generate(loaded, GenerationRequest(prompt="Chop the nucleus", seed=1, num_inference_steps=4, num_frames=9),
             progress=seen.append)
    assert [p.step for p in seen] == [1, 2, 3, 4]
    assert all(p.total == 4 for p in seen)
    assert seen[-1].eta_s == 0 and seen[0].eta_s is not None and seen[-1].elapsed_s > 0


def test_cancel_stops_between_steps(loaded):
    cancel = threading.Event()
    steps = []

    def progress(p):
        steps.append(p.step)
        if p.step == 2:
            cancel.set()

    with pytest.raises(GenerationCancelled, match="after step 2 of 10"):
        generate(loaded, GenerationRequest(prompt="x", num_inference_steps=10, num_frames=9), progress=progress,
                 cancel=cancel)
    assert steps == [1, 2]


@pytest.mark.parametrize("change, message", [
    (dict(prompt="   "), "instruction is empty"),
    (dict(num_frames=10), "Frames must be 8N\\+1"),
    (dict(num_frames=57), "at most 49"),
    (dict(height=100), "Height must be a multiple of 16"),
    (dict(width=8), "Width must be a multiple of 16"),
    (dict(num_inference_steps=0), "Steps must be"),
    (dict(guidance_scale=0.5), "Guidance must be between 1 and 30"),
    (dict(seed=-1), "Seed must be a whole number"),
    (dict(seed=2**64), "Seed must be a whole number"),
    (dict(fps=0), "fps must be"),
])
def test_bad_requests_get_clear_errors(loaded, change, message):
    request = GenerationRequest(**{"prompt": "Inject viscoelastic", **FAST, **change})
    with pytest.raises(GenerationInputError, match=message):
        generate(loaded, request)


def test_long_prompt_warns_and_names_the_dropped_words(loaded):
    long_prompt = " ".join(["phacoemulsification of the nucleus"] * 60) + " finalwords"
    result = generate(loaded, GenerationRequest(prompt=long_prompt, **FAST))
    assert len(result.warnings) == 1
    assert "the T5 encoder reads only 226" in result.warnings[0] and "finalwords" in result.warnings[0].lower()
    assert result.provenance["warnings"] == result.warnings


def test_provenance_names_model_settings_and_synthetic(loaded, tiny_model_dir):
    result = generate(loaded, GenerationRequest(prompt="Inject the lens", negative_prompt="blurry", seed=5, **FAST))
    p = result.provenance
    assert p["synthetic"] is True
    assert p["model"]["path"] == str(tiny_model_dir.resolve()) and p["model"]["tiny_random_weights"] is True
    assert p["model"]["fingerprint"].startswith("sha256:")
    assert (p["prompt"], p["negative_prompt"], p["seed"], p["num_inference_steps"]) == ("Inject the lens", "blurry", 5, 2)
    assert p["scheduler"] == {"class": "CogVideoXDPMScheduler", "timestep_spacing": "trailing",
                              "prediction_type": "v_prediction"}
    assert {"diffusers", "transformers", "torch", "ophora_studio"} <= set(p["software"])
    assert p["model"]["precision"] == "fp32" and p["model"]["quantization"] == "none"
