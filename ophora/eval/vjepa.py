"""V-JEPA features for JEDi (Luo et al., "Beyond FVD: Enhanced Evaluation Metrics for Video Generation Quality",
ICLR 2025), on transformers' ``VJEPA2ForVideoClassification``.

The reference (``videojedi``) embeds 16-frame clips with V-JEPA ViT-H/16 and takes the attentive pooler of its
Something-Something-v2 probe (ImageNet mean/std normalisation), then reports 100 x the polynomial-kernel MMD
(``ophora.eval.mmd``). transformers ships V-JEPA 2, not V-JEPA 1, so we take the same kind of feature from
V-JEPA 2's SSv2 classifier (default ``facebook/vjepa2-vitl-fpc16-256-ssv2``: ViT-L, 16 frames, 256 px): the
pooler output of the SSv2 probe. Deviation, stated in every report and in docs/evaluation.md: JEDi values from
this backbone are not numerically comparable with the paper's V-JEPA 1 ViT-H values; the MMD itself is the
reference's exactly (tested against ``videojedi.mmd_polynomial``).
Preprocessing follows V-JEPA 2's video processor: short side to crop x 256 / 224, centre crop, ImageNet norm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ophora.eval.weights import WeightsInfo, folder_weight_files, hub_model_problem, resolve_hub_folder, sha256_files

DEFAULT_VJEPA_MODEL = "facebook/vjepa2-vitl-fpc16-256-ssv2"
FLAG = "--vjepa-model"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VJEPAFeatures(nn.Module):
    """(N, 3, T, S, S) normalised -> (N, hidden): the SSv2 probe's attentive-pooler output."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model.eval()

    @property
    def num_frames(self) -> int:
        return 16

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """(T, H, W, 3) uint8 -> (3, T, S, S): short side to S x 256 / 224, centre crop S, ImageNet mean/std."""
        crop = self.model.config.crop_size
        short = int(crop * 256 / 224)
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
        h, w = video.shape[-2:]
        scale = short / min(h, w)
        target = (max(short, round(h * scale)), max(short, round(w * scale)))
        video = F.interpolate(video, size=target, mode="bilinear", align_corners=False, antialias=True)
        top, left = (target[0] - crop) // 2, (target[1] - crop) // 2
        video = video[:, :, top:top + crop, left:left + crop]
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return ((video - mean) / std).permute(1, 0, 2, 3)

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        hidden = self.model.vjepa2(pixel_values_videos=videos.permute(0, 2, 1, 3, 4), skip_predictor=True)
        return self.model.pooler(hidden.last_hidden_state)


def vjepa_weights_problem(source: str | None, offline: bool) -> str | None:
    return hub_model_problem(source or DEFAULT_VJEPA_MODEL, offline, what="V-JEPA 2 model",
                             saved_with="VJEPA2ForVideoClassification.save_pretrained", flag=FLAG)


def load_vjepa(source: str | None = None, offline: bool = False) -> tuple[VJEPAFeatures, WeightsInfo]:
    """A V-JEPA 2 video classifier (folder or hub id); its pooler gives the JEDi features."""
    from transformers import VJEPA2ForVideoClassification

    source = source or DEFAULT_VJEPA_MODEL
    folder = resolve_hub_folder(source, offline, what="V-JEPA 2 model", flag=FLAG)
    files = folder_weight_files(folder, f"pass a V-JEPA 2 video classifier such as {DEFAULT_VJEPA_MODEL} "
                                        f"with {FLAG}.")
    model = VJEPA2ForVideoClassification.from_pretrained(folder)
    name = f"V-JEPA 2 {model.config.hidden_size}-d SSv2-probe pooler / {source} (JEDi reference: V-JEPA 1 ViT-H)"
    return VJEPAFeatures(model), WeightsInfo("jedi", name, str(folder if Path(source).is_dir() else source),
                                             sha256_files(files))


def tiny_vjepa_config(**overrides) -> dict:
    """A few-kilobyte V-JEPA 2 classifier in the real layout, for tests and trying the pipeline offline."""
    return dict(crop_size=32, patch_size=16, frames_per_clip=16, tubelet_size=2, hidden_size=32,
                num_attention_heads=2, num_hidden_layers=2, mlp_ratio=2.0, num_pooler_layers=1,
                pred_hidden_size=32, pred_num_attention_heads=2, pred_num_hidden_layers=1, num_labels=4) | overrides


def random_vjepa(config: dict | None = None, seed: int = 0) -> tuple[VJEPAFeatures, WeightsInfo]:
    """V-JEPA 2 ViT-L with random weights (or a smaller ``config``): tests and speed only."""
    from transformers import VJEPA2Config, VJEPA2ForVideoClassification

    torch.manual_seed(seed)
    model = VJEPA2ForVideoClassification(VJEPA2Config(**(config or {"num_labels": 174, "frames_per_clip": 16})))
    return VJEPAFeatures(model), WeightsInfo("jedi", "V-JEPA 2 [RANDOM INIT]", f"random init (seed {seed})", None, True)
