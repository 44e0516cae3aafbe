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
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
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
                   "--set=global_batch_size=2", "--set=train_batch_size=1",
                   "--set=save_dtype=fp32")
    assert done.stdout.count("Stage tpt: 3 steps") == 1  # reported once, by the main process
    checkpoint = run / "checkpoints" / "checkpoint-3"
    state = json.loads((checkpoint / "ophora_state.json").read_text())
    assert state["num_processes"] == 2 and state["batch"]["global_batch"] == 2
    assert {p.name for p in checkpoint.glob("random_states_*.pkl")} == {"random_states_0.pkl", "random_states_1.pkl"}
    assert (run / "model" / "transformer" / "config.json").is_file()


@pytest.mark.parametrize("name", ["ddp", "deepspeed_zero2", "deepspeed_zero3"])
def test_shipped_accelerate_configs_are_valid_for_accelerate_launch(name):
    """accelerate's own config class reads them (it refuses unknown keys); DeepSpeed keys are launch options."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, DistributedType

    from ophora.training.config import load_stage_config

    launch = load_config_from_file(str(REPO / f"ophora/training/configs/accelerate/{name}.yaml"))
    stage = load_stage_config(REPO / "ophora/training/configs/tpt.yaml")
    assert launch.mixed_precision == stage.mixed_precision == "fp16"
    assert stage.batch_plan(launch.num_processes).global_batch == 128  # the published global batch
    if name == "ddp":
        assert launch.distributed_type == DistributedType.MULTI_GPU and launch.num_processes == 8
        return
    assert launch.distributed_type == DistributedType.DEEPSPEED
    options = vars(launch_command_parser().parse_args(["train.py"]))
    assert set(launch.deepspeed_config) <= set(options), set(launch.deepspeed_config) - set(options)
    assert "gradient_accumulation_steps" not in launch.deepspeed_config  # derived from the stage's global batch
    assert launch.deepspeed_config["gradient_clipping"] == stage.max_grad_norm
    assert launch.num_processes == 8 * launch.num_machines == 16
    # accelerate's DeepSpeedPlugin builds the DeepSpeed config from these keys.
    keys = {k: v for k, v in launch.deepspeed_config.items() if k != "deepspeed_multinode_launcher"}
    plugin = DeepSpeedPlugin(**keys)
    zero = plugin.deepspeed_config["zero_optimization"]
    assert zero["stage"] == int(name[-1]) and plugin.deepspeed_config["gradient_accumulation_steps"] == "auto"
    if name == "deepspeed_zero3":  # as the original runs: whole 16-bit weights gathered on save
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True


def test_launch_accumulation_that_disagrees_with_the_stage_stops_the_run(tiny_model_dir, encoded_dir, tmp_path,
                                                                           monkeypatch):
    """`accelerate launch` exports the launch file's accumulation; accelerate would let it win silently."""
    from ophora.training.config import ConfigError, config_from_dict
    from ophora.training.trainer import fit
    from tests.training.conftest import tiny_stage

    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "4")
    config = config_from_dict(tiny_stage(tiny_model_dir, encoded_dir, tmp_path / "run", gradient_accumulation_steps=2))
    with pytest.raises(ConfigError, match="gradient_accumulation_steps 4 but the stage config needs 2"):
        fit(config, cpu=True)
    assert not (tmp_path / "run" / "checkpoints").exists()
