"""One decoding pass per clip: completeness, PySceneDetect's scene list and the frames the privacy screens need.

Why one pass: decoding is the cost of curation. The probe reads only the header, so a truncated or zero-filled
file looks whole until every frame of the clip's window is actually decoded; PySceneDetect decodes them all
anyway, so the same pass counts the decoded frames (``incomplete: decoded N of M frames`` when short), runs the
cut detector, hands every frame to the face and text screens (``on_frame``) and keeps the few frames the VLM
looks at. ``TappedStream`` is PySceneDetect's own OpenCV stream with a tap on ``read``; decoding stays on PySceneDetect's single decode thread, and the
worker sets FFmpeg to one thread (``OPENCV_FFMPEG_CAPTURE_OPTIONS``), so a worker uses one core for decoding.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .inputs import ClipTask

# FFmpeg's own frame threads would make every worker use all cores; parallelism comes from worker processes.
FFMPEG_SINGLE_THREAD = "threads;1"


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
    seconds: float = 0.0

    def pick(self, indices: list[int]) -> list[np.ndarray]:
        return [self.frames[i] for i in indices if i in self.frames]


def open_stream(path: str):
    """The tapped PySceneDetect stream of ``path``, opened once per clip: the probe reads its header, the
    decoding pass its frames. Raises what PySceneDetect raises for a file it cannot open."""
    return _tapped_stream_class()(path)


def decode_clip(task: ClipTask, facts: dict, keep: set[int], dynamics_cfg: dict | None, stream=None,
                on_frame: Callable[[int, np.ndarray], None] | None = None) -> DecodedClip:
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
    if dynamics_cfg is not None:
        measured = measure_cuts(task.video, dynamics_cfg, task.start_s, task.end_s, stream=stream)
    else:
        if task.start_s:
            stream.seek(float(task.start_s))
        while stream.decoded < expected and stream.read(decode=False) is not False:
            pass
    return DecodedClip(first_frame=first, frames_expected=expected, frames_decoded=stream.decoded,
                       decode_failures=int(getattr(stream, "_decode_failures", 0)), frames=stream.kept, cuts=measured,
                       seconds=time.perf_counter() - began)


class ErrorCheck:
    """FFmpeg's own error detection over the clip window, in a process beside the decoding pass.

    Why: the H.264 decoder conceals a damaged slice (a 2 KB corruption mid-file decodes as a visibly broken
    frame, and OpenCV reports nothing); FFmpeg logs every concealed macroblock error. The check decodes the
    window once more without the loop filter (which error detection does not need), on its own thread of
    the machine, so on an idle core it costs no wall time."""

    def __init__(self, video: str, start_s: float | None, end_s: float | None):
        import subprocess

        import imageio_ffmpeg

        command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-threads", "1",
                   "-skip_loop_filter", "all"]
        if start_s:
            command += ["-ss", f"{float(start_s):.3f}"]
        command += ["-i", str(video)]
        if end_s is not None:
            command += ["-t", f"{float(end_s) - float(start_s or 0.0):.3f}"]
        command += ["-map", "0:v:0", "-f", "null", "-"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                        errors="replace")

    def errors(self) -> int:
        """Lines of decoding errors FFmpeg reported for the window (0: every frame decoded cleanly)."""
        _, said = self.process.communicate()
        return sum(1 for line in said.splitlines() if line.strip())

    def cancel(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()


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


__all__ = ["DecodedClip", "ErrorCheck", "FFMPEG_SINGLE_THREAD", "decode_clip", "open_stream", "scene_window", "window_seconds"]
