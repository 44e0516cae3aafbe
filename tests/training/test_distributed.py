"""Two real processes (torch.distributed, gloo on CPU) encode and train: the multi-GPU code path, on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _launch(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "ophora", "train", *args]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_two_processes_encode_shards_and_train(tiny_model_dir, manifest_csv, tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    _launch("encode", "--manifest", str(manifest_csv), "--model", str(tiny_model_dir), "--output", str(data),
            "--bucket", "9x96x144", "--shard-size", "1", "--device", "cpu")
    index = json.loads((data / "index.json").read_text())
    assert len(index["clips"]) == 2 and len({c["shard"] for c in index["clips"]}) == 2
    done = _launch("fit", "ophora/training/configs/tpt.yaml", "--cpu", f"--set=base_model={tiny_model_dir}",
                   f"--set=data=[{data}]", f"--set=output_dir={run}", "--set=max_train_steps=3",
                   "--set=mixed_precision=no", "--set=validation_steps=0", "--set=checkpointing_steps=3",
                   "--set=save_dtype=fp32")
    assert done.stdout.count("Stage tpt: 3 steps") == 1  # reported once, by the main process
    checkpoint = run / "checkpoints" / "checkpoint-3"
    assert json.loads((checkpoint / "ophora_state.json").read_text())["num_processes"] == 2
    assert {p.name for p in checkpoint.glob("noise_state_*.pt")} == {"noise_state_0.pt", "noise_state_1.pt"}
    assert (run / "model" / "transformer" / "config.json").is_file()
