"""bench/gpu_check.py: the dry run walks every row on CPU with the tiny model (and the full-size builder at depth
1), says what each row stands in for, reruns chosen rows into the same JSON, and exits 1 on a failed row."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.py"
sys.path.insert(0, str(REPO / "bench"))
import gpu_check  # noqa: E402


def _run(*args, timeout=900):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check") / "check.json"
    done = _run("--dry-run", "--out", str(out))
    return out, done


@pytest.mark.slow
def test_dry_run_measures_every_row(dry_run):
    out, done = dry_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert report["dry_run"] is True and "DRY RUN" in report["what"]
    assert set(rows) == set(gpu_check.ROWS) | set(gpu_check.DRY_RUN_ONLY)
    for name, row in rows.items():
        assert "error" not in row, (name, row)
        assert row["dry_run_stands_in_for"], name  # every dry-run row says which real path it stands in for
    assert rows["dependencies"]["problems"] == [] and rows["dependencies"]["packages_checked"] == 47
    for name in gpu_check.INFERENCE:
        row = rows[name]
        assert row["size"] == "9x96x144" and row["steps"] == 2 and row["clip_s_scaled_to_50_steps"] > row["clip_s"]
    assert rows["int8_bitsandbytes"]["plan"]["quantization"] == "int8-quanto"
    assert "optimum-quanto" in rows["int8_bitsandbytes"]["dry_run_stands_in_for"]
    assert rows["fp16_no_offload"]["steps"] == 8 and rows["fp16_no_offload"]["speed"] == "exact"
    for preset in gpu_check.PRESETS:
        row = rows[f"speed_{preset}"]
        assert row["config"]["hook"].endswith("Config") and row["speedup_vs_exact"] > 0
        assert 0 < row["ssim_vs_exact"] <= 1 and row["psnr_db_vs_exact"] > 0
    assert rows["speed_pab"]["psnr_db_vs_exact"] < float("inf")  # it did change the clip
    for mode in ("full", "lora"):
        row = rows[f"training_{mode}"]
        assert row["global_batch_size"] == 1 and row["seconds_per_step"] > 0 and len(row["losses"]) == 2
    assert "needs CUDA" in rows["torchao_int8_compile"]["skipped"]
    full = rows["build_full_size_reduced"]  # the full-size builder: CogVideoX-2b shapes, one layer each
    assert full["transformer"] == {"num_layers": 1, "num_attention_heads": 30, "attention_head_dim": 64,
                                   "sample_frames": 49}
    assert full["text_encoder"] == {"num_layers": 1, "d_model": 4096, "d_ff": 10240}


@pytest.mark.slow
def test_only_reruns_chosen_rows_into_the_same_json(dry_run):
    out, _ = dry_run
    before = json.loads(out.read_text())["rows"]
    done = _run("--dry-run", "--out", str(out), "--only", "speed_taylorseer")
    assert done.returncode == 0, done.stderr[-3000:]
    after = json.loads(out.read_text())["rows"]
    assert set(after) == set(before)
    assert after["training_lora"] == before["training_lora"]  # untouched
    assert after["speed_taylorseer"]["wall_s"] != before["speed_taylorseer"]["wall_s"]  # measured again
    assert after["fp16_no_offload"] == before["fp16_no_offload"]  # the saved exact clip was the reference


def test_a_failed_row_is_recorded_and_the_exit_code_says_so(tmp_path):
    work = tmp_path / "work"
    (work / "model").mkdir(parents=True)
    (work / "model" / "model_index.json").write_text("{ not json")  # a damaged model folder
    out = tmp_path / "check.json"
    done = _run("--dry-run", "--out", str(out), "--work", str(work), "--only", "model_offload_vae_tiling",
                timeout=600)
    assert done.returncode == 1, done.stdout[-2000:]
    row = json.loads(out.read_text())["rows"]["model_offload_vae_tiling"]
    assert row["error"] and row["stderr_tail"]
    assert "Rerun failed rows with --only model_offload_vae_tiling" in done.stdout


def test_unknown_row_is_refused_before_anything_runs(tmp_path):
    done = _run("--dry-run", "--out", str(tmp_path / "c.json"), "--only", "speed_turbo", timeout=60)
    assert done.returncode == 2 and "unknown row(s) speed_turbo" in done.stderr
    assert not (tmp_path / "c.json").exists()


def test_the_gpu_package_list_is_the_pins_and_what_they_need():
    """GPU_PACKAGES must name exactly what the GPU rows' packages need (the roots at their pins), so the wheel
    commands the check prints are complete."""
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            pins[requirement.name.lower()] = str(requirement.specifier).removeprefix("==")
    closure: dict[str, str] = {}
    stack = list(gpu_check.GPU_ROOTS)
    while stack:
        name = re.sub(r"[-_.]+", "-", stack.pop()).lower()
        if name in closure or name == "torch":
            continue
        closure[name] = md.version(name)
        for requirement in map(Requirement, md.requires(name) or []):
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                stack.append(requirement.name)
    assert set(gpu_check.GPU_PACKAGES) == set(closure)
    for name in gpu_check.GPU_ROOTS:
        assert gpu_check.GPU_PACKAGES[name] == pins[name], name


def test_wheel_commands_fetch_exact_versions_and_install_offline():
    fetch, install, path = gpu_check.wheel_commands({"peft": "0.21.2", "diffusers": "0.42.1"}, "3.11")
    assert fetch.startswith("pip download --only-binary=:all: --no-deps --python-version 3.11 --platform manylinux")
    assert fetch.endswith("-d wheels diffusers==0.42.1 peft==0.21.2")
    assert install.startswith("pip install --no-index --no-deps --target ophora-deps wheels/*.whl")
    assert "PYTHONPATH" in path
