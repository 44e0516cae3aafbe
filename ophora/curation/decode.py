"""One decoding pass per clip: completeness, PySceneDetect's scene list and the frames the privacy screens need.

Why one pass: decoding is the cost of curation. The probe reads only the header, so a truncated or zero-filled
file looks whole until every frame of the clip's window is actually decoded; PySceneDetect decodes them all
anyway, so the same pass counts the decoded frames (``incomplete: decoded N of M frames`` when short), runs the
cut detector, hands every frame to the face and text screens (``on_frame``) and keeps the few frames the VLM
looks at, and FFmpeg's error messages during the pass are read as its damaged-frame check (``ffmpeg_errors``).
``TappedStream`` is PySceneDetect's own OpenCV stream with a tap on ``read``; decoding stays on PySceneDetect's
single decode thread, and the stream is opened with FFmpeg's decoder on one thread (``single_decode_thread``),
so a worker uses one core for decoding and parallelism comes from worker processes.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np

from .inputs import ClipTask

# OpenCV gives FFmpeg's decoder one thread per core unless told otherwise; it reads this variable when it opens a
# file (``threads;1`` in OPENCV_FFMPEG_CAPTURE_OPTIONS is overridden by that default: measured, 4.26 against
# 3.87 ms of CPU per 720x480 frame, on 1.5 cores).
DECODE_THREADS_VARIABLE = "OPENCV_FFMPEG_THREADS"


@contextmanager
def single_decode_thread() -> Iterator[None]:
    """FFmpeg's decoder on one thread for the captures OpenCV opens inside the block (the variable is read at
    open time and put back afterwards, so nothing else in the process is changed)."""
    saved = os.environ.get(DECODE_THREADS_VARIABLE)
    os.environ[DECODE_THREADS_VARIABLE] = "1"
    try:
        yield
    finally:
        if saved is None:
            del os.environ[DECODE_THREADS_VARIABLE]
        else:
            os.environ[DECODE_THREADS_VARIABLE] = saved


def _tapped_stream_class():
    from scenedetect.backends.opencv import VideoStreamCv2

    class TappedStream(VideoStreamCv2):
        """PySceneDetect's OpenCV stream that counts every frame it decodes and keeps RGB copies of some."""

        def __init__(self, path: str, keep: set[int] | None = None):
            super().__init__(path)
            self.keep = keep or set()  # set by decode_clip once the screens' frame numbers are known
            self.kept: dict[int, np.ndarray] = {}
            self.on_frame: Callable[[int, np.ndarray], None] | None = None  # told of every decoded BGR frame
            self.decoded = 0

        def read(self, decode: bool = True):
            import cv2

            upcoming = self.frame_number  # the index of the frame this read returns
            wanted = upcoming in self.keep
            frame = super().read(decode or wanted or self.on_frame is not None)
            if frame is False:
                return False
            self.decoded += 1
            if isinstance(frame, np.ndarray):
                if self.on_frame is not None:
                    self.on_frame(upcoming, frame)  # every frame is screened, not a sample
                if wanted:
                    self.kept[upcoming] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            return frame if decode else True

    return TappedStream


@dataclass
class DecodedClip:
    """What the single pass saw; ``frames`` are the kept RGB frames by absolute frame number."""
    first_frame: int
    frames_expected: int
    frames_decoded: int
    decode_failures: int
    frames: dict[int, np.ndarray] = field(default_factory=dict)
    cuts: dict | None = None  # dynamics.measure_cuts' measurements when the dynamics stage is on
    errors: list[str] | None = None  # FFmpeg's error lines during the pass (None: not listened to)
    seconds: float = 0.0

    def pick(self, indices: list[int]) -> list[np.ndarray]:
        return [self.frames[i] for i in indices if i in self.frames]


def open_stream(path: str):
    """The tapped PySceneDetect stream of ``path``, opened once per clip (decoder on one thread): the probe reads
    its header, the decoding pass its frames. Raises what PySceneDetect raises for a file it cannot open."""
    with single_decode_thread():
        return _tapped_stream_class()(path)


def decode_clip(task: ClipTask, facts: dict, keep: set[int], dynamics_cfg: dict | None, stream=None,
                on_frame: Callable[[int, np.ndarray], None] | None = None,
                error_detection: bool = True) -> DecodedClip:
    """Decode every frame of the clip window once; run the cut detector on the way when ``dynamics_cfg``.

    ``stream``: the clip's stream from ``open_stream``, not yet read (the pipeline's probe opened it).
    ``on_frame(frame_number, bgr)``: called on the decode thread for every decoded frame, so the screens
    start on it while the rest of the clip decodes (the frame is shared: read it, never write to it)."""
    from .dynamics import measure_cuts

    began = time.perf_counter()
    stream = stream if stream is not None else open_stream(task.video)
    stream.keep, stream.on_frame = set(keep), on_frame
    fps = float(stream.frame_rate)
    first = int(round((task.start_s or 0.0) * fps)) if task.start_s else 0
    expected = int(facts["clip_frames"])
    measured = None
    with ffmpeg_errors() if error_detection else nullcontext() as errors:
        if dynamics_cfg is not None:
            measured = measure_cuts(task.video, dynamics_cfg, task.start_s, task.end_s, stream=stream)
        else:
            if task.start_s:
                stream.seek(float(task.start_s))
            while stream.decoded < expected and stream.read(decode=False) is not False:
                pass
    return DecodedClip(first_frame=first, frames_expected=expected, frames_decoded=stream.decoded,
                       decode_failures=int(getattr(stream, "_decode_failures", 0)), frames=stream.kept, cuts=measured,
                       errors=errors, seconds=time.perf_counter() - began)


# A line FFmpeg logs from a decoder or demuxer context: "[h264 @ 0x55d0c0a1e2c0] error while decoding MB 8 1".
FFMPEG_LOG_LINE = re.compile(r"^\[[\w.,:-]+ @ (0x)?[0-9a-fA-F]+\]")  # demuxers: [mov,mp4,m4a,... @ 0x..]
_STDERR = threading.Lock()  # file descriptor 2 is the process's: one capture at a time


def check_error_logging() -> None:
    """Refuse to run error detection that could not see anything. With ``OPENCV_FFMPEG_LOGLEVEL`` or
    ``OPENCV_FFMPEG_DEBUG`` set, OpenCV replaces FFmpeg's logger with its own (another level, another stream
    and format), so a damaged clip could pass unnoticed: fail before the first clip instead."""
    for name in ("OPENCV_FFMPEG_LOGLEVEL", "OPENCV_FFMPEG_DEBUG"):
        if name in os.environ:
            raise ValueError(f"{name} is set, which changes how FFmpeg reports decoding errors (how damaged "
                             f"frames are found): unset it, or set probe.error_detection=false")


@contextmanager
def ffmpeg_errors() -> Iterator[list[str]]:
    """The error lines FFmpeg logs while the block runs (the list is filled when the block ends).

    Why: the H.264 decoder conceals a damaged slice (2 KB of noise mid-file decodes as a visibly broken frame
    and OpenCV's ``read`` reports nothing), but FFmpeg logs every concealed error at its error level, and
    OpenCV's FFmpeg backend prints those lines to the process's standard error. Capturing them from the
    decoding pass itself makes error detection free: no second decode of the window. Lines that are not
    FFmpeg's go back to standard error."""
    import sys
    import tempfile

    lines: list[str] = []
    with _STDERR, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            others = []
            for line in sink.read().decode("utf-8", errors="replace").splitlines():
                (lines if FFMPEG_LOG_LINE.match(line) else others).append(line)
            if others:
                os.write(2, ("\n".join(others) + "\n").encode("utf-8"))


def scene_window(cut_frames: list[int], first: int, last: int, fps: float) -> tuple[int, int]:
    """The longest scene [a, b) (frame numbers) of the clip window [first, last) split at ``cut_frames``."""
    bounds = [first] + sorted(c for c in cut_frames if first < c < last) + [last]
    scenes = list(zip(bounds[:-1], bounds[1:]))
    return max(scenes, key=lambda scene: (scene[1] - scene[0], -scene[0]))


def window_seconds(a: int, b: int, fps: float) -> tuple[float, float]:
    """Seconds that select exactly frames a..b-1 with ffmpeg's ``-ss``/``-t`` (as the encoder reads windows):
    a quarter frame before each frame boundary, so rounding to milliseconds never pulls in a frame of the
    neighbouring scene."""
    return max(0.0, (a - 0.25) / fps), (b - 0.25) / fps


__all__ = ["DecodedClip", "FFMPEG_LOG_LINE", "check_error_logging", "decode_clip", "single_decode_thread",
           "ffmpeg_errors", "open_stream", "scene_window", "window_seconds"]
