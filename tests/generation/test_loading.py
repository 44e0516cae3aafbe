"""Model loading: hardware plans, 8-bit through optimum-quanto, fine-tuned transformers, clear errors."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ophora.generation.engine import GenerationRequest, generate
from ophora.generation.loading import (Hardware, LoadOptions, LoadPlan, ModelLoadError, fingerprint_folder,
                                       load_pipeline, plan_loading, quantized_load_device)


@pytest.mark.parametrize("vram, quant, memory", [
    (80, "none", "none"), (40, "none", "none"), (24, "int8-bitsandbytes", "none"),
    (16, "int8-bitsandbytes", "model_offload"), (12, "int8-bitsandbytes", "model_offload"),
    (6, "int8-bitsandbytes", "model_offload"),  # sequential offload cannot move bitsandbytes layers
])
def test_plan_from_gpu_memory(vram, quant, memory):
    plan = plan_loading(LoadOptions(), Hardware(device="cuda:0", name="GPU", total_memory_gib=vram))
    assert (plan.precision, plan.quantization, plan.memory) == ("fp16", quant, memory)
    assert plan.reasons  # says why


def test_plan_on_cpu_and_explicit_choices():
    cpu = Hardware(device="cpu", name="CPU", total_memory_gib=None)
    assert (plan_loading(LoadOptions(), cpu).precision, plan_loading(LoadOptions(), cpu).quantization) == ("fp32", "none")
    assert plan_loading(LoadOptions(quantization="int8"), cpu).quantization == "int8-quanto"
    # quanto's int8 CPU kernel segfaults on bf16 activations (torch 2.13): the plan keeps fp32 on CPU.
    assert plan_loading(LoadOptions(quantization="int8", precision="bf16"), cpu).precision == "fp32"
    small = Hardware(device="cuda:0", name="GPU", total_memory_gib=6)
    plan = plan_loading(LoadOptions(quantization="none", precision="bf16"), small)
    assert (plan.precision, plan.quantization, plan.memory) == ("bf16", "none", "sequential_offload")
    with pytest.raises(ValueError, match="Unknown precision 'fp8'"):
        plan_loading(LoadOptions(precision="fp8"), cpu)


def test_int8_quanto_really_quantizes_linear_layers_and_generates(tiny_model_dir):
    from optimum.quanto import QLinear, qint8

    loaded = load_pipeline(model=str(tiny_model_dir), quantization="int8")
    assert loaded.plan.quantization == "int8-quanto"
    for component in (loaded.pipe.transformer, loaded.pipe.text_encoder):
        linears = [m for m in component.modules() if isinstance(m, torch.nn.Linear)]
        assert linears and all(isinstance(m, QLinear) for m in linears)
        assert all(m.weight_qtype == qint8 for m in linears)
        assert all(m.weight.dtype == torch.int8 for m in linears if hasattr(m.weight, "_data")) or all(
            m.weight._data.dtype == torch.int8 for m in linears)
    result = generate(loaded, GenerationRequest(prompt="Inject viscoelastic", seed=1, num_inference_steps=2))
    full = generate(load_pipeline(model=str(tiny_model_dir)),
                    GenerationRequest(prompt="Inject viscoelastic", seed=1, num_inference_steps=2))
    assert result.frames.shape == full.frames.shape
    assert result.provenance["model"]["quantization"] == "int8-quanto"
    # 8-bit weights change the numbers a little, not the clip: same seed stays close to full precision.
    assert np.abs(result.frames.astype(int) - full.frames.astype(int)).mean() < 20


def test_fine_tuned_transformer_replaces_the_base_one(tiny_model_dir, tmp_path):
    from diffusers import CogVideoXTransformer3DModel

    tuned = CogVideoXTransformer3DModel.from_pretrained(tiny_model_dir, subfolder="transformer")
    with torch.no_grad():
        for param in tuned.parameters():
            param.add_(0.05)
    tuned.save_pretrained(tmp_path / "tuned")
    base = load_pipeline(model=str(tiny_model_dir))
    loaded = load_pipeline(model=str(tiny_model_dir), transformer=str(tmp_path / "tuned"))
    for ours, theirs in zip(loaded.pipe.transformer.parameters(), tuned.parameters()):
        assert torch.equal(ours, theirs)
    assert loaded.model_fingerprint != base.model_fingerprint and "transformer:" in loaded.model_fingerprint
    assert loaded.describe()["transformer"] == str(tmp_path / "tuned")
    # A pipeline folder works as a transformer source too (its transformer/ subfolder).
    also = load_pipeline(model=str(tiny_model_dir), transformer=str(tiny_model_dir))
    assert torch.equal(next(also.pipe.transformer.parameters()), next(base.pipe.transformer.parameters()))


def test_missing_or_wrong_model_folders_say_what_to_do(tmp_path):
    with pytest.raises(ModelLoadError, match="No such folder") as info:
        load_pipeline(model=str(tmp_path / "nowhere"))
    assert "hf download" not in str(info.value)  # hub advice is for hub ids only
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        load_pipeline(model=str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match="holds no transformer"):
        load_pipeline(model="tiny", transformer=str(tmp_path / "empty"))


def test_hub_id_without_network_or_cache_explains_download(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelLoadError) as info:
        load_pipeline(model="General-Medical-AI/Ophora", local_files_only=True)
    text = str(info.value)
    assert "hf download General-Medical-AI/Ophora" in text and "--model tiny" in text


def test_folder_fingerprint_changes_with_weights(tiny_model_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert fingerprint_folder(copy) == fingerprint_folder(tiny_model_dir)
    weights = next((copy / "transformer").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert fingerprint_folder(copy) != fingerprint_folder(tiny_model_dir)
    assert fingerprint_folder(copy, full_hash_limit=0) != fingerprint_folder(tiny_model_dir, full_hash_limit=0)


def test_report_says_model_precision_device_and_tiny_notice(tiny_model_dir):
    report = load_pipeline(model=str(tiny_model_dir)).report
    assert "fp32" in report and "cpu" in report and "random, untrained weights" in report


def test_bitsandbytes_configs_cover_t5_and_transformer():
    """The CUDA 8-bit path (not runnable without a GPU): both components resolve to LLM.int8 configs."""
    from ophora.generation.loading import bitsandbytes_configs

    pipeline_quant, transformer_quant = bitsandbytes_configs(LoadOptions())
    assert transformer_quant is None
    for name, is_diffusers in (("text_encoder", False), ("transformer", True)):
        config = pipeline_quant._resolve_quant_config(is_diffusers=is_diffusers, module_name=name)
        assert config.load_in_8bit and config.quant_method == "bitsandbytes"
    assert pipeline_quant._resolve_quant_config(is_diffusers=True, module_name="vae") is None
    pipeline_quant, transformer_quant = bitsandbytes_configs(LoadOptions(transformer="tuned/"))
    assert transformer_quant.load_in_8bit
    assert pipeline_quant._resolve_quant_config(is_diffusers=True, module_name="transformer") is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_asking_for_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="CUDA is not available.*--device cpu"):
        load_pipeline(model="tiny", device="cuda")


def test_fingerprint_of_a_model_kept_under_a_cache_folder(tiny_model_dir, tmp_path):
    """~/.cache/... is where models live; only a .cache folder *inside* the model folder is skipped."""
    cached = tmp_path / ".cache" / "models" / "tiny"
    shutil.copytree(tiny_model_dir, cached)
    empty = hashlib.sha256().hexdigest()
    assert fingerprint_folder(cached) == fingerprint_folder(tiny_model_dir) != "sha256:" + empty
    (cached / ".cache").mkdir()
    (cached / ".cache" / "download.lock").write_text("hub metadata")
    assert fingerprint_folder(cached) == fingerprint_folder(tiny_model_dir)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ModelLoadError, match="no files to fingerprint"):
        fingerprint_folder(tmp_path / "nothing")


@pytest.mark.parametrize("device, quantization, expected", [
    ("cuda:1", "int8-bitsandbytes", 1), ("cuda:0", "int8-bitsandbytes", 0), ("cuda", "int8-bitsandbytes", 0),
    ("cuda:1", "none", None), ("cpu", "int8-quanto", None),
])
def test_bitsandbytes_weights_load_on_the_planned_gpu(device, quantization, expected):
    """diffusers/transformers put bitsandbytes modules on the *current* CUDA device; the loader makes the
    planned one current while loading, so --device cuda:1 keeps the whole pipeline on GPU 1."""
    plan = LoadPlan(device=device, precision="fp16", quantization=quantization, memory="none", vae_slicing=True,
                    vae_tiling=True)
    assert quantized_load_device(plan) == expected


def test_deterministic_flag_and_runtime_versions_reach_provenance(tiny_model_dir, tmp_path):
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-m", "ophora", "generate", "x", "--model", str(tiny_model_dir),
                           "--steps", "1", "--deterministic", "--out", str(tmp_path / "c.mp4")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    made = json.loads((tmp_path / "c.json").read_text())
    software = made["software"]
    assert software["torch"] == torch.__version__ and "cuda" in software and "cudnn" in software
    assert software["deterministic_algorithms"] is True and software["cudnn_benchmark"] is False
    assert made["model"]["deterministic"] is True
    assert made["seed_fixes"].startswith("initial noise")
