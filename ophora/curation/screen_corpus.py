"""A corpus of surgical frames with burned-in identifying text, for measuring the text screen's cascade.

Why made here and not tuned to: the strings, fonts, sizes, colours, bands and places are drawn at random
from broad ranges (seeded, so a figure can be re-measured) over real surgical frames. The cascade's
thresholds were set on seeds 7 and 3 only; its figures are measured on other seeds (2026 and 99 in
bench/bench_text_screen.py, 11 in tests/curation/test_privacy.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PHI_LINES = ("NGOZI OKAFOR 03/04/1950", "PATIENT: JOHN DOE ID 48213", "Dr Mary Smith", "MRN 4471-B",
             "14 Mar 2021 09:41", "Mrs Nunez bed 4", "DOB 1950-04-03", "St Mary's Eye Unit", "ID KX-4471",
             "Okafor N. 72y F", "Moorfields OR 3", "Surgeon: A. Patel")


@dataclass
class BurnedIn:
    """One corpus frame and how its line was drawn (to say which kinds of text a screen misses)."""

    frame: np.ndarray
    text: str
    letter_px: int  # height of a capital letter, full-resolution pixels
    light: bool  # light letters (else dark)
    band: bool  # on a band of the opposite shade (else straight on the tissue)


def burned_in(frames: list[np.ndarray], count: int, seed: int = 0) -> list[BurnedIn]:
    """``count`` real frames, each with one line of identifying text burned in at random, and how."""
    import cv2

    rng = np.random.default_rng(seed)
    fonts = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_COMPLEX)
    made = []
    for k in range(count):
        frame = frames[int(rng.integers(len(frames)))].copy()
        text = PHI_LINES[int(rng.integers(len(PHI_LINES)))]
        font = fonts[int(rng.integers(len(fonts)))]
        scale = float(rng.uniform(0.6, 1.3)) * (1.6 if font == cv2.FONT_HERSHEY_PLAIN else 1.0)
        thickness = int(rng.integers(1, 3))
        (width, height), base = cv2.getTextSize(text, font, scale, thickness)
        height_px, width_px = frame.shape[:2]
        x = int(rng.integers(5, max(6, width_px - width - 5)))
        y = int(rng.integers(height + 5, height_px - base - 5))
        light = bool(rng.integers(2))
        band = bool(rng.random() < 0.5)
        if band:  # a band behind the text, as recorders burn it in
            shade = (0, 0, 0) if light else (235, 235, 235)
            cv2.rectangle(frame, (x - 6, y - height - 6), (x + width + 6, y + base + 4), shade, -1)
        colour = (255, 255, int(rng.integers(0, 256))) if light else (int(rng.integers(0, 40)),) * 3
        cv2.putText(frame, text, (x, y), font, scale, colour, thickness, cv2.LINE_AA)
        made.append(BurnedIn(frame, text, height, light, band))
    return made


def burned_in_frames(frames: list[np.ndarray], count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` RGB frames, each a real frame with one line of identifying text burned in at random."""
    return [made.frame for made in burned_in(frames, count, seed)]
