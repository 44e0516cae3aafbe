"""Reference phase classifier on an exported dataset: train on ``train.txt``, report top-1 / top-5 on ``val.txt``.

The issue asked for a torchvision video classifier; torchvision cannot be imported beside this project's torch
build, so this uses transformers' VideoMAE (a ViT video classifier, the family of MViTv2/TimeSformer used on
OphNet), built small from a config by default or fine-tuned from a checkpoint folder / hub id with ``model``.
It shows that an exported dataset trains end to end and how to read the numbers; for the paper's comparison,
train SlowFast / MViTv2 in mmaction2 or PySlowFast on the same ``train.txt`` / ``val.txt`` lists.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ophora.eval.clips import EvalInputError, evenly_spaced
from ophora.eval.export import read_class_index

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class TrainConfig:
    dataset: Path
    model: str | None = None
    epochs: int = 3
    batch_size: int = 4
    lr: float = 1e-4
    num_frames: int = 8
    size: int = 112
    seed: int = 0
    out: Path | None = None
    device: str = "cpu"


def read_split(dataset: Path, split: str) -> list[tuple[Path, int]]:
    path = dataset / f"{split}.txt"
    if not path.is_file():
        raise EvalInputError(f"{path} is missing; write the dataset with `python -m ophora eval export`.")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            rel, _, label = line.rpartition(" ")
            if not rel or not label.isdigit():
                raise EvalInputError(f"{path} line {number}: expected '<path> <label>', got {line!r}")
            items.append((dataset / rel, int(label)))
    return items


def clip_tensor(path: Path, num_frames: int, size: int):
    """(T, C, H, W) float: ``num_frames`` evenly spaced frames, resized to ``size`` x ``size``, ImageNet-normalised."""
    import torch
    import torch.nn.functional as F

    from ophora.generation.video import read_clip

    frames, _ = read_clip(path)
    if len(frames) == 0:
        raise EvalInputError(f"{path} has no frames")
    chosen = torch.from_numpy(frames[evenly_spaced(len(frames), num_frames)]).permute(0, 3, 1, 2).float() / 255
    if len(chosen) < num_frames:  # short clip: repeat the last frame
        chosen = torch.cat([chosen, chosen[-1:].expand(num_frames - len(chosen), -1, -1, -1)])
    chosen = F.interpolate(chosen, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return (chosen - mean) / std


def build_model(config: TrainConfig, num_labels: int):
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    if config.model:
        model = VideoMAEForVideoClassification.from_pretrained(config.model, num_labels=num_labels,
                                                               ignore_mismatched_sizes=True)
        config.size, config.num_frames = model.config.image_size, model.config.num_frames
        return model
    small = VideoMAEConfig(image_size=config.size, patch_size=16, num_frames=config.num_frames, tubelet_size=2,
                           hidden_size=96, num_hidden_layers=2, num_attention_heads=2, intermediate_size=192,
                           num_labels=num_labels, use_mean_pooling=True)
    return VideoMAEForVideoClassification(small)


def topk_accuracy(logits, labels, ks=(1, 5)) -> dict[int, float]:
    """Percentage of samples whose label is among the k highest logits (k capped at the class count)."""
    import torch

    result = {}
    for k in ks:
        top = torch.topk(logits, min(k, logits.shape[1]), dim=1).indices
        result[k] = float((top == labels[:, None]).any(dim=1).float().mean() * 100)
    return result


def train_classifier(config: TrainConfig) -> dict:
    import torch

    random.seed(config.seed)
    torch.manual_seed(config.seed)
    classes = read_class_index(config.dataset / "classes.txt")
    train, val = read_split(config.dataset, "train"), read_split(config.dataset, "val")
    if not train or not val:
        raise EvalInputError(f"{config.dataset} needs clips in both train.txt ({len(train)}) and val.txt "
                             f"({len(val)}): export with --val-fraction, or add real OphNet val clips to val.txt.")
    model = build_model(config, len(classes)).to(config.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.05)
    cache: dict[Path, torch.Tensor] = {}

    def batch(items):
        for path, _ in items:
            if path not in cache:
                cache[path] = clip_tensor(path, config.num_frames, config.size)
        pixels = torch.stack([cache[p] for p, _ in items]).to(config.device)
        return pixels, torch.tensor([label for _, label in items], device=config.device)

    history = []
    for epoch in range(config.epochs):
        model.train()
        order = random.sample(train, len(train))
        losses = []
        for start in range(0, len(order), config.batch_size):
            pixels, labels = batch(order[start:start + config.batch_size])
            loss = model(pixel_values=pixels, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses))})

    model.eval()
    logits, labels = [], []
    with torch.inference_mode():
        for start in range(0, len(val), config.batch_size):
            pixels, batch_labels = batch(val[start:start + config.batch_size])
            logits.append(model(pixel_values=pixels).logits.float().cpu())
            labels.append(batch_labels.cpu())
    accuracy = topk_accuracy(torch.cat(logits), torch.cat(labels))
    result = {"top1": accuracy[1], "top5": accuracy[5], "val_clips": len(val), "train_clips": len(train),
              "num_classes": len(classes), "history": history,
              "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}}
    if config.out is not None:
        config.out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(config.out / "model")
        (config.out / "metrics.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result
