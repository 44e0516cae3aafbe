"""VideoMAE-v2 features for content-debiased FVD (Ge et al., "On the Content Bias in Frechet Video Distance",
CVPR 2024), on transformers' ``VideoMAEForVideoClassification``.

The reference (``cd-fvd``, ``cdfvd.fvd.get_videomae_features``) runs the VideoMAE-v2 ViT-g/14 fine-tuned on
Something-Something-v2 (``vit_g_hybrid_pt_1200e_ssv2_ft.pth``) on 16 frames scaled to [0, 1] and stretched
bilinearly to 224x224 (no mean/std normalisation), and takes ``fc_norm(mean of patch tokens)``: 1408 values per
clip. Its Frechet distance is the usual one. We run the same network in transformers' layout: the original
checkpoint file is converted on load (``convert_videomaev2_state_dict``), and a folder or hub id saved with
``VideoMAEForVideoClassification.save_pretrained`` loads as is. ``tests/eval/test_cd_fvd_and_jedi.py`` checks
features against cd-fvd's own model class on a tiny random network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ophora.eval.weights import (WeightsInfo, folder_weight_files, hub_model_problem, resolve_hub_folder,
                                 resolve_weights_file, sha256_file, sha256_files, weights_problem)

VIDEOMAE_URL = ("https://pjlab-gvm-data.oss-cn-shanghai.aliyuncs.com/internvideo/videomaev2/"
                "vit_g_hybrid_pt_1200e_ssv2_ft.pth")
VIDEOMAE_FILENAME = "vit_g_hybrid_pt_1200e_ssv2_ft.pth"
VIDEOMAE_NAME = "VideoMAE-v2 ViT-g/14 SSv2 fine-tuned (cd-fvd), fc_norm of mean tokens, 1408 values"
CD_FVD_SIZE = 224
CD_FVD_NUM_FRAMES = 16
FLAG = "--videomae-weights"

# ViT-g/14 as cd-fvd builds it: vit_giant_patch14_224(num_classes=174, all_frames=16, tubelet_size=2).
VIT_G_CONFIG = dict(image_size=224, patch_size=14, num_channels=3, num_frames=16, tubelet_size=2, hidden_size=1408,
                    num_hidden_layers=40, num_attention_heads=16, intermediate_size=6144, hidden_act="gelu",
                    layer_norm_eps=1e-6, qkv_bias=True, use_mean_pooling=True, num_labels=174)


class VideoMAEFeatures(nn.Module):
    """(N, 3, T, H, W) in [0, 1] -> (N, hidden) ``fc_norm(mean of tokens)``, the cd-fvd feature."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model.eval()
        # transformers builds fc_norm with LayerNorm's default eps (1e-5); VideoMAE-v2 uses the config's (1e-6).
        self.model.fc_norm.eps = self.model.config.layer_norm_eps

    @property
    def num_frames(self) -> int:
        return self.model.config.num_frames

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """(T, H, W, 3) uint8 -> (3, T, S, S) in [0, 1], stretched like cd-fvd's ``preprocess_videomae``."""
        size = self.model.config.image_size
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
        video = F.interpolate(video, size=(size, size), mode="bilinear", align_corners=False)
        return video.permute(1, 0, 2, 3)

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        tokens = self.model.videomae(pixel_values=videos.permute(0, 2, 1, 3, 4)).last_hidden_state
        return self.model.fc_norm(tokens.mean(dim=1))


def convert_videomaev2_state_dict(state: dict) -> dict:
    """Rename a VideoMAE-v2 (cd-fvd / OpenGVLab) fine-tuned checkpoint to ``VideoMAEForVideoClassification``'s
    keys; the fused qkv projection is split into query, key and value (VideoMAE's key has no bias)."""
    for wrapper in ("model", "module"):
        if wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
            break
    out = {}
    for key, value in state.items():
        if key.startswith("blocks."):
            _, index, rest = key.split(".", 2)
            prefix = f"videomae.encoder.layer.{index}."
            if rest == "attn.qkv.weight":
                query, key_, value_ = value.chunk(3, dim=0)
                out[prefix + "attention.attention.query.weight"] = query
                out[prefix + "attention.attention.key.weight"] = key_
                out[prefix + "attention.attention.value.weight"] = value_
                continue
            renames = {"norm1.": "layernorm_before.", "norm2.": "layernorm_after.",
                       "attn.q_bias": "attention.attention.query.bias", "attn.v_bias": "attention.attention.value.bias",
                       "attn.proj.": "attention.output.dense.", "mlp.fc1.": "intermediate.dense.",
                       "mlp.fc2.": "output.dense."}
            for old, new in renames.items():
                if rest.startswith(old):
                    out[prefix + new + rest[len(old):]] = value
                    break
            else:
                out[prefix + rest] = value
        elif key.startswith("patch_embed.proj."):
            out["videomae.embeddings.patch_embeddings.projection." + key.split(".")[-1]] = value
        elif key.startswith("head."):
            out["classifier." + key.split(".")[-1]] = value
        elif key == "pos_embed":
            continue  # the fixed sinusoid table, rebuilt by transformers
        else:
            out[key] = value
    return out


def videomae_from_state_dict(state: dict, config: dict, file: Path) -> VideoMAEFeatures:
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    from ophora.eval.weights import load_state_dict_exactly

    model = VideoMAEForVideoClassification(VideoMAEConfig(**config))
    load_state_dict_exactly(model, convert_videomaev2_state_dict(state), file, hint=f"Content-debiased FVD needs cd-fvd's checkpoint {VIDEOMAE_URL} "
                                                     f"or a VideoMAEForVideoClassification folder.")
    return VideoMAEFeatures(model)


def videomae_weights_problem(source: str | None, offline: bool) -> str | None:
    """Missing-weights advice before anything loads: the checkpoint file, or a transformers folder / hub id."""
    if source is not None and not source.endswith((".pth", ".pt", ".bin")) and not Path(source).is_file():
        return hub_model_problem(source, offline, what="VideoMAE-v2 model",
                                 saved_with="VideoMAEForVideoClassification.save_pretrained", flag=FLAG)
    return weights_problem(source, what="CD-FVD VideoMAE-v2", filename=VIDEOMAE_FILENAME, url=VIDEOMAE_URL,
                           flag=FLAG, offline=offline)


def load_videomae(source: str | None = None, offline: bool = False,
                  cache_dir: str | Path | None = None) -> tuple[VideoMAEFeatures, WeightsInfo]:
    """cd-fvd's checkpoint file (downloaded to the cache when allowed), or a transformers folder / hub id."""
    from transformers import VideoMAEForVideoClassification

    if source is not None and not source.endswith((".pth", ".pt", ".bin")) and not Path(source).is_file():
        folder = resolve_hub_folder(source, offline, what="VideoMAE-v2 model", flag=FLAG)
        files = folder_weight_files(folder, f"pass cd-fvd's checkpoint {VIDEOMAE_FILENAME} or a "
                                            f"VideoMAEForVideoClassification folder with {FLAG}.")
        model = VideoMAEForVideoClassification.from_pretrained(folder)
        return VideoMAEFeatures(model), WeightsInfo("cdfvd", f"VideoMAE {model.config.hidden_size}-d / {source}",
                                                    str(folder), sha256_files(files))
    file = resolve_weights_file(source, what="CD-FVD VideoMAE-v2", filename=VIDEOMAE_FILENAME, url=VIDEOMAE_URL,
                                flag=FLAG, offline=offline, cache_dir=cache_dir)
    state = torch.load(file, map_location="cpu", weights_only=True)
    return videomae_from_state_dict(state, VIT_G_CONFIG, file), WeightsInfo("cdfvd", VIDEOMAE_NAME, str(file),
                                                                            sha256_file(file))


def random_videomae(config: dict | None = None, seed: int = 0) -> tuple[VideoMAEFeatures, WeightsInfo]:
    """The architecture (ViT-g/14 by default, or a smaller ``config``) with random weights: tests and speed only."""
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    torch.manual_seed(seed)
    model = VideoMAEForVideoClassification(VideoMAEConfig(**(config or VIT_G_CONFIG)))
    return VideoMAEFeatures(model), WeightsInfo("cdfvd", "VideoMAE-v2 [RANDOM INIT]", f"random init (seed {seed})",
                                                None, True)
