"""Pre-encoding: shapes, sharded safetensors + index, resume, and skipped clips."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open

from ophora.training.encode import EncodeOptions, encode_manifest
from tests.training.conftest import BUCKET, INSTRUCTIONS, write_test_clip


def test_encoded_folder_holds_posterior_and_t5_embeddings(encoded_dir, tiny_model_dir):
    from diffusers import CogVideoXPipeline

    index = json.loads((encoded_dir / "index.json").read_text())
    assert [c["instruction"] for c in index["clips"]] == INSTRUCTIONS
    assert {c["bucket"] for c in index["clips"]} == {BUCKET}
    assert len({c["shard"] for c in index["clips"]}) == 2  # shard_size=1
    pipe = CogVideoXPipeline.from_pretrained(tiny_model_dir, transformer=None)
    clip = index["clips"][1]
    with safe_open(str(encoded_dir / clip["shard"]), framework="pt") as handle:
        posterior = handle.get_tensor(f"{clip['key']}/latent_dist")
        embeds = handle.get_tensor(f"{clip['key']}/prompt_embeds")
    # 9 frames -> 3 latent frames, 96x144 -> 12x18, mean and logvar of 4 channels each.
    assert tuple(posterior.shape) == (8, 3, 12, 18)
    assert tuple(embeds.shape) == (226, pipe.text_encoder.config.d_model)
    expected, _ = pipe.encode_prompt(INSTRUCTIONS[1], do_classifier_free_guidance=False, device="cpu")
    torch.testing.assert_close(embeds, expected[0])


def test_encode_resumes_and_skips_short_clips(tmp_path, clip_dir, tiny_model_dir):
    write_test_clip(tmp_path / "short.mp4", 2, frames=5)
    manifest = tmp_path / "m.jsonl"
    pd.DataFrame({"video": [str(clip_dir / "clip0.mp4"), str(tmp_path / "short.mp4"), str(clip_dir / "clip1.mp4")],
                  "caption": ["a", "b", "c"]}).to_json(manifest, orient="records", lines=True)
    options = EncodeOptions(manifest=str(manifest), model=str(tiny_model_dir), output=str(tmp_path / "enc"),
                            buckets=(BUCKET,), shard_size=2, device="cpu")
    index = encode_manifest(options)
    assert [c["instruction"] for c in index["clips"]] == ["a", "c"]
    assert index["skipped"][0]["video"].endswith("short.mp4") and "5 frames" in index["skipped"][0]["reason"]
    shard = tmp_path / "enc" / "shards" / "shard-00000.safetensors"
    before = shard.stat().st_mtime_ns
    (tmp_path / "enc" / "index.json").unlink()  # as if the run was interrupted before the index
    again = encode_manifest(options)
    assert shard.stat().st_mtime_ns == before  # finished shards are not re-encoded
    assert again["clips"] == index["clips"]


def test_curation_manifest_segments_are_cut_from_longer_recordings(tmp_path, tiny_model_dir):
    """The curation parquet: clip_id, keep, instruction and start_s/end_s inside a longer video."""
    from ophora.training.frames import read_video_frames

    recording = write_test_clip(tmp_path / "recording.mp4", 1, frames=32)  # 4 s at 8 fps
    whole = read_video_frames(recording)
    segment = read_video_frames(recording, 1.0, 2.5)
    assert len(whole) == 32 and len(segment) == 12
    assert np.abs(segment.astype(int) - whole[8:20].astype(int)).mean() < 2  # the same frames, decoded again

    manifest = tmp_path / "curated.parquet"
    pd.DataFrame({"clip_id": ["a1", "b2", "c3"], "video": [str(recording)] * 3, "start_s": [0.0, 1.0, None],
                  "end_s": [0.5, 2.5, None], "decision": ["drop", "keep", "keep"], "keep": [False, True, True],
                  "caption": ["x", "y", "z"], "instruction": [None, "Polish the capsule.", "Implant the lens."],
                  }).to_parquet(manifest)
    index = encode_manifest(EncodeOptions(manifest=str(manifest), model=str(tiny_model_dir),
                                          output=str(tmp_path / "enc"), buckets=(BUCKET,), device="cpu"))
    assert [(c["key"], c["instruction"], c["start_s"]) for c in index["clips"]] == [
        ("b2", "Polish the capsule.", 1.0), ("c3", "Implant the lens.", None)]


def test_a_failed_encode_never_blocks_its_corrected_rerun(tmp_path, manifest_csv, tiny_model_dir):
    """encode.json is written only once the encoders loaded: a mistyped --model leaves nothing that refuses the
    corrected command."""
    import pytest

    from ophora.training.encode import EncodeError

    output = tmp_path / "enc"
    wrong = EncodeOptions(manifest=str(manifest_csv), model=str(tmp_path / "no-such-model"), output=str(output),
                          buckets=(BUCKET,), device="cpu", local_files_only=True)
    with pytest.raises(EncodeError, match="Could not load"):
        encode_manifest(wrong)
    assert not (output / "encode.json").exists()
    index = encode_manifest(EncodeOptions(manifest=str(manifest_csv), model=str(tiny_model_dir), output=str(output),
                                          buckets=(BUCKET,), device="cpu"))
    assert len(index["clips"]) == len(INSTRUCTIONS)
    assert json.loads((output / "encode.json").read_text())["model"] == str(tiny_model_dir)


def test_fit_offline_with_a_hub_base_model_says_how_to_use_a_local_folder_at_once(tmp_path, tiny_model_dir,
                                                                                   encoded_dir, capsys):
    import time

    import yaml

    from ophora.training.cli import main
    from tests.training.conftest import tiny_stage

    config = tmp_path / "stage.yaml"
    config.write_text(yaml.safe_dump(tiny_stage(tiny_model_dir, encoded_dir, tmp_path / "out",
                                                base_model="THUDM/CogVideoX-2b")))
    start = time.perf_counter()
    assert main(["fit", str(config), "--local-files-only"]) == 2
    assert time.perf_counter() - start < 10
    message = capsys.readouterr().err
    assert "'THUDM/CogVideoX-2b' is not available offline" in message
    assert "hf download THUDM/CogVideoX-2b --local-dir models/CogVideoX-2b" in message
    assert "base_model: models/CogVideoX-2b" in message and "scheduler_config" not in message
    assert not (tmp_path / "out").exists()  # nothing started
