"""Write and read clips: browser-playable MP4 (H.264, yuv420p) with provenance in a sidecar and the container.

Why both: the JSON sidecar is easy for tools to read, while the MP4 ``comment`` tag keeps the provenance with
the file when it is copied alone. Files are written under a temporary name and renamed, so a crash or a full
disk never leaves a half-written clip that looks finished.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np

SYNTHETIC_MARK = "SYNTHETIC"


def sidecar_path(video_path: str | Path) -> Path:
    return Path(video_path).with_suffix(".json")


def synthetic_mark_layout(height: int, text: str = SYNTHETIC_MARK) -> dict:
    """Where and how large the visible label is drawn on frames ``height`` pixels high: the box it darkens
    (``x0, y0, x1, y1``), the text origin, font scale and stroke. One place, so the study import can find
    the label it knows in the pixels (:mod:`ophora.study.screening`)."""
    import cv2

    scale = max(0.3, height / 480 * 0.7)
    thickness = max(1, round(scale * 2))
    (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(2, round(6 * scale))
    x0, y0 = pad, pad
    return {"box": (x0, y0, x0 + text_w + 2 * pad, y0 + text_h + baseline + 2 * pad),
            "origin": (x0 + pad, y0 + pad + text_h), "scale": scale, "thickness": thickness}


def draw_mark_text(frame: np.ndarray, layout: dict, text: str = SYNTHETIC_MARK, colour=(255, 255, 255)) -> None:
    """Draw the label's text in place on one frame (H, W, C uint8), as :func:`add_synthetic_mark` does."""
    import cv2

    cv2.putText(frame, text, layout["origin"], cv2.FONT_HERSHEY_SIMPLEX, layout["scale"], colour,
                layout["thickness"], cv2.LINE_AA)


def add_synthetic_mark(frames: np.ndarray, text: str = SYNTHETIC_MARK) -> np.ndarray:
    """Return a copy of ``frames`` (F, H, W, 3 uint8) with a visible label in the top-left corner."""
    marked = np.ascontiguousarray(frames.copy())
    layout = synthetic_mark_layout(frames.shape[1], text)
    x0, y0, x1, y1 = layout["box"]
    for frame in marked:
        box = frame[y0:y1, x0:x1].astype(np.float32)
        frame[y0:y1, x0:x1] = (box * 0.35).astype(np.uint8)  # darken so the label reads on any tissue colour
        draw_mark_text(frame, layout, text)
    return marked


def write_clip(
    frames: np.ndarray,
    path: str | Path,
    fps: int,
    provenance: dict | None = None,
    synthetic_mark: bool = False,
    quality: float = 8.0,
) -> Path:
    """Encode ``frames`` (F, H, W, 3 uint8) to ``path`` and write ``<path>.json`` with ``provenance``."""
    path = Path(path)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be a uint8 array of shape (F, H, W, 3); got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"H.264 yuv420p needs even width and height; got {frames.shape[2]}x{frames.shape[1]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if synthetic_mark:
        frames = add_synthetic_mark(frames)
    output_params = ["-movflags", "+faststart"]
    if provenance is not None:
        # Recorded here, where it is decided: metrics must know whether a visible label sits in the frames.
        provenance = {**provenance, "synthetic_mark": bool(synthetic_mark)}
        output_params += ["-metadata", f"comment={json.dumps(provenance, separators=(',', ':'))}",
                          "-metadata", f"title={SYNTHETIC_MARK}: {provenance.get('prompt', '')[:120]}",
                          "-metadata", "description=" + provenance.get("notice", "Synthetic video")]
    partial = path.with_name(path.stem + ".partial" + path.suffix)
    writer = imageio_ffmpeg.write_frames(
        str(partial), size=(frames.shape[2], frames.shape[1]), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
        quality=quality, macro_block_size=2, output_params=output_params, ffmpeg_log_level="error")
    try:
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()
    if provenance is not None:
        sidecar = sidecar_path(path)
        tmp = sidecar.with_name(sidecar.name + ".partial")
        tmp.write_text(json.dumps(provenance, indent=2, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, sidecar)
    os.replace(partial, path)  # the clip appears only once complete, after its sidecar
    return path


def read_clip(path: str | Path) -> tuple[np.ndarray, dict]:
    """Decode a clip to (F, H, W, 3) uint8 frames and imageio-ffmpeg's stream facts (fps, size, codec...)."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    width, height = meta["size"]
    frames = [np.frombuffer(buf, dtype=np.uint8).reshape(height, width, 3) for buf in reader]
    return np.stack(frames) if frames else np.zeros((0, height, width, 3), np.uint8), meta


_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)


def read_container_metadata(path: str | Path) -> dict[str, str]:
    """The MP4's global metadata tags (title, comment, ...), read with the bundled ffmpeg."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    tags: dict[str, str] = {}
    # ffmetadata escapes '=', ';', '#', '\\' and newlines with a backslash; keys end at the first bare '='.
    for line in re.split(r"(?<!\\)\n", out):
        if not line or line.startswith((";", "[")):
            continue
        match = re.match(r"((?:[^=\\]|\\.)*)=(.*)", line, re.DOTALL)
        if match:
            tags[_UNESCAPE.sub(r"\1", match.group(1)).lower()] = _UNESCAPE.sub(r"\1", match.group(2))
    return tags


def read_provenance(path: str | Path) -> dict | None:
    """Provenance of a generated clip: the sidecar if present, else the MP4 comment tag; ``None`` if neither."""
    sidecar = sidecar_path(path)
    if sidecar.is_file():
        return json.loads(sidecar.read_text(encoding="utf-8"))
    comment = read_container_metadata(path).get("comment")
    if comment:
        try:
            return json.loads(comment)
        except json.JSONDecodeError:
            return None
    return None
