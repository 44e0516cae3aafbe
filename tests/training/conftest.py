"""Tiny real videos, manifests and an encoded data set for the training tests (built once per session)."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pandas as pd
import pytest

INSTRUCTIONS = ["Remove cortex with the irrigation aspiration probe while protecting the capsule.",
                "Inject viscoelastic into the anterior chamber with a cannula."]
BUCKET = "9x96x144"


def write_test_clip(path: Path, variant: int, frames: int = 12, height: int = 112, width: int = 160) -> Path:
    """A real H.264 clip: moving colour gradients that differ per ``variant`` (4:3, so bucketing crops it)."""
    y, x = np.mgrid[0:height, 0:width]
    images = [np.stack([(x * 2 + t * 10 * (variant + 1)) % 256, (y * 2 + t * 3 * variant) % 256,
                        np.full_like(x, 100 + variant * 80)], -1).astype(np.uint8) for t in range(frames)]
    imageio.mimwrite(path, images, fps=8, macro_block_size=16)
    return path


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    for i in range(len(INSTRUCTIONS)):
        write_test_clip(folder / f"clip{i}.mp4", i)
    return folder


@pytest.fixture(scope="session")
def manifest_csv(clip_dir) -> Path:
    """Relative video paths, plus a dropped row that must not be encoded."""
    path = clip_dir / "manifest.csv"
    pd.DataFrame({"video": ["clip0.mp4", "clip1.mp4", "clip0.mp4"],
                  "instruction": INSTRUCTIONS + ["dropped row"], "keep": [True, True, False]}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def encoded_dir(tmp_path_factory, manifest_csv, tiny_model_dir) -> Path:
    from ophora.training.encode import EncodeOptions, encode_manifest

    output = tmp_path_factory.mktemp("encoded") / "data"
    encode_manifest(EncodeOptions(manifest=str(manifest_csv), model=str(tiny_model_dir), output=str(output),
                                  buckets=(BUCKET,), shard_size=1, storage_dtype="float32", device="cpu"))
    return output


def tiny_stage(tiny_model_dir, encoded_dir, output_dir, **overrides) -> dict:
    """A stage config for the tiny model on CPU: small, fast, deterministic."""
    values = {"stage": "tpt", "base_model": str(tiny_model_dir), "data": [str(encoded_dir)], "output_dir": str(output_dir),
                  "max_train_steps": 8, "global_batch_size": None, "train_batch_size": 2, "learning_rate": 3e-3, "lr_scheduler": "constant",
                  "lr_warmup_steps": 0, "mixed_precision": "no", "checkpointing_steps": 100, "validation_steps": 0,
                  "save_dtype": "fp32", "seed": 7}
    values.update(overrides)
    return values
