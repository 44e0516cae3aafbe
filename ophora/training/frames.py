"""Turn a video file into the frame tensor the VAE encodes: bucket choice, frame sampling, resize.

Why buckets: the transformer trains on whole batches of one shape, so each clip is assigned the bucket
(frames, height, width) that fits it best; Ophora used a single 49x480x720 bucket. Frames are taken with a
uniform stride from frame 0 (as the released prep script does), resized to cover the bucket keeping the aspect
ratio, centre-cropped and scaled to [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_BUCKETS = ((49, 480, 720),)


@dataclass(frozen=True)
class Bucket:
    frames: int
    height: int
    width: int

    @classmethod
    def parse(cls, text: str) -> Bucket:
        """'49x480x720' -> Bucket(49, 480, 720)."""
        try:
            frames, height, width = (int(v) for v in text.lower().split("x"))
        except ValueError as error:
            raise ValueError(f"Bucket {text!r} must be FRAMESxHEIGHTxWIDTH, e.g. 49x480x720.") from error
        return cls(frames, height, width)

    def check(self, temporal: int = 4, spatial_multiple: int = 16) -> Bucket:
        """CogVideoX needs 4N+1 frames for the VAE (8N+1 for the 2b transformer) and sizes divisible by 16."""
        if (self.frames - 1) % (temporal * 2) or self.frames < 1:
            raise ValueError(f"Bucket {self}: frames must be {temporal * 2}N+1 (e.g. 9, 17, 49).")
        if self.height % spatial_multiple or self.width % spatial_multiple:
            raise ValueError(f"Bucket {self}: height and width must be multiples of {spatial_multiple}.")
        return self

    def __str__(self) -> str:
        return f"{self.frames}x{self.height}x{self.width}"


def choose_bucket(buckets: list[Bucket], num_frames: int, height: int, width: int) -> Bucket | None:
    """The bucket with the closest aspect ratio among those the clip has enough frames for; the longest wins ties.

    Returns None when the clip is shorter than every bucket (it is skipped, never padded with repeats).
    """
    fitting = [b for b in buckets if b.frames <= num_frames]
    if not fitting:
        return None
    aspect = width / height
    return min(fitting, key=lambda b: (round(abs(np.log((b.width / b.height) / aspect)), 6), -b.frames,
                                       -b.height * b.width))


def read_video_frames(path, start_s: float | None = None, end_s: float | None = None) -> np.ndarray:
    """Decode (F, H, W, 3) uint8 frames of ``path``, only the [start_s, end_s) segment when given.

    Why not decode everything and slice: curation clips are often seconds cut from an hour-long recording;
    ffmpeg seeks to ``start_s`` and stops after the segment, so memory stays at the clip's size.
    """
    import imageio_ffmpeg

    input_params = ["-ss", f"{start_s:.3f}"] if start_s else []
    output_params = ["-t", f"{end_s - (start_s or 0.0):.3f}"] if end_s is not None else []
    reader = imageio_ffmpeg.read_frames(str(path), input_params=input_params, output_params=output_params)
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 3) for buffer in reader]
    return np.stack(frames) if frames else np.zeros((0, height, width, 3), np.uint8)


def sample_frame_indices(available: int, wanted: int) -> np.ndarray:
    """``wanted`` indices with a uniform integer stride from frame 0 (stride = available // wanted)."""
    stride = max(1, available // wanted)
    return np.arange(wanted) * stride


def frames_to_tensor(frames: np.ndarray, bucket: Bucket) -> torch.Tensor:
    """(F, H, W, 3) uint8 -> (3, F, h, w) float in [-1, 1] at the bucket's size (resize to cover, centre crop)."""
    picked = frames[sample_frame_indices(len(frames), bucket.frames)]
    video = torch.from_numpy(np.ascontiguousarray(picked)).permute(0, 3, 1, 2).float() / 255.0  # F, 3, H, W
    height, width = video.shape[-2:]
    scale = max(bucket.height / height, bucket.width / width)
    new_h, new_w = max(bucket.height, round(height * scale)), max(bucket.width, round(width * scale))
    if (new_h, new_w) != (height, width):
        video = torch.nn.functional.interpolate(video, size=(new_h, new_w), mode="bilinear", antialias=True,
                                                align_corners=False)
    top, left = (new_h - bucket.height) // 2, (new_w - bucket.width) // 2
    video = video[..., top:top + bucket.height, left:left + bucket.width]
    return (video.clamp(0, 1) * 2.0 - 1.0).permute(1, 0, 2, 3).contiguous()
