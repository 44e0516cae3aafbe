"""Fixtures for the curation tests: made videos with known facts and a real OpenAI-compatible server."""

from __future__ import annotations

from pathlib import Path

import pytest

from .media import join_videos, make_cut_video
from .openai_server import ChatServer


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("curation-media")


@pytest.fixture(scope="session")
def cut_video(media_dir) -> Path:
    """720x480, 8 fps, 48 frames, hard cuts at frames 12, 24 and 36 (1.5 s, 3.0 s, 4.5 s)."""
    return make_cut_video(media_dir / "three_cuts.mp4", cuts=3)


@pytest.fixture(scope="session")
def lowres_video(media_dir) -> Path:
    """640x360, no cut: fails the 720x480 resolution filter."""
    return make_cut_video(media_dir / "lowres.mp4", width=640, height=360, segment_frames=24, cuts=0)


@pytest.fixture(scope="session")
def joined_samples(media_dir, sample_clips) -> Path:
    """The two real Ophora clips joined end to end: one real hard cut at frame 49 (6.125 s)."""
    return join_videos(sample_clips, media_dir / "joined_samples.mp4", fps=8)


@pytest.fixture()
def chat_server():
    with ChatServer(slow_s=1.5) as server:
        yield server


@pytest.fixture(scope="session")
def grace_hopper_rgb():
    """A real photograph of a person, shipped inside matplotlib (a dependency): the face test image."""
    import cv2
    from matplotlib import cbook

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
