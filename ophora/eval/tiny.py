"""Random-weight CLIP, VideoMAE and V-JEPA 2 folders built offline, for tests, benchmarks and trying the CLI
without the model hub.

``arch="tiny"`` is a few-kilobyte model for tests; ``"base"`` (ViT-B/32) and ``"large"`` (ViT-L/14, the default
CLIPScore model's architecture) have the real sizes, for speed benchmarks. The tokenizer is CLIP's byte-level
BPE with single-character tokens only (no merges), so any text encodes; the scores are meaningless.
"""

from __future__ import annotations

from pathlib import Path

ARCHS = {
    "tiny": dict(text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
                 vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                             image_size=32, patch_size=8), projection_dim=16),
    "base": dict(text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
                 vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                             image_size=224, patch_size=32), projection_dim=512),
    "large": dict(text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
                  vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=224, patch_size=14), projection_dim=768),
}


def _byte_alphabet() -> list[str]:
    # The GPT-2/CLIP byte-to-unicode table: every byte maps to one printable character.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            chars.append(256 + extra)
            extra += 1
    return sorted({chr(c) for c in chars})


def save_random_clip(folder: str | Path, arch: str = "tiny", seed: int = 0) -> Path:
    """Save a random-weight CLIPModel with tokenizer and image processor, loadable by ``load_clip_scorer``."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {sorted(ARCHS)}; got {arch!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_alphabet()
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab.update({ch + "</w>": len(alphabet) + i for i, ch in enumerate(alphabet)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)  # transformers 5: vocabulary in memory
    spec = ARCHS[arch]
    config = CLIPConfig(
        text_config={**spec["text"], "vocab_size": len(vocab), "max_position_embeddings": 77,
                     "bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"]},
        vision_config=spec["vision"], projection_dim=spec["projection_dim"])
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    size = spec["vision"]["image_size"]
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(folder)
    return folder


TINY_VIDEOMAE = dict(image_size=32, patch_size=16, num_frames=16, tubelet_size=2, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, hidden_act="gelu", layer_norm_eps=1e-6,
                     qkv_bias=True, use_mean_pooling=True, num_labels=4)


def save_random_videomae(folder: str | Path, seed: int = 0) -> Path:
    """A tiny random ``VideoMAEForVideoClassification`` folder in the layout CD-FVD loads (``--videomae-weights``)."""
    from ophora.eval.videomae import random_videomae

    folder = Path(folder)
    random_videomae(TINY_VIDEOMAE, seed)[0].model.save_pretrained(folder)
    return folder


def save_random_vjepa(folder: str | Path, seed: int = 0) -> Path:
    """A tiny random ``VJEPA2ForVideoClassification`` folder in the layout JEDi loads (``--vjepa-model``)."""
    from ophora.eval.vjepa import random_vjepa, tiny_vjepa_config

    folder = Path(folder)
    random_vjepa(tiny_vjepa_config(), seed)[0].model.save_pretrained(folder)
    return folder
