"""Probe facts (resolution, fps, frames, duration, codec) and the resolution filter.

Why OpenCV: it is the decoder PySceneDetect uses here, so a clip the probe can read is a clip the dynamics
stage can read (the pipeline hands the probe the very capture its decoding pass reads); and it needs no ffprobe
binary. A file whose header counts no frame is "zero-length", which is different from "unreadable" (no
decoder could open it) and from "missing"; whether the frames really decode is the decoding pass's check.
"""

from __future__ import annotations

from pathlib import Path

from .inputs import ClipTask
from .stages import StageResult


def _fourcc(code: float) -> str:
    value = int(code)
    text = "".join(chr((value >> (8 * i)) & 0xFF) for i in range(4))
    return text.strip("\x00 ").lower() if text.isprintable() and value else ""


def probe_video(path: str | Path, capture=None) -> dict:
    """Facts about the whole file. Raises ``FileNotFoundError`` or ``ValueError`` with a readable reason.

    ``capture``: the ``cv2.VideoCapture`` the decoding pass will read (the pipeline opens each file once);
    it is left open. Nothing is decoded here: the decoding pass checks every frame (decode.py)."""
    import cv2

    path = Path(path)
    if not str(path) or not path.is_file():
        raise FileNotFoundError(f"video file missing: {path}")
    if path.stat().st_size == 0:
        raise ValueError("zero-length video (empty file)")
    own = capture is None
    if own:
        capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ValueError("unreadable video (no decoder could open it)")
        # With OpenCV's automatic orientation (its default, and PySceneDetect's setting) the frame size is the
        # displayed one: a 720x480 clip flagged "rotate 90" reads as 480x720, as it plays.
        capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1.0)
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        codec = _fourcc(capture.get(cv2.CAP_PROP_FOURCC))
        rotation = int(capture.get(cv2.CAP_PROP_ORIENTATION_META) or 0) % 360
    finally:
        if own:
            capture.release()
    if frames <= 0 or width <= 0 or height <= 0:
        raise ValueError("zero-length video (no frame in the file)")
    return {"width": width, "height": height, "fps": fps, "frames": frames,
            "duration_s": frames / fps if fps > 0 else 0.0, "codec": codec, "rotation": rotation}


def probe_clip(task: ClipTask, config: dict, capture=None) -> StageResult:
    """Probe the clip (its ``start``/``end`` window if given) and apply the resolution / length filter."""
    cfg = config["probe"]
    try:
        facts = probe_video(task.video, capture)
    except FileNotFoundError as error:
        return StageResult({}, f"probe: {error}")
    except ValueError as error:
        return StageResult({}, f"probe: {error}")
    start = max(0.0, task.start_s or 0.0)
    end = min(facts["duration_s"], task.end_s) if task.end_s is not None else facts["duration_s"]
    clip_frames = max(0, round((end - start) * facts["fps"])) if facts["fps"] > 0 else facts["frames"]
    facts.update(clip_start_s=start, clip_end_s=end, clip_duration_s=max(0.0, end - start), clip_frames=clip_frames)
    if task.start_s is not None and task.end_s is not None and task.end_s <= task.start_s:
        return StageResult(facts, f"probe: clip bounds empty (end {task.end_s} <= start {task.start_s})")
    if start >= facts["duration_s"]:
        return StageResult(facts, f"probe: clip starts at {start:.2f} s, after the video ends ({facts['duration_s']:.2f} s)")
    if clip_frames < cfg["min_frames"]:
        return StageResult(facts, f"probe: zero-length clip ({clip_frames} frames < {cfg['min_frames']})")
    if facts["clip_duration_s"] < cfg["min_duration_s"]:
        return StageResult(facts, f"probe: clip too short ({facts['clip_duration_s']:.2f} s < {cfg['min_duration_s']} s)")
    long_side, short_side = max(facts["width"], facts["height"]), min(facts["width"], facts["height"])
    if long_side < cfg["min_long_side"] or short_side < cfg["min_short_side"]:
        return StageResult(facts, f"resolution: {facts['width']}x{facts['height']} below "
                                  f"{cfg['min_long_side']}x{cfg['min_short_side']} (long x short side)")
    return StageResult(facts)
