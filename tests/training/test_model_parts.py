"""What trains and what must not: LoRA/full parameter sets, gradient checkpointing, the frozen-parts check."""

from __future__ import annotations

import pytest
import torch

from ophora.training.config import config_from_dict
from ophora.training.trainer import load_transformer, trainable_parameters
from ophora.training.validation import FrozenParts


@pytest.mark.parametrize("training", ["full", "lora"])
def test_trainable_parameters_and_gradient_checkpointing(tiny_model_dir, training):
    config = config_from_dict({"data": ["unused"], "base_model": str(tiny_model_dir), "training": training,
                               "lora": {"rank": 4, "alpha": 4}, "validation_steps": 0})
    transformer = load_transformer(config, torch.float16)
    assert transformer.is_gradient_checkpointing and transformer.training
    params = trainable_parameters(transformer, training)
    names = {n for n, p in transformer.named_parameters() if p.requires_grad}
    if training == "full":
        assert len(params) == len(list(transformer.parameters())) and all(p.dtype == torch.float32 for p in params)
    else:
        assert names and all("lora_" in n for n in names) and all(p.dtype == torch.float32 for p in params)
        frozen = [p for n, p in transformer.named_parameters() if "lora_" not in n]
        assert all(p.dtype == torch.float16 and not p.requires_grad for p in frozen)


def test_frozen_parts_check_catches_a_changed_or_trainable_weight(tiny_model_dir):
    frozen = FrozenParts(str(tiny_model_dir), torch.device("cpu"), torch.float32)
    pipe = frozen.load()
    frozen.verify()  # unchanged: passes
    weight = next(pipe.vae.parameters())
    with torch.no_grad():
        weight.view(-1)[0] += 1e-3
    with pytest.raises(RuntimeError, match="frozen vae changed"):
        frozen.verify()
    with torch.no_grad():
        weight.view(-1)[0] -= 1e-3
    next(pipe.text_encoder.parameters()).requires_grad_(True)
    with pytest.raises(RuntimeError, match="frozen text_encoder has trainable parameters"):
        frozen.verify()
