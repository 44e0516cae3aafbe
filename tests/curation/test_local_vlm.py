"""The local transformers VLM privacy backend, on a tiny random-weight LLaVA built here from configs.

The language model's final norm is zeroed, so greedy decoding always emits token 0, and token 0 of this
word-level vocabulary *is* a complete rubric answer: the backend's real path (processor, chat template with
images, generate, decode, rubric parsing) runs end to end with a known answer.
"""

from __future__ import annotations

import json

import pytest

from ophora.curation.config import load_config
from ophora.curation.inputs import ClipTask
from ophora.curation.privacy import VlmScreen

ANSWER = {"face": "no", "identifiable_person": "no", "on_screen_text": "yes", "non_surgical": "no"}


@pytest.fixture(scope="module")
def tiny_vlm_dir(tmp_path_factory):
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor, PreTrainedTokenizerFast)

    folder = tmp_path_factory.mktemp("tiny-vlm")
    words = [json.dumps(ANSWER), "[UNK]", "[EOS]", "[PAD]", "<image>", "user:", "assistant:"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="[EOS]",
                                        pad_token="[PAD]", extra_special_tokens={"image_token": "<image>"})
    # torchvision cannot be used beside this torch build: take the PIL image processor
    image_processor_cls = getattr(transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor)
    image_processor = image_processor_cls(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    template = ("{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}{% if c['type'] == 'image' %}"
                "<image> {% else %}{{ c['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
                "{% if add_generation_prompt %}assistant:{% endif %}")
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=16,
                               vision_feature_select_strategy="default", chat_template=template,
                               num_additional_image_tokens=1)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, image_size=32, patch_size=16),
        text_config=LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=2, eos_token_id=2, pad_token_id=3,
                                bos_token_id=None),
        image_token_index=4, vision_feature_select_strategy="default", vision_feature_layer=-1)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    with torch.no_grad():
        model.model.language_model.norm.weight.zero_()  # all logits 0: greedy decoding emits token 0
    processor.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


def test_local_vlm_rubric(tiny_vlm_dir, sample_clips):
    cfg = load_config(overrides=["privacy.vlm.enabled=true", "privacy.vlm.backend=transformers",
                                 f"privacy.vlm.model_path={tiny_vlm_dir}", "privacy.vlm.max_tokens=1",
                                 "privacy.vlm.frames=2"])["privacy"]["vlm"]
    result = VlmScreen(cfg)(ClipTask("v", str(sample_clips[0]), "Remove the cortex."))
    assert result.drop_reason == "privacy: VLM flagged on_screen_text"
    assert result.measurements["frames_sent"] == 2 and result.measurements["face"] is False
