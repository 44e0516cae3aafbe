"""bench/gpu_check.py: the dry run walks the whole GPU check on CPU with the tiny model and writes every row;
a used-up budget is recorded as an error row, never a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.py"


def _run(*args, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_dry_run_measures_every_row(tmp_path):
    out = tmp_path / "check.json"
    done = _run("--dry-run", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["environment"]["dry_run"] is True and "DRY RUN" in report["what"]
    assert set(report["inference"]) == {"fp16_no_offload", "int8_bitsandbytes", "int8_model_offload",
                                        "model_offload_vae_tiling"}
    for name, row in report["inference"].items():
        assert "error" not in row, (name, row)
        assert row["size"] == "9x96x144" and row["steps"] == 2 and row["median_step_s"] > 0
        assert row["clip_s_scaled_to_50_steps"] > row["clip_s"]
    # On CPU int8 is optimum-quanto (bitsandbytes needs CUDA): a small, finite difference from full precision.
    assert report["inference"]["int8_bitsandbytes"]["plan"]["quantization"] == "int8-quanto"
    assert 20 < report["int8_vs_fp16_psnr_db"] < float("inf")
    for mode in ("full", "lora"):
        row = report["training"][mode]
        assert "error" not in row, (mode, row)
        assert row["seconds_per_step"] > 0 and len(row["losses"]) == 2


def test_a_used_up_budget_is_an_error_row_not_a_crash(tmp_path):
    out = tmp_path / "check.json"
    done = _run("--dry-run", "--out", str(out), "--budget-s", "3", timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["build"]["error"].startswith("skipped: the time budget")
    assert report["inference"] == {} and report["training"] == {}
