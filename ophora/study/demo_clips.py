"""Procedurally drawn stand-in clips for the example study, so it runs on a fresh clone.

Why draw them: real surgical recordings and generated clips cannot be shipped with the project (patient data,
licences, size). These clips are drawn from code (an eye, a pupil with its red reflex, an instrument that
moves differently per phase), so anyone may redistribute them, and a study lead can try every step of a
study (create, check, import, rate, report) before pointing the study file at their own clips. They are
not surgical video and must never be used as study data.

``python -m ophora study demo-clips studies/example_clips`` (re)draws the clips shipped in that folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, FPS, FRAMES = 720, 480, 8, 49  # Ophora's output: 49 frames at 8 fps, 720x480
PHASES = ("hydrodissection", "phacoemulsification", "lens-implantation")
SETS = {"stand-in-real": 0, "stand-in-generated": 1}


def draw_frame(t: float, phase: int, variant: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB frame at time ``t`` in [0, 1]: an eye seen through the microscope and a moving instrument."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    cx, cy = WIDTH / 2 + 12 * np.sin(2 * np.pi * t + variant), HEIGHT / 2 + 6 * np.cos(2 * np.pi * t)
    r = np.hypot(x - cx, y - cy)
    frame = np.empty((HEIGHT, WIDTH, 3), np.float32)
    frame[..., 0], frame[..., 1], frame[..., 2] = 120 + 40 * (y / HEIGHT), 40 + 20 * (x / WIDTH), 35  # drape, skin
    sclera = r < 215
    frame[sclera] = (225, 205, 195)
    iris = r < 150
    frame[iris] = np.stack([110 + 30 * np.sin(r[iris] / 7), 70 + 10 * np.cos(r[iris] / 5), 40 + 0 * r[iris]], -1)
    pupil = r < 95 + 8 * np.sin(2 * np.pi * t * (1 + phase))
    frame[pupil] = np.stack([200 - 0.6 * r[pupil], 60 + 0.2 * r[pupil], 30 + 0 * r[pupil]], -1)  # red reflex
    # The instrument: a grey shaft entering from the side, moving as the phase would move it.
    angle = np.pi * (0.15 + 0.1 * variant) + [0.4 * np.sin(2 * np.pi * t), 0.9 * t, 0.25 * np.cos(np.pi * t)][phase]
    depth = [60 + 40 * t, 40 + 30 * np.sin(4 * np.pi * t) ** 2, 90 - 60 * t][phase]
    tip = np.array([cx + depth * np.cos(angle), cy + depth * np.sin(angle)])
    end = tip + 520 * np.array([np.cos(angle), np.sin(angle)])
    d = end - tip
    s = np.clip(((x - tip[0]) * d[0] + (y - tip[1]) * d[1]) / (d @ d), 0, 1)
    dist = np.hypot(x - tip[0] - s * d[0], y - tip[1] - s * d[1])
    shaft = dist < 7 + 4 * s
    frame[shaft] = np.stack([150 + 60 * (1 - dist[shaft] / 11)] * 3, -1)
    frame += rng.normal(0, 3, frame.shape).astype(np.float32)  # sensor noise
    return np.clip(frame, 0, 255).astype(np.uint8)


def render_clip(path: Path, phase: int, variant: int, seed: int) -> Path:
    """Draw and encode one clip (H.264, 49 frames at 8 fps, 720x480)."""
    import imageio_ffmpeg

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    writer = imageio_ffmpeg.write_frames(str(path), (WIDTH, HEIGHT), fps=FPS, codec="libx264", quality=None,
                                         pix_fmt_out="yuv420p", macro_block_size=16,
                                         output_params=["-crf", "30", "-preset", "medium", "-threads", "1",
                                                        "-fflags", "+bitexact", "-map_metadata", "-1"])
    writer.send(None)
    for i in range(FRAMES):
        writer.send(draw_frame(i / (FRAMES - 1), phase, variant, rng))
    writer.close()
    return path


def render_demo_clips(folder: str | Path, *, progress=None) -> list[Path]:
    """Draw the example study's clips into ``folder``: one sub-folder per clip set, one clip per phase, and
    for the stand-in generated set the generator-style JSON sidecars (model, prompt, phase, seed)."""
    from ophora.study.definition import phase_wording

    folder = Path(folder)
    made = []
    for set_name, variant in SETS.items():
        for phase_index, phase in enumerate(PHASES):
            seed = 1000 * variant + phase_index
            clip = render_clip(folder / set_name / f"{phase}.mp4", phase_index, variant, seed)
            if set_name == "stand-in-generated":
                clip.with_suffix(".json").write_text(json.dumps(
                    {"model": "demo-renderer", "phase": phase, "prompt": phase_wording(phase), "seed": seed},
                    indent=1) + "\n")
            made.append(clip)
            if progress is not None:
                progress(len(made), len(SETS) * len(PHASES))
    return made
