"""Blinded copies of clips: re-encoded identically, stripped of metadata, renamed to opaque ids.

Why re-encode rather than copy: container tags (title, comment, encoder), sidecars, file names and even
codec settings or bitrate can tell a rater "this came from the generator". Every clip, real or generated,
goes through the same ffmpeg command (same codec, CRF, resolution, fps, pixel format, no audio), so the
only thing left to judge is the picture.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
from pathlib import Path

from ophora.study.definition import Blinding
from ophora.study.screening import Borders

FIXED_MTIME = 946684800  # 2000-01-01: file times must not reveal import order (real first, then model A...)


def new_blind_id() -> str:
    """An opaque id with no order and no meaning (random, 64 bits)."""
    return "c" + secrets.token_hex(8)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def video_filter(settings: Blinding, borders: Borders | None = None) -> str:
    """The ffmpeg filter chain every clip goes through.

    Uniform ``borders`` measured on the clip (black bars, :mod:`ophora.study.screening`) are cropped away
    first, under either fit, so bars of one clip set never reach raters. ``fit: crop`` (default): scale until the frame is covered, then cut the centre to the study size, so no
    clip has bars whatever its aspect ratio. ``fit: letterbox``: scale to fit inside and pad with black
    (parity refuses clip sets of different aspect ratios there, so every clip gets the same bars)."""
    w, h = settings.width, settings.height
    if settings.fit == "crop":
        geometry = f"scale={w}:{h}:force_original_aspect_ratio=increase,crop={w}:{h}"
    else:
        geometry = f"scale={w}:{h}:force_original_aspect_ratio=decrease,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2"
    crop = borders.crop_filter() if borders is not None else None
    return f"{crop + ',' if crop else ''}{geometry},fps={settings.fps},setsar=1,format=yuv420p"


def blind_copy(src: Path, dst: Path, settings: Blinding, borders: Borders | None = None) -> Path:
    """Re-encode ``src`` to ``dst`` (H.264 yuv420p, no audio, no metadata, bit-exact muxer) without its
    ``borders``, trimmed to exactly the study's frame count when a study length is set."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    vf = video_filter(settings, borders)
    cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-i", str(src),
           "-map", "0:v:0", "-map_metadata", "-1", "-map_chapters", "-1", "-sn", "-an", "-dn",
           "-vf", vf, "-c:v", "libx264", "-preset", "medium", "-crf", str(settings.crf),
           "-threads", "2",  # x264 writes its settings (thread count included) into every clip: keep them identical
           "-fflags", "+bitexact", "-flags:v", "+bitexact", "-metadata:s:v:0", "handler_name=",
           "-metadata:s:v:0", "language=und", "-movflags", "+faststart"]
    if settings.frames:
        cmd += ["-frames:v", str(settings.frames)]
    tmp = dst.with_name(dst.stem + ".part.mp4")
    cmd.append(str(tmp))
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"could not re-encode {src} for blinding (is it a readable video?): {result.stderr.strip()[-800:]}")
    os.replace(tmp, dst)
    os.utime(dst, (FIXED_MTIME, FIXED_MTIME))
    return dst
