"""The training loop on CPU with the tiny model: overfit, frozen parts, exact resume, engine loading, P2FT."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ophora.training.config import config_from_dict
from ophora.training.dataset import EncodedClips, collate
from ophora.training.objective import diffusion_loss, sample_latents
from ophora.training.trainer import fit
from tests.training.conftest import tiny_stage


def _fixed_eval_loss(transformer_dir, base_dir, encoded_dir, repeats: int = 6) -> float:
    """Loss over the two clips with fixed posterior samples, timesteps and noise (independent of training)."""
    from diffusers import CogVideoXDDIMScheduler, CogVideoXTransformer3DModel

    transformer = CogVideoXTransformer3DModel.from_pretrained(transformer_dir, subfolder="transformer").eval()
    scheduler = CogVideoXDDIMScheduler.from_pretrained(base_dir, subfolder="scheduler")
    data = EncodedClips([encoded_dir])
    batch = collate([data[0], data[1]])
    generator = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        losses = [diffusion_loss(transformer, scheduler, sample_latents(batch["latent_dist"], 1.15258426, generator),
                                 batch["prompt_embeds"], generator).item() for _ in range(repeats)]
    return float(np.mean(losses))


def _safetensors(folder):
    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


@pytest.mark.slow
def test_overfits_two_clips_keeps_frozen_parts_and_loads_in_engine(tiny_model_dir, encoded_dir, tmp_path):
    from ophora.generation.engine import GenerationRequest, generate
    from ophora.generation.loading import load_pipeline

    config = config_from_dict(tiny_stage(tiny_model_dir, encoded_dir, tmp_path / "run", max_train_steps=40,
                                         validation_steps=40, validation_prompts=["Inject viscoelastic."],
                                         validation_num_inference_steps=2))
    result = fit(config, cpu=True)
    losses = [result.losses[step] for step in sorted(result.losses)]
    assert len(losses) == 40 and all(np.isfinite(losses))
    # Each step's loss is at a random timestep, so the training curve is noisy (about 10% here); the strict
    # check is the fixed-draw evaluation loss below.
    assert np.mean(losses[-10:]) < 0.95 * np.mean(losses[:10]), losses
    before = _fixed_eval_loss(tiny_model_dir, tiny_model_dir, encoded_dir)
    after = _fixed_eval_loss(result.model_dir, tiny_model_dir, encoded_dir)
    # The floor is high: the tiny random VAE's posterior std (~1) exceeds its latent means' spread (~0.4), and
    # that sampled part of x0 cannot be predicted. The fall is deterministic and well clear of noise.
    assert after < 0.9 * before, (before, after)

    for part in ("vae", "text_encoder"):  # bit-identical frozen weights
        base, trained = _safetensors(tiny_model_dir / part), _safetensors(result.model_dir / part)
        assert base.keys() == trained.keys()
        assert all(torch.equal(base[k], trained[k]) for k in base)
        assert result.frozen_check[part]["identical"]
    base_t, trained_t = _safetensors(tiny_model_dir / "transformer"), _safetensors(result.model_dir / "transformer")
    assert any(not torch.equal(base_t[k], trained_t[k]) for k in base_t)  # the transformer did train

    clip = result.validation_clips[0]
    assert clip.is_file() and clip.parent.name == "step-000040"
    from ophora.generation.video import sidecar_path

    provenance = json.loads(sidecar_path(clip).read_text())
    assert provenance["synthetic"] and provenance["synthetic_mark"]
    assert provenance["prompt"] == "Inject viscoelastic." and provenance["training"]["step"] == 40
    assert provenance["training"]["stage"] == "tpt" and provenance["training"]["run_dir"] == str(tmp_path / "run")

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((tmp_path / "run" / "logs").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    logged = {e.step: e.value for e in events.Scalars("loss")}
    assert logged.keys() == result.losses.keys()
    assert all(np.isclose(logged[k], result.losses[k], rtol=1e-5) for k in logged)
    assert {"lr", "grad_norm"} <= set(events.Tags()["scalars"])
    assert "validation/prompt-00" in events.Tags()["images"]

    request = GenerationRequest(prompt="Inject viscoelastic.", num_inference_steps=2, num_frames=9, height=96,
                                width=144)
    for loaded in (load_pipeline(model=str(result.model_dir), device="cpu"),
                   load_pipeline(model=str(tiny_model_dir), transformer=str(result.model_dir), device="cpu")):
        clip = generate(loaded, request)
        assert clip.frames.shape == (9, 96, 144, 3)


def test_resume_reproduces_an_uninterrupted_run(tiny_model_dir, encoded_dir, tmp_path):
    # Two clips, batch 1, accumulation 3: step 3 ends at micro-batch 9, in the middle of an epoch (2 batches),
    # so the data position, not only an epoch boundary, must be restored.
    settings = {"max_train_steps": 5, "train_batch_size": 1, "gradient_accumulation_steps": 3, "lr_warmup_steps": 2,
                    "lr_scheduler": "cosine_with_restarts", "checkpointing_steps": 100}
    whole = fit(config_from_dict(tiny_stage(tiny_model_dir, encoded_dir, tmp_path / "a", **settings)), cpu=True)
    interrupted = config_from_dict(tiny_stage(tiny_model_dir, encoded_dir, tmp_path / "b", **settings))
    first = fit(interrupted, cpu=True, stop_at_step=3)
    assert first.model_dir is None and sorted(first.losses) == [1, 2, 3]
    changed = config_from_dict(tiny_stage(tiny_model_dir, encoded_dir, tmp_path / "b", **{**settings, "seed": 8}))
    with pytest.raises(Exception, match="Cannot resume .*seed was 7, now 8"):
        fit(changed, cpu=True, resume="latest")
    second = fit(interrupted, cpu=True, resume="latest")
    assert second.resumed_from.name == "checkpoint-3"
    assert sorted(second.losses) == [4, 5]
    assert {**first.losses, **second.losses} == whole.losses  # exactly equal, step for step
    a, b = _safetensors(whole.model_dir / "transformer"), _safetensors(second.model_dir / "transformer")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_lora_tpt_then_p2ft_through_the_cli(tiny_model_dir, encoded_dir, tmp_path):
    from ophora.training.cli import main

    common = [f"data=[{encoded_dir}]", "mixed_precision=no", "validation_steps=0", "train_batch_size=2",
              "global_batch_size=2",
              "lr_warmup_steps=0", "save_dtype=fp32", "checkpointing_steps=100"]
    tpt = tmp_path / "tpt"
    assert main(["fit", "ophora/training/configs/tpt.yaml", "--cpu"] + [f"--set={s}" for s in common + [
        f"base_model={tiny_model_dir}", f"output_dir={tpt}", "max_train_steps=6", "learning_rate=1e-2",
        "training=lora", "lora.rank=4", "lora.alpha=4"]]) == 0
    assert (tpt / "lora" / "pytorch_lora_weights.safetensors").is_file()
    base_t, tpt_t = _safetensors(tiny_model_dir / "transformer"), _safetensors(tpt / "model" / "transformer")
    assert base_t.keys() == tpt_t.keys()  # LoRA merged: a plain transformer folder
    assert any(not torch.equal(base_t[k], tpt_t[k]) for k in base_t)
    _adapter_matches_merged(tiny_model_dir, tpt)

    p2ft = tmp_path / "p2ft"
    assert main(["fit", "ophora/training/configs/p2ft.yaml", "--cpu"] + [f"--set={s}" for s in common + [
        f"base_model={tpt / 'model'}", f"output_dir={p2ft}", "max_train_steps=1", "learning_rate=1e-9"]]) == 0
    p2ft_t = _safetensors(p2ft / "model" / "transformer")
    # One step at a vanishing learning rate: P2FT's weights are TPT's, not the original base model's.
    assert all(torch.allclose(tpt_t[k], p2ft_t[k], atol=1e-6) for k in tpt_t)
    assert not all(torch.allclose(base_t[k], p2ft_t[k], atol=1e-6) for k in base_t)
    meta = json.loads((p2ft / "model" / "ophora_training.json").read_text())
    assert meta["stage"] == "p2ft" and meta["base_model"] == str(tpt / "model")
    for part in ("vae", "text_encoder"):
        assert meta["frozen_check"][part]["identical"]


def _adapter_matches_merged(base_dir, run_dir):
    """The saved adapter, loaded into the base pipeline, gives the merged transformer's output."""
    from diffusers import CogVideoXPipeline, CogVideoXTransformer3DModel

    pipe = CogVideoXPipeline.from_pretrained(base_dir)
    pipe.load_lora_weights(str(run_dir / "lora"))
    merged = CogVideoXTransformer3DModel.from_pretrained(run_dir / "model", subfolder="transformer")
    generator = torch.Generator().manual_seed(0)
    inputs = {"hidden_states": torch.randn(1, 3, 4, 12, 18, generator=generator),
                  "encoder_hidden_states": torch.randn(1, 226, 32, generator=generator),
                  "timestep": torch.tensor([500]), "return_dict": False}
    with torch.no_grad():
        torch.testing.assert_close(pipe.transformer(**inputs)[0], merged(**inputs)[0], atol=1e-5, rtol=1e-4)


def test_cli_reports_config_errors_clearly(tmp_path, capsys):
    from ophora.training.cli import main

    assert main(["fit", "ophora/training/configs/tpt.yaml", "--set", "max_train_step=5"]) == 2
    assert "Did you mean 'max_train_steps'" in capsys.readouterr().err
    assert main(["fit", "ophora/training/configs/tpt.yaml", "--cpu", "--set", f"data=[{tmp_path}]"]) == 2
    err = capsys.readouterr().err
    assert "fp16 needs a CUDA GPU" in err or "no index.json" in err


def test_a_finished_run_is_not_overwritten_by_accident(tiny_model_dir, encoded_dir, tmp_path):
    config = config_from_dict(tiny_stage(tiny_model_dir, encoded_dir, tmp_path / "run", max_train_steps=1))
    fit(config, cpu=True)
    with pytest.raises(Exception, match="already holds checkpoints.*--resume latest"):
        fit(config, cpu=True)
