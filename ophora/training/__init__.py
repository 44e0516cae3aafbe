"""Progressive video-instruction tuning of the CogVideoX denoiser: TPT, then P2FT.

Why a package of its own: Ophora's recipe trains only the transformer on latents and T5 embeddings that are
encoded once ahead of training (``encode``), then runs one training loop (``trainer``) twice with two stage
configs (``config``): transfer pre-training on Ophora-160K, then privacy-preserving fine-tuning on Ophora-28K
starting from the first stage's output. The result is a pipeline folder the generation engine loads directly.
"""
