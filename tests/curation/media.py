"""Videos the curation tests make, with known facts: resolution, frame count, and hard cuts at known frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ophora.generation.video import read_clip, write_clip

# Distinct (R, G, B) base colours: a cut between two of them is a large HSV change for every detector.
PALETTE = [(200, 60, 40), (30, 160, 70), (40, 60, 200), (220, 200, 60), (150, 40, 170), (30, 190, 200)]


def textured_segment(frames: int, height: int, width: int, colour: tuple[int, int, int], seed: int) -> np.ndarray:
    """A slowly drifting textured shot: continuous motion but no cut inside it."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 60, size=(height, width + frames * 2, 1), dtype=np.int16)
    texture = np.repeat(texture, 3, axis=2)
    shots = []
    for i in range(frames):
        window = texture[:, i * 2:i * 2 + width] + np.array(colour, dtype=np.int16) - 30
        shots.append(np.clip(window, 0, 255).astype(np.uint8))
    return np.stack(shots)


def make_cut_video(path: Path, width: int = 720, height: int = 480, fps: int = 8, segment_frames: int = 12,
                   cuts: int = 3) -> Path:
    """``cuts + 1`` shots of ``segment_frames`` frames each: cuts at frames segment_frames * k."""
    segments = [textured_segment(segment_frames, height, width, PALETTE[k % len(PALETTE)], seed=k)
                for k in range(cuts + 1)]
    return write_clip(np.concatenate(segments), path, fps=fps)


def make_face_video(path: Path, image_rgb: np.ndarray, frames: int = 8, fps: int = 8) -> Path:
    """A 720x480 clip showing a photograph of a person (the privacy pre-screen must catch it)."""
    import cv2

    canvas = np.full((480, 720, 3), 90, dtype=np.uint8)
    scale = 440 / image_rgb.shape[0]
    photo = cv2.resize(image_rgb, (round(image_rgb.shape[1] * scale), 440))
    x = (720 - photo.shape[1]) // 2
    canvas[20:460, x:x + photo.shape[1]] = photo
    return write_clip(np.repeat(canvas[None], frames, axis=0), path, fps=fps)


def join_videos(paths: list[Path], out: Path, fps: int) -> Path:
    """Decode clips and join them end to end (the join is a real hard cut between real clips)."""
    frames = np.concatenate([read_clip(p)[0] for p in paths])
    return write_clip(frames, out, fps=fps)
