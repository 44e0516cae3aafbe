"""Bad input stops early with a clear message: manifests, configs, missing shards, buckets."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ophora.training.config import BatchPlan, ConfigError, load_stage_config
from ophora.training.dataset import BucketBatchSampler, DataError, EncodedClips
from ophora.training.frames import Bucket, choose_bucket, sample_frame_indices
from ophora.training.manifest import ManifestError, read_manifest


def test_manifest_formats_keep_filter_and_relative_paths(clip_dir, manifest_csv):
    records = read_manifest(manifest_csv)
    assert [r.video.name for r in records] == ["clip0.mp4", "clip1.mp4"]  # the keep=False row is gone
    assert all(r.video.is_absolute() or r.video.exists() for r in records)
    frame = pd.read_csv(manifest_csv).rename(columns={"instruction": "caption"})
    frame.to_parquet(clip_dir / "m.parquet")
    frame.to_json(clip_dir / "m.jsonl", orient="records", lines=True)
    for name in ("m.parquet", "m.jsonl"):
        assert [r.instruction for r in read_manifest(clip_dir / name)] == [r.instruction for r in records]


def test_manifest_without_instructions_or_files_is_refused(clip_dir):
    pd.DataFrame({"video": ["clip0.mp4"], "duration": [1.5]}).to_csv(clip_dir / "noinstr.csv", index=False)
    with pytest.raises(ManifestError, match="no 'instruction'"):
        read_manifest(clip_dir / "noinstr.csv")
    pd.DataFrame({"video": ["nope.mp4"], "instruction": ["x"]}).to_csv(clip_dir / "missing.csv", index=False)
    with pytest.raises(ManifestError, match="do not exist"):
        read_manifest(clip_dir / "missing.csv")
    pd.DataFrame({"video": ["clip0.mp4"], "instruction": [" "]}).to_csv(clip_dir / "empty.csv", index=False)
    with pytest.raises(ManifestError, match="empty instruction"):
        read_manifest(clip_dir / "empty.csv")


def test_config_typo_names_the_key_and_suggests(tmp_path):
    path = tmp_path / "stage.yaml"
    path.write_text("stage: p2ft\ndata: [d]\nlearning_rte: 5.0e-5\n")
    with pytest.raises(ConfigError, match="'learning_rte'.*Did you mean 'learning_rate'"):
        load_stage_config(path)
    path.write_text("stage: p2ft\ndata: [d]\nlora: {rnak: 4}\n")
    with pytest.raises(ConfigError, match="'rnak'"):
        load_stage_config(path)
    path.write_text("stage: p2ft\ndata: [d]\ntraining: qlora\nmixed_precision: fp8\nvalidation_prompts: []\n")
    with pytest.raises(ConfigError, match="training.*qlora(.|\n)*mixed_precision"):
        load_stage_config(path)


@pytest.mark.parametrize("name,lr,steps", [("tpt", 1e-4, 65_000), ("p2ft", 5e-5, 4_500)])
def test_shipped_configs_hold_the_published_recipe(name, lr, steps):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_stage_config(f"ophora/training/configs/{name}.yaml")
    assert (config.stage, config.learning_rate, config.max_train_steps) == (name, lr, steps)
    assert (config.adam_beta1, config.adam_beta2, config.adam_weight_decay, config.max_grad_norm) == (0.9, 0.95,
                                                                                                      1e-3, 1.0)
    assert (config.lr_scheduler, config.lr_warmup_steps) == ("cosine_with_restarts", 800)
    assert (config.mixed_precision, config.gradient_checkpointing, config.training) == ("fp16", True, "full")
    # Global batch 128 = 8 per process x 16 GPUs (ZeRO-3, as published) or x 8 GPUs x 2 accumulation (DDP).
    assert (config.global_batch_size, config.train_batch_size, config.gradient_accumulation_steps) == (128, 8, None)
    zero3 = load_config_from_file("ophora/training/configs/accelerate/deepspeed_zero3.yaml")
    assert config.batch_plan(zero3.num_processes) == BatchPlan(8, 16, 1, 128)
    ddp = load_config_from_file("ophora/training/configs/accelerate/ddp.yaml")
    assert config.batch_plan(ddp.num_processes) == BatchPlan(8, 8, 2, 128)
    assert config.batch_plan(1) == BatchPlan(8, 1, 16, 128)


def test_global_batch_that_cannot_be_split_is_refused_with_the_counts_that_work():
    config = load_stage_config("ophora/training/configs/tpt.yaml")
    with pytest.raises(ConfigError, match=r"cannot be split into 3 processes .* in \[1, 2, 4, 8, 16\]"):
        config.batch_plan(3)
    assert load_stage_config("ophora/training/configs/tpt.yaml", ["train_batch_size=1"]).batch_plan(2) == \
        BatchPlan(1, 2, 64, 128)
    with pytest.raises(ConfigError, match="gradient_accumulation_steps 4 disagrees with global_batch_size 128"):
        load_stage_config("ophora/training/configs/tpt.yaml", ["gradient_accumulation_steps=4"]).batch_plan(8)
    with pytest.raises(ConfigError, match="global_batch_size 128 is not a multiple of train_batch_size 3"):
        load_stage_config("ophora/training/configs/tpt.yaml", ["train_batch_size=3"])
    explicit = load_stage_config("ophora/training/configs/tpt.yaml", ["global_batch_size=null",
                                                                      "gradient_accumulation_steps=3"])
    assert explicit.batch_plan(2) == BatchPlan(8, 2, 3, 48)


def test_p2ft_starts_from_tpt_output_and_overrides_apply():
    tpt = load_stage_config("ophora/training/configs/tpt.yaml")
    p2ft = load_stage_config("ophora/training/configs/p2ft.yaml", ["max_train_steps=10", "lora.rank=16"])
    assert (p2ft.max_train_steps, p2ft.lora.rank) == (10, 16)
    assert p2ft.base_model == tpt.output_dir + "/model"  # P2FT starts from TPT's output
    lora = load_stage_config("ophora/training/configs/lora_workstation.yaml")
    assert lora.training == "lora" and lora.batch_plan(1) == BatchPlan(1, 1, 8, 8)  # one workstation GPU


def test_yaml_exponents_without_dot_are_numbers_and_wrong_types_are_named(tmp_path):
    """PyYAML reads `1e-3` as a string; it must not reach torch's AdamW as one."""
    path = tmp_path / "stage.yaml"
    path.write_text("data: [d]\nadam_weight_decay: 1e-3\nadam_epsilon: 1e-8\nvalidation_steps: 0\n")
    config = load_stage_config(path, ["learning_rate=2e-5", "max_grad_norm=1"])
    assert (config.adam_weight_decay, config.adam_epsilon, config.learning_rate, config.max_grad_norm) == (
        1e-3, 1e-8, 2e-5, 1.0)
    assert isinstance(config.max_grad_norm, float)
    with pytest.raises(ConfigError, match="max_train_steps: expected a whole number(.|\n)*"
                                          "gradient_checkpointing: expected true or false"):
        load_stage_config(path, ["max_train_steps=1.5", "gradient_checkpointing=maybe"])


def test_missing_shard_and_unfinished_encode_are_reported(encoded_dir, tmp_path):
    with pytest.raises(DataError, match="no index.json"):
        EncodedClips([tmp_path])
    broken = tmp_path / "broken"
    broken.mkdir()
    index = json.loads((encoded_dir / "index.json").read_text())
    (broken / "index.json").write_text(json.dumps(index))  # the index without its shard files
    with pytest.raises(DataError, match="2 shard file\\(s\\) .* missing"):
        EncodedClips([broken])


def test_bucket_choice_and_frame_sampling():
    buckets = [Bucket.parse("49x480x720"), Bucket.parse("17x480x720"), Bucket.parse("49x720x480")]
    assert choose_bucket(buckets, 100, 1080, 1920) == buckets[0]
    assert choose_bucket(buckets, 30, 480, 720) == buckets[1]  # too short for 49 frames
    assert choose_bucket(buckets, 60, 1280, 720) == buckets[2]  # portrait
    assert choose_bucket(buckets, 10, 480, 720) is None
    assert sample_frame_indices(150, 49).tolist()[:3] == [0, 3, 6]
    with pytest.raises(ValueError, match="8N\\+1"):
        Bucket.parse("48x480x720").check()


def test_batch_sampler_positions_are_resumable_and_sharded():
    buckets = {"a": [0, 1, 2, 3, 4], "b": [5, 6, 7]}
    whole = BucketBatchSampler(buckets, batch_size=2, seed=3)
    batches = list(whole)
    assert all({i < 5 for i in b} in ({True}, {False}) for b in batches)  # one bucket per batch
    whole.set_position(0, 2)
    assert list(whole) == batches[2:]
    ranks = [list(BucketBatchSampler(buckets, batch_size=1, seed=3, num_replicas=2, rank=r)) for r in (0, 1)]
    assert [a + b for a, b in zip(*ranks)] == batches


def test_cpu_only_options_stop_before_loading_anything(tmp_path, clip_dir, capsys):
    from ophora.training.cli import main
    from ophora.training.config import config_from_dict
    from ophora.training.trainer import fit

    config = config_from_dict({"data": [str(tmp_path)], "use_8bit_adam": True, "mixed_precision": "no",
                               "validation_steps": 0})
    with pytest.raises(ConfigError, match="use_8bit_adam needs a CUDA GPU"):
        fit(config, cpu=True)
    pd.DataFrame({"video": ["clip0.mp4"]}).to_csv(clip_dir / "novideo_text.csv", index=False)
    assert main(["encode", "--manifest", str(clip_dir / "novideo_text.csv"), "--model", "unused",
                 "--output", str(tmp_path / "out")]) == 2
    assert "no 'instruction'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_p2ft_before_tpt_finished_names_the_missing_base(encoded_dir, tmp_path, capsys):
    from ophora.training.cli import main

    common = ["--cpu", "--set=mixed_precision=no", f"--set=data=[{encoded_dir}]", f"--set=output_dir={tmp_path / 'r'}",
              "--set=validation_steps=0"]
    assert main(["fit", "ophora/training/configs/p2ft.yaml", *common]) == 2
    assert "outputs/ophora-tpt/model does not exist" in capsys.readouterr().err
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model_index.json").write_text("{}")
    assert main(["fit", "ophora/training/configs/p2ft.yaml", *common, f"--set=base_model={tmp_path / 'half'}"]) == 2
    assert "no transformer, scheduler, vae" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_data_encoded_with_another_vae_is_refused_before_training(tiny_model_dir, tmp_path):
    import torch

    from ophora.training.config import config_from_dict
    from ophora.training.encode import save_shard, write_index
    from ophora.training.trainer import fit

    data = tmp_path / "other-vae"
    (data / "shards").mkdir(parents=True)
    save_shard(data / "shards" / "shard-00000.safetensors",
               {"a/latent_dist": torch.zeros(32, 3, 12, 18), "a/prompt_embeds": torch.zeros(226, 32)},
               [{"key": "a", "bucket": "9x96x144", "instruction": "x"}], [])
    write_index(data, num_shards=1, plan={})
    config = config_from_dict({"data": [str(data)], "base_model": str(tiny_model_dir), "mixed_precision": "no",
                               "validation_steps": 0, "output_dir": str(tmp_path / "run")})
    with pytest.raises(DataError, match="16 channels but the transformer takes 4.*another model's VAE"):
        fit(config, cpu=True)
