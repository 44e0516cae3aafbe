"""Test material built offline: a tiny random CLIP folder and small real MP4 clips with generator sidecars."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ophora.generation.video import write_clip


def save_tiny_clip(folder: Path, seed: int = 0) -> Path:
    from ophora.eval.tiny import save_random_clip

    return save_random_clip(folder, "tiny", seed)


def make_clips(folder: Path, specs: list[tuple[str, str | None, str | None]], frames: int = 17,
               size: tuple[int, int] = (64, 96), seed: int = 0, sidecar: bool = True) -> list[Path]:
    """Write small MP4 clips; each spec is (name, phase, prompt). Content differs by phase so sets differ."""
    rng = np.random.default_rng(seed)
    paths = []
    for index, (name, phase, prompt) in enumerate(specs):
        height, width = size
        base = rng.integers(0, 255, size=(1, height, width, 3)).astype(np.float32)
        ramp = np.linspace(0, 60, frames, dtype=np.float32)[:, None, None, None]
        video = np.clip(base + ramp + 30 * (sum(map(ord, phase or "")) % 3), 0, 255).astype(np.uint8)
        provenance = {"prompt": prompt, "phase": phase, "clip_id": name} if sidecar else None
        paths.append(write_clip(video, folder / f"{name}.mp4", fps=8, provenance=provenance))
    return paths
