"""What a picture itself gives away before blinding: the project's own SYNTHETIC label and uniform borders.

Why look at pixels: blinding re-encodes every clip identically, but it cannot remove what is drawn into the
frames. ``python -m ophora generate`` burns a visible label into the top-left corner by default (the sidecar
records ``"synthetic_mark": true``), and real recordings often carry black bars that no generated clip has.
Each clip is screened on a few evenly spaced frames (luma only):

- the label: its sidecar (or MP4 comment) says so, or the corner correlates with the label the project draws
  (:func:`ophora.generation.video.synthetic_mark_layout` gives its exact place and shape);
- borders: like ffmpeg's ``cropdetect``, lines from each edge inward that are dark and uniform in every
  sampled frame;
  blinding crops them away before fitting the study frame, so no clip set keeps bars another set lacks.

Limits (see docs/studies.md for measured rates): the label is found where the project drew it, at the clip's
size or rescaled by 0.5x-2x since; a label moved, cropped off or redrawn in another font is not recognised. Borders that
change within a clip (a bar that appears half-way) are only cropped as far as every sampled frame has them;
the import therefore measures the blinded copies again and refuses any that still have borders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLED_FRAMES = 8
RESCALES = (1.0, 0.5, 2 / 3, 0.75, 1.5, 2.0)  # a labelled clip may have been rescaled by these factors since
MARK_THRESHOLD = 0.5  # median correlation with the label; unmarked footage stays below 0.2 (bench/bench_screening.py)
LINE_STD = 6.0  # a border line varies by less than this (0-255 luma) along its length...
LINE_DRIFT = 6.0  # ...and stays within this of the outermost line's level...
DARK_LEVEL = 32  # ...and is dark, as cropdetect's limit (24 of 255, plus coding noise): bars, not a grey scene
MIN_BORDER = 3  # borders of 1-2 px are coding noise at a frame edge, not bars a rater sees
EDGE_MARGIN = 2  # crop this much beyond a border: the coded edge of a bar rings into the picture
MAX_BORDER_SHARE = 0.5  # a clip whose borders leave less than half the picture is not a picture


@dataclass(frozen=True)
class Borders:
    """Uniform lines at each edge, in source pixels (0: none)."""

    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0

    @property
    def any(self) -> bool:
        return max(self.top, self.bottom, self.left, self.right) > 0

    def crop_filter(self) -> str | None:
        """ffmpeg ``crop`` that removes these borders (``None``: there are none)."""
        if not self.any:
            return None
        return f"crop=iw-{self.left + self.right}:ih-{self.top + self.bottom}:{self.left}:{self.top}"

    def describe(self) -> str:
        sides = [f"{name} {px} px" for name, px in (("top", self.top), ("bottom", self.bottom),
                                                      ("left", self.left), ("right", self.right)) if px]
        return ", ".join(sides) or "none"


@dataclass(frozen=True)
class PictureScreen:
    """The screening of one clip: size, borders, how much its corner looks like the project's label."""

    path: Path
    width: int
    height: int
    borders: Borders
    mark_score: float
    mark_in_provenance: bool

    @property
    def marked(self) -> bool:
        return self.mark_in_provenance or self.mark_score >= MARK_THRESHOLD

    @property
    def picture_size(self) -> tuple[int, int]:
        """Width and height left once the borders are cropped away (what blinding scales)."""
        b = self.borders
        return self.width - b.left - b.right, self.height - b.top - b.bottom

    @property
    def blank(self) -> bool:
        """Borders leave less than half the picture: a blank or nearly black clip, not something to show."""
        w, h = self.picture_size
        return w < self.width * MAX_BORDER_SHARE or h < self.height * MAX_BORDER_SHARE


def sample_luma(path: str | Path, frames: int | None = None, count: int = SAMPLED_FRAMES) -> np.ndarray:
    """About ``count`` evenly spaced frames of a clip of ``frames`` frames (counted when not given), as
    luma (N, H, W) uint8."""
    import imageio_ffmpeg

    if not frames:
        frames = imageio_ffmpeg.count_frames_and_secs(str(path))[0]
    step = max(1, frames // count)
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="gray", bits_per_pixel=8,
                                        output_params=["-vf", f"select=not(mod(n\\,{step}))", "-fps_mode", "passthrough"])
    meta = next(reader)
    width, height = meta["size"]
    out = [np.frombuffer(buf, np.uint8).reshape(height, width) for buf in reader]
    if not out:
        raise ValueError(f"{path} has no decodable frames")
    return np.stack(out[:count + 1])


def _label_template(height: int, width: int, scale: float) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """The label's text as drawn on a frame ``height / scale`` pixels high, then resized by ``scale`` (a
    labelled clip that was rescaled later): its box in this frame and the text's pattern inside it."""
    import cv2

    from ophora.generation.video import draw_mark_text, synthetic_mark_layout

    drawn_h, drawn_w = round(height / scale), round(width / scale)
    layout = synthetic_mark_layout(drawn_h)
    x0, y0, x1, y1 = layout["box"]
    if x1 > drawn_w or y1 > drawn_h:
        return None
    canvas = np.zeros((y1, x1), np.uint8)
    draw_mark_text(canvas, layout, colour=255)
    box = tuple(round(v * scale) for v in (x0, y0, x1, y1))
    if box[2] - box[0] < 8 or box[3] - box[1] < 4:
        return None
    pattern = cv2.resize(canvas[y0:y1, x0:x1], (box[2] - box[0], box[3] - box[1]), interpolation=cv2.INTER_AREA)
    return box, pattern.astype(np.float64)


def mark_score(luma: np.ndarray) -> float:
    """How much the top-left corner looks like the project's label: the median over frames of the correlation
    with the label's text, drawn where the project draws it at this frame's size or at the size the clip had
    before a rescale (0.5x to 2x); the best of those (1: the label; near 0: anything else)."""
    height, width = luma.shape[1:]
    best = 0.0
    for scale in RESCALES:
        template = _label_template(height, width, scale)
        if template is None:
            continue
        (x0, y0, x1, y1), pattern = template
        pattern = pattern.ravel() - pattern.mean()
        scores = []
        for frame in luma:
            box = frame[y0:y1, x0:x1].astype(np.float64).ravel()
            box -= box.mean()
            norm = np.sqrt((box @ box) * (pattern @ pattern))
            scores.append(float(box @ pattern / norm) if norm > 0 else 0.0)
        best = max(best, float(np.median(scores)))
    return best


def _border_depth(lines: np.ndarray) -> int:
    """How many lines from the edge (axis 1 of (N, L, K)) are uniform in every frame."""
    level = lines.mean(axis=2)
    uniform = (lines.std(axis=2) < LINE_STD) & (np.abs(level - level[:, :1]) < LINE_DRIFT) & (level < DARK_LEVEL)
    depth = np.where(uniform.all(axis=1), uniform.shape[1], np.argmin(uniform, axis=1))
    return int(depth.min())


def measure_borders(luma: np.ndarray, min_border: int = MIN_BORDER) -> Borders:
    """Uniform borders present in every sampled frame (cropdetect-style), with a small safety margin;
    narrower than ``min_border`` pixels is coding noise at the edge."""
    frames = luma.astype(np.float32)
    depths = {"top": _border_depth(frames), "bottom": _border_depth(frames[:, ::-1]),
              "left": _border_depth(frames.transpose(0, 2, 1)),
              "right": _border_depth(frames.transpose(0, 2, 1)[:, ::-1])}
    limits = {"top": frames.shape[1], "bottom": frames.shape[1], "left": frames.shape[2], "right": frames.shape[2]}
    return Borders(**{side: min(depth + EDGE_MARGIN, limits[side]) if depth >= min_border else 0
                      for side, depth in depths.items()})


def provenance_says_marked(path: str | Path) -> bool:
    """The generator's own record (sidecar, else the MP4 comment) says the label was burned in."""
    import json

    from ophora.generation.video import read_provenance

    try:
        provenance = read_provenance(path) or {}
    except (json.JSONDecodeError, OSError, UnicodeDecodeError):
        return False  # the pixels are still screened
    return isinstance(provenance, dict) and provenance.get("synthetic_mark") is True


def screen_clip(path: str | Path, frames: int) -> PictureScreen:
    """Screen one readable clip of ``frames`` frames (``ValueError`` naming it if it cannot be decoded)."""
    path = Path(path)
    luma = sample_luma(path, frames)
    return PictureScreen(path=path, width=luma.shape[2], height=luma.shape[1], borders=measure_borders(luma),
                         mark_score=mark_score(luma), mark_in_provenance=provenance_says_marked(path))
