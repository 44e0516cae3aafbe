"""CLIPScore between a clip's instruction and its frames, with transformers' CLIPModel.

Scale as torchmetrics (and, by its magnitude, the Ophora paper): 100 x cosine similarity, no prompt prefix, the
mean clamped at 0. For video we embed K frames spread evenly over time and average their scores per clip; a set's
score is the mean over clips, clamped at 0. Model, scale, prefix, clamp and K are written into every report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ophora.eval.weights import MissingWeightsError, WeightsInfo, hub_model_problem, resolve_hub_folder, sha256_files

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"  # torchmetrics' default CLIPScore model


class ClipScorer:
    """Holds a CLIP model with its tokenizer and image processor; ``score`` gives one clip's raw CLIPScore."""

    def __init__(self, model, tokenizer, image_processor, prefix: str = "", scale: float = 100.0) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.prefix = prefix
        self.scale = scale

    def text_for(self, prompt: str) -> str:
        return f"{self.prefix} {prompt}".strip() if self.prefix else prompt

    def score(self, frames: np.ndarray, prompt: str) -> float:
        """Mean of ``scale * cos(text, frame)`` over ``frames`` (K, H, W, 3) uint8; not clamped (see module doc)."""
        import torch

        device = next(self.model.parameters()).device
        pixels = self.image_processor(images=list(frames), return_tensors="pt")["pixel_values"].to(device)
        tokens = self.tokenizer([self.text_for(prompt)], padding=True, truncation=True,
                                max_length=self.model.config.text_config.max_position_embeddings,
                                return_tensors="pt").to(device)
        with torch.inference_mode():
            image = self.model.get_image_features(pixel_values=pixels)
            text = self.model.get_text_features(input_ids=tokens["input_ids"],
                                                attention_mask=tokens["attention_mask"])
            image = getattr(image, "pooler_output", image)
            text = getattr(text, "pooler_output", text)
            image = image / image.norm(dim=-1, keepdim=True)
            text = text / text.norm(dim=-1, keepdim=True)
            cosines = (image @ text.T).squeeze(-1).double()
        return float(self.scale * cosines.mean())


def clip_weights_problem(model: str, offline: bool) -> str | None:
    """Why a CLIP model cannot be had without a download where downloads are off, or ``None``."""
    return hub_model_problem(model, offline, what="CLIP model", saved_with="CLIPModel.save_pretrained",
                             flag="--clip-model")


def load_clip_scorer(model: str = DEFAULT_CLIP_MODEL, offline: bool = False, prefix: str = "",
                     scale: float = 100.0, device: str = "cpu") -> tuple[ClipScorer, WeightsInfo]:
    """Load a CLIP folder or hub id; the report's hash covers its weight files."""
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    folder = resolve_hub_folder(model, offline, what="CLIP model", flag="--clip-model")
    weight_files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not weight_files:
        raise MissingWeightsError(f"{folder} has no CLIP weights (*.safetensors or *.bin); pass a folder saved with "
                                  f"CLIPModel.save_pretrained or a hub id such as {DEFAULT_CLIP_MODEL}.")
    clip = CLIPModel.from_pretrained(folder).to(device)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    try:
        processor = CLIPImageProcessor.from_pretrained(folder)
    except OSError:
        processor = CLIPImageProcessor(size={"shortest_edge": clip.config.vision_config.image_size},
                                       crop_size={"height": clip.config.vision_config.image_size,
                                                  "width": clip.config.vision_config.image_size})
    name = f"CLIP {clip.config.vision_config.image_size}px vision / {model}"
    return ClipScorer(clip, tokenizer, processor, prefix, scale), WeightsInfo(
        "clipscore", name, str(model if not Path(model).is_dir() else folder), sha256_files(weight_files))
