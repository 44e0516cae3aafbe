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


# Every blinded file is encoded at the study's CRF plus a small step chosen by its (random) id, and a repeat
# reading at another step than its first reading, with a different size: its own encode (other bytes, a
# size a few percent off, like any two clips of a set), never a copy whose identical size and ETag would
# mark it. Steps are spread over all clips alike, so they say nothing about a clip set.
CRF_STEPS = (-0.4, -0.2, 0.0, 0.2, 0.4)


def crf_step(blind_id: str) -> float:
    return CRF_STEPS[int(hashlib.sha256(blind_id.encode("utf-8")).hexdigest(), 16) % len(CRF_STEPS)]


def blind_repeat(src: Path, dst: Path, settings: Blinding, first: Path, borders: Borders | None = None) -> Path:
    """Encode a repeat reading of the clip whose first reading is the file ``first`` (``src`` without its
    ``borders``, as the first reading was): at the other CRF steps in random order until the size differs
    from the first's (tiny clips can round to one size)."""
    steps = [s for s in CRF_STEPS if s != crf_step(first.stem)]
    secrets.SystemRandom().shuffle(steps)
    size = first.stat().st_size
    for step in steps:
        blind_copy(src, dst, settings, borders, crf_offset=step)
        if dst.stat().st_size != size:
            break
    return dst


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


def blind_copy(src: Path, dst: Path, settings: Blinding, borders: Borders | None = None, *,
               crf_offset: float | None = None) -> Path:
    """Re-encode ``src`` to ``dst`` (H.264 yuv420p, no audio, no metadata, bit-exact muxer) without its
    ``borders``, trimmed to exactly the study's frame count when a study length is set, at the study's CRF
    plus ``crf_offset`` (default: the file's own step, :func:`crf_step` of its name)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    vf = video_filter(settings, borders)
    step = crf_step(dst.stem) if crf_offset is None else crf_offset
    crf = min(51.0, max(0.0, settings.crf + step))
    cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-i", str(src),
           "-map", "0:v:0", "-map_metadata", "-1", "-map_chapters", "-1", "-sn", "-an", "-dn",
           "-vf", vf, "-c:v", "libx264", "-preset", "medium", "-crf", f"{crf:g}",
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
