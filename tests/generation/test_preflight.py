"""Every bad request is answered before any weight loads: through the real CLI, with exit code 2, a message
that says what to do, and without importing torch (`-X importtime` proves what the process imported)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ophora.generation.options import LoadOptions, ModelLoadError
from ophora.generation.preflight import (check_output_file, check_weight_files, preflight, read_model_spec,
                                         resolve_model_source)
from ophora.generation.request import GenerationInputError, GenerationRequest

REPO = Path(__file__).resolve().parents[2]


def _cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPHORA_CACHE": str(cwd / "cache"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "ophora", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _imported(stderr: str) -> set[str]:
    """Top-level modules named in `-X importtime` lines ("import time: self | cumulative | module")."""
    return {line.split("|")[-1].strip().split(".")[0] for line in stderr.splitlines() if line.startswith("import time:")}


def _message(stderr: str) -> str:
    return "\n".join(line for line in stderr.splitlines() if not line.startswith("import time:"))


@pytest.mark.parametrize("args, message", [
    (["--frames", "0"], "Frames must be 8N+1 and at most 49 (one of 9, 17, 25, 33, 41, 49); got 0"),
    (["--frames", "50"], "got 50 (leave it out for the model's native 9)"),
    (["--height", "0"], "Height must be a multiple of 16"),
    (["--width", "0"], "Width must be a multiple of 16"),
    (["--width", "100"], "got 100"),
    (["--steps", "0"], "Steps must be a whole number from 1 to 500"),
    (["--guidance", "0"], "Guidance must be between 1 and 30"),
    (["--guidance", "nan"], "Guidance must be between 1 and 30"),
    (["--fps", "0"], "fps must be a whole number from 1 to 60"),
    (["--seed", "-1"], "Seed must be a whole number"),
])
def test_bad_request_fails_before_loading(tiny_model_dir, tmp_path, args, message):
    done = _cli("generate", "Inject viscoelastic", "--model", str(tiny_model_dir), *args, "--out", "c.mp4",
                cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert message in _message(done.stderr)
    assert not {"torch", "diffusers", "gradio"} & _imported(done.stderr)  # nothing heavy was even imported
    assert not (tmp_path / "c.mp4").exists()


def test_unwritable_output_fails_before_loading(tiny_model_dir, tmp_path):
    (tmp_path / "a-file").write_text("x")
    for out, message in [("a-file/clip.mp4", "is a file, not a folder"), ("clip.avi", "--out must end in .mp4"),
                         (".", "--out must end in .mp4")]:
        done = _cli("generate", "x", "--model", str(tiny_model_dir), "--out", out, cwd=tmp_path)
        assert done.returncode == 2 and message in _message(done.stderr), done.stderr[-2000:]
        assert "torch" not in _imported(done.stderr)
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(GenerationInputError, match="is a folder"):
        check_output_file(tmp_path / "dir.mp4")


def test_batch_checks_csv_out_dir_and_request_before_loading(tiny_model_dir, tmp_path):
    csv_path = tmp_path / "prompts.csv"
    csv_path.write_bytes("clip id,caption prompt\na,Inject fluid\nb,Caf\u00e9 cannula\n".encode("cp1252"))
    done = _cli("generate", "--csv", str(csv_path), "--out-dir", "out", "--model", str(tiny_model_dir), cwd=tmp_path)
    assert done.returncode == 2 and f"{csv_path}, line 3: not UTF-8" in _message(done.stderr)
    csv_path.write_text("clip id,caption prompt\na,Inject fluid\n")
    (tmp_path / "blocked").write_text("x")
    for extra, message in [(["--out-dir", "blocked/out"], "is a file, not a folder"),
                           (["--out-dir", "out", "--frames", "0"], "got 0")]:
        done = _cli("generate", "--csv", str(csv_path), "--model", str(tiny_model_dir), *extra, cwd=tmp_path)
        assert done.returncode == 2 and message in _message(done.stderr), done.stderr[-2000:]
        assert "torch" not in _imported(done.stderr)


def test_missing_folder_and_damaged_weights_name_the_file(tiny_model_dir, tmp_path):
    done = _cli("generate", "x", "--model", "models/Ophora-missing", "--out", "c.mp4", cwd=tmp_path)
    assert done.returncode == 2 and "No such folder" in _message(done.stderr)  # owner/name shape: tried as a hub id, reported as no such folder first
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    weights = next((copy / "transformer").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-100])  # an interrupted download
    done = _cli("generate", "x", "--model", str(copy), "--out", "c.mp4", cwd=tmp_path)
    text = _message(done.stderr)
    assert done.returncode == 2 and str(weights) in text and "truncated" in text and "Re-download this file" in text
    assert "hf download" not in text and "torch" not in _imported(done.stderr)


def test_load_pipeline_names_a_damaged_file_without_hub_advice(tiny_model_dir, tmp_path):
    """A library caller that skips preflight gets the same message from the loader's error path."""
    from ophora.generation.loading import load_pipeline

    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    weights = next((copy / "vae").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:4096])
    with pytest.raises(ModelLoadError) as info:
        load_pipeline(model=str(copy))
    assert str(weights) in str(info.value) and "Re-download this file" in str(info.value)
    assert "hf download" not in str(info.value)


def test_spec_comes_from_config_files_and_native_fills_none(tiny_model_dir):
    options = LoadOptions(model=str(tiny_model_dir))
    spec = read_model_spec(resolve_model_source(options), options)
    assert (spec.native_frames, spec.native_height, spec.native_width) == (9, 96, 144)
    assert (spec.frame_multiple, spec.size_multiple) == (8, 16)
    _, _, request = preflight(options, GenerationRequest(prompt="x"))
    assert (request.num_frames, request.height, request.width) == (9, 96, 144)


def test_hub_id_not_cached_checks_what_it_can(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    options = LoadOptions(model="General-Medical-AI/Ophora")
    assert read_model_spec(resolve_model_source(options), options) is None
    with pytest.raises(GenerationInputError, match="got 0"):
        preflight(options, GenerationRequest(prompt="x", num_frames=0))
    preflight(options, GenerationRequest(prompt="x", num_frames=49))  # the size check runs again after loading
    offline = LoadOptions(model="General-Medical-AI/Ophora", local_files_only=True)
    with pytest.raises(ModelLoadError, match="hf download General-Medical-AI/Ophora"):  # before torch is imported
        preflight(offline, GenerationRequest(prompt="x"))


def test_every_damaged_file_in_one_message(tiny_model_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    for component in ("vae", "text_encoder"):
        for file in (copy / component).glob("*.safetensors"):
            file.unlink()
    with pytest.raises(ModelLoadError) as info:
        check_weight_files(copy)
    assert "vae: no weight file" in str(info.value) and "text_encoder: no weight file" in str(info.value)


@pytest.mark.parametrize("command", [
    ["-m", "ophora", "--help"], ["-m", "ophora", "generate", "--help"], ["launch.py", "--help"],
    ["launch.py", "--share", "--no-browser"],  # refused: needs --auth
    ["launch.py", "--mode", "kiosk", "--kiosk-steps", "800", "--no-browser"],  # refused before the model loads
    ["launch.py", "--port", "70000", "--no-browser"],
])
def test_help_and_refusals_import_no_torch_diffusers_or_gradio(command):
    """Quick start: help and argument errors never pay for torch, diffusers or gradio (timings: bench_startup.py)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-X", "importtime", *command], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode in (0, 2), done.stderr[-2000:]
    assert not {"torch", "diffusers", "gradio", "transformers"} & _imported(done.stderr)


def test_unusable_output_folder_is_refused_before_anything_loads(tiny_model_dir, tmp_path):
    """/proc accepts no folders even for root (permission bits say otherwise): the folder is really created."""
    done = _cli("generate", "x", "--model", str(tiny_model_dir), "--out", "/proc/nonexistent/x.mp4", cwd=tmp_path)
    assert done.returncode == 2 and "/proc/nonexistent cannot be created" in _message(done.stderr), done.stderr[-2000:]
    assert "torch" not in _imported(done.stderr)
    check_output_file(tmp_path / "new" / "sub" / "c.mp4")
    assert (tmp_path / "new" / "sub").is_dir()  # created now, not after the clip


def test_tiny_model_is_built_only_for_a_valid_request(tmp_path):
    done = _cli("generate", "x", "--model", "tiny", "--steps", "0", "--out", "c.mp4", cwd=tmp_path)
    assert done.returncode == 2 and "Steps must be a whole number" in _message(done.stderr), done.stderr[-2000:]
    assert not (tmp_path / "cache").exists()  # OPHORA_CACHE: no 20 s build for a request that cannot run
    assert "torch" not in _imported(done.stderr)


DAMAGES = [  # (file, new content, what the message must say about it)
    ("model_index.json", '{"_class_name": "CogVideoXPipeline",', "not valid JSON"),
    ("model_index.json", '{"_class_name": "CogVideoXPipeline"}', "lacks the component entries scheduler"),
    ("text_encoder/config.json", '{"d_model": 32}', "lacks model_type, vocab_size"),
    ("transformer/config.json", "", "empty"),
    ("vae/config.json", "[1, 2]", "not a JSON object"),
    ("scheduler/scheduler_config.json", '{"_class_name": "CogVideoXDDIMScheduler"}', "lacks num_train_timesteps"),
    ("tokenizer/tokenizer_config.json", "{", "not valid JSON"),
    ("tokenizer/tokenizer.json", "", "empty (0 bytes)"),
    ("tokenizer/tokenizer.json", "{not json", "not valid JSON"),
]


@pytest.fixture()
def model_copy(tiny_model_dir, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


@pytest.mark.parametrize("name, content, why", DAMAGES)
def test_every_config_and_tokenizer_file_is_checked_before_weights_load(model_copy, name, content, why):
    from ophora.generation.loading import load_pipeline

    (model_copy / name).write_text(content)
    for attempt in (lambda: preflight(LoadOptions(model=str(model_copy)), GenerationRequest(prompt="x")),
                    lambda: load_pipeline(model=str(model_copy))):  # a library caller that skips preflight
        with pytest.raises(ModelLoadError) as info:
            attempt()
        assert f"{model_copy / name}: {why}" in str(info.value) and "Re-download this file" in str(info.value)


def test_damaged_files_are_named_together_through_the_cli(model_copy, tmp_path):
    for name, content, _ in (DAMAGES[0], DAMAGES[2], DAMAGES[7]):
        (model_copy / name).write_text(content)
    (model_copy / "tokenizer" / "tokenizer.json").unlink()
    done = _cli("generate", "x", "--model", str(model_copy), "--out", "c.mp4", cwd=tmp_path)
    text = _message(done.stderr)
    assert done.returncode == 2, done.stderr[-2000:]
    for name in ("model_index.json", "text_encoder/config.json"):
        assert str(model_copy / name) in text
    assert f"{model_copy / 'tokenizer'}: no vocabulary" in text
    assert not {"torch", "diffusers", "transformers"} & _imported(done.stderr)


def test_long_prompt_warning_comes_before_generation(tiny_model_dir, tmp_path, capsys):
    from ophora.generation.cli import main

    long_prompt = " ".join(["Inject balanced salt solution under the capsule rim with a cannula."] * 40)
    assert main([long_prompt, "--model", str(tiny_model_dir), "--steps", "2", "--frames", "9", "--out",
                 str(tmp_path / "c.mp4")]) == 0
    err = capsys.readouterr().err
    warning = err.index("warning: The instruction is")
    assert "the T5 encoder reads only 226" in err[warning:] and warning < err.index("denoising")
    assert err.count("warning: The instruction is") == 1 and (tmp_path / "c.mp4").is_file()
