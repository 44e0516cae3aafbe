"""The local transformers refining backend, on a tiny random-weight causal LM built here from a config.

The model's final norm is zeroed, so every logit is 0 and greedy decoding always picks token 0 ("remove"):
the backend's real path (chat template, generate, decode, validation, cache) runs with a known answer.
"""

from __future__ import annotations

import pytest

from ophora.curation.config import load_config
from ophora.curation.refine import Refiner

WORDS = ["remove", "[UNK]", "[EOS]", "[PAD]", "the", "cortex", "with", "tip", "system:", "user:", "assistant:"]


@pytest.fixture(scope="module")
def tiny_llm_dir(tmp_path_factory):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llm")
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="[EOS]",
                                        pad_token="[PAD]")
    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}assistant:{% endif %}")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=None, eos_token_id=2, pad_token_id=3)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.model.norm.weight.zero_()  # all logits 0: greedy decoding picks token 0, "remove"
    model.save_pretrained(folder)
    return folder


def test_local_transformers_refiner(tiny_llm_dir, tmp_path):
    cfg = load_config(overrides=["refine.backend=transformers", f"refine.model_path={tiny_llm_dir}",
                                 "refine.max_tokens=5"])["refine"]
    result = Refiner(cfg, tmp_path / "cache.sqlite").refine("The surgeon removes the cortex with the I/A tip.")
    assert result["instruction"] == "Remove remove remove remove remove."
    assert result["refine_backend"] == f"transformers:{tiny_llm_dir}" and result["refine_cached"] is False
    again = Refiner(cfg, tmp_path / "cache.sqlite").refine("The surgeon removes the cortex with the I/A tip.")
    assert again["refine_cached"] is True


def test_local_refiner_needs_a_model_folder(tmp_path):
    cfg = load_config(overrides=["refine.backend=transformers", f"refine.model_path={tmp_path / 'none'}"])["refine"]
    with pytest.raises(ValueError, match="not a local model folder"):
        Refiner(cfg).refine("Remove the cortex with the I/A tip.")
