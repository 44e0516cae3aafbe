"""A face corpus for measuring the curation's face screen on faces it was not tuned on.

Real surgical frames (the Ophora sample clips) are the backgrounds and the clean set; faces are pasted on them
at random places at 20%-60% of the frame height with random brightness, then JPEG-compressed as an encoder
would blur them. The tuning part (scikit-image's LFW faces 0-49) chose the settings; the held-out part (LFW
faces 50-99, scikit-image's astronaut photo and matplotlib's photo) gives the figures the dataset card prints.
Used by bench/bench_face_screen.py and tests/curation/test_privacy.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

HEIGHTS = (0.2, 0.3, 0.45, 0.6)
TUNING_SEED, HELD_OUT_SEED = 11, 2027


def clean_frames(shared: Path) -> list[np.ndarray]:
    """Every frame of the real clips as BGR, as shot, mirrored and upside down."""
    import cv2

    frames = []
    for path in sorted((shared / "samples/ophora-generated").glob("*.mp4")):
        capture = cv2.VideoCapture(str(path))
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames += [frame, frame[:, ::-1].copy(), frame[::-1].copy()]
    return frames


def face_images(part: str) -> list[np.ndarray]:
    """Grey or BGR pictures of faces, cropped to the head: the tuning or the held-out part."""
    import cv2
    import skimage.data
    from matplotlib import cbook

    lfw = (skimage.data.lfw_subset()[:100] * 255).astype(np.uint8)  # the first 100 are faces
    if part == "tuning":
        return list(lfw[:50])
    hopper = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    astronaut = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    return list(lfw[50:]) + [hopper[100:420, 120:400], astronaut[20:240, 150:330]]


def paste(background: np.ndarray, face: np.ndarray, height: float, rng: np.random.Generator) -> np.ndarray:
    import cv2

    frame = background.copy()
    h = int(height * frame.shape[0])
    w = min(frame.shape[1], int(face.shape[1] * h / face.shape[0]))
    face = cv2.resize(face, (w, h), interpolation=cv2.INTER_AREA if face.shape[0] > h else cv2.INTER_CUBIC)
    if face.ndim == 2:
        face = cv2.cvtColor(face, cv2.COLOR_GRAY2BGR)
    face = np.clip(face.astype(np.int16) + int(rng.integers(-40, 41)), 0, 255).astype(np.uint8)
    y, x = int(rng.integers(0, frame.shape[0] - h + 1)), int(rng.integers(0, frame.shape[1] - w + 1))
    frame[y:y + h, x:x + w] = face
    return cv2.imdecode(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 70])[1], cv2.IMREAD_COLOR)


def face_corpus(part: str, backgrounds: list[np.ndarray], seed: int) -> list[tuple[float, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(height, paste(backgrounds[int(rng.integers(len(backgrounds)))], face, height, rng))
            for face in face_images(part) for height in HEIGHTS]


def measure_face_screen(cfg: dict, clean: list[np.ndarray], faces: list[tuple[float, np.ndarray]]) -> dict:
    """Cost of the cheap pass, recall by face height and false alarms of the screen set up by ``cfg``."""
    import cv2

    from .privacy import FaceScreen, small_gray

    cv2.setNumThreads(1)
    screen = FaceScreen(cfg)
    smalls = [small_gray(frame, int(cfg["max_side"])) for frame in clean]
    began = time.perf_counter()
    fired = sum(bool(screen.faces(small)) for small in smalls)
    cost_ms = (time.perf_counter() - began) / len(smalls) * 1000
    confirmed = sum(screen.hit(frame) for frame in clean)
    found: dict[float, list[bool]] = {}
    for height, frame in faces:
        found.setdefault(height, []).append(screen.hit(frame))
    return {"cheap_pass_ms_per_frame": round(cost_ms, 2), "clean_frames": len(clean), "clean_fired": fired,
            "clean_confirmed": confirmed,
            "found": {f"{int(h * 100)}%": [int(sum(v)), len(v)] for h, v in sorted(found.items())}}
