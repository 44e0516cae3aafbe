"""Tiny CogVideoX pipeline with random weights, built offline from configs.

Why: tests, CI and the app's ``--model tiny`` preview need the *real* diffusers ``CogVideoXPipeline``
code path without downloading 20 GB of weights. The tiny pipeline has the same components, class names
and folder layout as ``General-Medical-AI/Ophora`` (``model_index.json``, ``tokenizer/``,
``text_encoder/``, ``transformer/``, ``vae/``, ``scheduler/``), so loading, quantization, offload,
saving and training code is exercised unchanged. Its output is noise: the weights are untrained.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_MODEL_NAME = "tiny"
TINY_NOTICE = (
    "Tiny preview model: random, untrained weights. Its clips are noise; it exists to try the app and "
    "run tests without a GPU or downloads. Load General-Medical-AI/Ophora for real surgical video."
)
# Matches the real checkpoint's T5 limit so prompt-length checks behave the same.
TINY_MAX_TEXT_TOKENS = 226
TINY_TEXT_DIM = 32

# The CogVideoX-2b scheduler config (as published with the checkpoint): v-prediction, zero-SNR betas.
COGVIDEOX_2B_SCHEDULER_CONFIG: dict = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "sample_max_value": 1.0,
    "set_alpha_to_one": True,
    "snr_shift_scale": 3.0,
    "steps_offset": 0,
    "timestep_spacing": "trailing",
    "trained_betas": None,
}

# Text the tiny tokenizer's vocabulary is learned from: surgical words tokenize into short pieces.
_VOCAB_CORPUS = [
    "Generate a surgical video clip with the current surgical phase as incision",
    "A keratome blade creates a self-sealing clear corneal incision into the anterior chamber.",
    "A viscoelastic agent is injected with a cannula to maintain the anterior chamber.",
    "Capsulorhexis forceps or a cystotome create a continuous curvilinear tear in the anterior capsule.",
    "Balanced salt solution is injected between the capsule and the cortex during hydrodissection.",
    "The phacoemulsification probe emulsifies and aspirates the nucleus with ultrasound energy.",
    "Irrigation and aspiration remove the remaining cortex while the capsular bag is preserved.",
    "The posterior capsule is polished to remove residual lens epithelial cells.",
    "A foldable intraocular lens is implanted into the capsular bag with an injector.",
    "The lens is positioned and centred with a hook; haptics rest in the bag.",
    "Viscoelastic suction removes the ophthalmic viscosurgical device from the eye.",
    "The anterior chamber is flushed and the wounds are hydrated and sealed.",
    "Intracameral antibiotics are given and the eye is tonified at the end of surgery.",
    "trabeculectomy vitrectomy retina cornea iris pupil sclera limbus conjunctiva suture needle forceps",
    "0 1 2 3 4 5 6 7 8 9 a b c d e f g h i j k l m n o p q r s t u v w x y z , . ; : ( ) - ' \"",
]


def _build_tokenizer(vocab_size: int = 600):
    """Learn a small Unigram vocabulary and wrap it in the same tokenizer class as the real T5."""
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import T5Tokenizer

    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator(_VOCAB_CORPUS * 4, vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"],
                           unk_token="<unk>", show_progress=False)
    vocab = json.loads(sp.to_str())["model"]["vocab"]
    return T5Tokenizer(vocab=[(piece, float(score)) for piece, score in vocab], extra_ids=0,
                       model_max_length=TINY_MAX_TEXT_TOKENS)


def build_tiny_pipeline(seed: int = 0):
    """Return a ``CogVideoXPipeline`` with tiny dims and random (seeded) weights, on CPU, fp32."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    import torch

    torch.manual_seed(seed)
    tokenizer = _build_tokenizer()
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=TINY_TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, dropout_rate=0.0, feed_forward_proj="gated-gelu",
        is_encoder_decoder=False, use_cache=False, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
    ))
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=8,
        text_embed_dim=TINY_TEXT_DIM, num_layers=2, sample_width=18, sample_height=12, sample_frames=9,
        patch_size=2, temporal_compression_ratio=4, max_text_seq_length=TINY_MAX_TEXT_TOKENS,
    )
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=2,
        temporal_compression_ratio=4, sample_height=480, sample_width=720,  # tiling thresholds as the real VAE
    )
    scheduler = CogVideoXDDIMScheduler(**COGVIDEOX_2B_SCHEDULER_CONFIG)
    pipe = CogVideoXPipeline(tokenizer=tokenizer, text_encoder=text_encoder.eval(), vae=vae.eval(),
                             transformer=transformer.eval(), scheduler=scheduler)
    return pipe


def save_tiny_pipeline(path: str | Path, seed: int = 0) -> Path:
    """Build the tiny pipeline and save it with ``save_pretrained`` (the real checkpoint's layout)."""
    path = Path(path)
    pipe = build_tiny_pipeline(seed=seed)
    pipe.save_pretrained(path)
    (path / "README.md").write_text(f"# Ophora Studio tiny model\n\n{TINY_NOTICE}\n\nBuilt with seed {seed}.\n")
    return path


def default_tiny_dir() -> Path:
    """Where ``--model tiny`` keeps its pipeline folder (built once, then reused)."""
    import os

    root = Path(os.environ.get("OPHORA_CACHE", Path.home() / ".cache" / "ophora"))
    return root / "tiny-cogvideox"


def ensure_tiny_pipeline(path: str | Path | None = None) -> Path:
    """Return a saved tiny pipeline folder, building it on first use."""
    path = Path(path) if path is not None else default_tiny_dir()
    if not (path / "model_index.json").is_file():
        path.mkdir(parents=True, exist_ok=True)
        save_tiny_pipeline(path)
    return path
