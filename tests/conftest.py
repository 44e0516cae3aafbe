"""Shared fixtures: the tiny random-weight pipeline (built once per session) and the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"

# Two cores in CI: keep torch from oversubscribing them when tests run subprocesses.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny CogVideoX pipeline folder in the real checkpoint's layout."""
    from ophora.generation.tiny import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-cogvideox")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`../shared` beside the checkout: real Ophora clips and reference prompts (read-only)."""
    if not SHARED_DIR.is_dir():
        pytest.fail(f"{SHARED_DIR} is missing: the tests read real clips and prompts from ../shared")
    return SHARED_DIR


@pytest.fixture(scope="session")
def sample_clips(shared_dir) -> list[Path]:
    clips = sorted((shared_dir / "samples" / "ophora-generated").glob("*.mp4"))
    assert clips, "no sample clips under ../shared/samples/ophora-generated"
    return clips
