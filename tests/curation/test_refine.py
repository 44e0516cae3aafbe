"""Narrative refining: validation, the offline rule-based refiner, and the OpenAI-compatible backend against a
real HTTP server on 127.0.0.1 (canned, malformed, slow, failing and flaky answers), with caching."""

from __future__ import annotations

import time

import pytest

from ophora.curation.chat_client import MalformedAnswer
from ophora.curation.config import load_config
from ophora.curation.refine import PROMPT_VERSION, InvalidInstruction, Refiner, rule_refine, validate_instruction
from ophora.curation.stages import RetryableError

from .openai_server import CANNED_INSTRUCTION

PAPER_NARRATION = (
    "This video describes cortical removal to prevent zonular stress, especially in cases with weak zonules. "
    "The surgeon explains how to manage aspiration to avoid grasping and pulling the capsule, which could lead "
    "to complications.")


def refine_cfg(server=None, model="refine-ok", **extra) -> dict:
    cfg = load_config()["refine"]
    if server is not None:
        cfg.update(backend="openai", base_url=server.base_url, model=model, retries=1, backoff_s=0.05,
                   timeout_s=5)
    cfg.update(extra)
    return cfg


def test_validation_rejects_empty_long_and_narration():
    cfg = refine_cfg()
    assert validate_instruction('Instruction: "remove the cortex with the I/A tip"', cfg) == \
        "Remove the cortex with the I/A tip."
    with pytest.raises(InvalidInstruction, match="empty"):
        validate_instruction("  \n ", cfg)
    with pytest.raises(InvalidInstruction, match="too long"):
        validate_instruction("Remove " + "cortex " * 60, cfg)
    with pytest.raises(InvalidInstruction, match="narration"):
        validate_instruction("In this video the surgeon removes the cortex.", cfg)
    with pytest.raises(InvalidInstruction, match="narration"):
        validate_instruction("We remove the cortex with the I/A tip.", cfg)


def test_rule_refiner_on_the_papers_example():
    instruction = validate_instruction(rule_refine(PAPER_NARRATION), refine_cfg())
    assert instruction == "Remove cortex to prevent zonular stress."
    assert "especially" not in instruction and "video" not in instruction.lower()
    assert rule_refine("In this video, the surgeon shows the insertion of the IOL with an injector into the "
                       "capsular bag.") == "Insert the IOL with an injector into the capsular bag."
    assert rule_refine("Here the surgeon carefully removes the cortex with the I/A tip.") == \
        "Carefully remove the cortex with the I/A tip."
    assert rule_refine("In this video the surgeon injects fluid under the capsule with a cannula.") == \
        "Inject fluid under the capsule with a cannula."
    assert rule_refine("Welcome back everyone. Please subscribe.") == ""  # nothing surgical: no instruction


def test_rules_backend_is_labelled_offline(tmp_path):
    result = Refiner(refine_cfg(), tmp_path / "cache.sqlite").refine(PAPER_NARRATION)
    assert result["refine_backend"] == "rules-v1 (offline rule-based)"
    assert result["refine_prompt_version"] == PROMPT_VERSION


def test_openai_backend_canned_answer_and_cache(chat_server, tmp_path):
    refiner = Refiner(refine_cfg(chat_server), tmp_path / "cache.sqlite")
    first = refiner.refine(PAPER_NARRATION)
    assert first["instruction"] == CANNED_INSTRUCTION and first["refine_cached"] is False
    request = chat_server.requests[-1]
    assert request["path"] == "/v1/chat/completions" and request["model"] == "refine-ok"
    assert request["messages"][0]["role"] == "system" and PAPER_NARRATION in request["messages"][-1]["content"]
    # a rerun (a new refiner on the same cache file) costs nothing
    again = Refiner(refine_cfg(chat_server), tmp_path / "cache.sqlite").refine(PAPER_NARRATION)
    assert again["instruction"] == CANNED_INSTRUCTION and again["refine_cached"] is True
    assert chat_server.calls("refine-ok") == 1


def test_malformed_answers_are_reported(chat_server, tmp_path):
    with pytest.raises(MalformedAnswer, match="not a chat completion"):
        Refiner(refine_cfg(chat_server, "malformed"), tmp_path / "c.sqlite").refine(PAPER_NARRATION)
    assert chat_server.calls("malformed") == 2  # one more attempt, then give up
    with pytest.raises(MalformedAnswer):
        Refiner(refine_cfg(chat_server, "no-choices"), tmp_path / "c.sqlite").refine(PAPER_NARRATION)
    with pytest.raises(InvalidInstruction, match="narration"):
        Refiner(refine_cfg(chat_server, "refine-narrate"), tmp_path / "c.sqlite").refine(PAPER_NARRATION)


def test_failing_endpoint_is_retried_with_backoff_then_retryable(chat_server, tmp_path):
    refiner = Refiner(refine_cfg(chat_server, "fail-500", retries=2, backoff_s=0.1), tmp_path / "c.sqlite")
    began = time.perf_counter()
    with pytest.raises(RetryableError, match="HTTP 500"):
        refiner.refine(PAPER_NARRATION)
    assert chat_server.calls("fail-500") == 3
    assert time.perf_counter() - began >= 0.5 * (0.1 + 0.2)  # jittered exponential backoff: half to all of it


def test_flaky_endpoint_recovers_within_retries(chat_server, tmp_path):
    refiner = Refiner(refine_cfg(chat_server, "flaky", retries=3, backoff_s=0.05), tmp_path / "c.sqlite")
    assert refiner.refine(PAPER_NARRATION)["instruction"] == CANNED_INSTRUCTION
    assert chat_server.calls("flaky") == 3


def test_slow_endpoint_times_out(chat_server, tmp_path):
    refiner = Refiner(refine_cfg(chat_server, "slow", timeout_s=0.3, retries=0), tmp_path / "c.sqlite")
    with pytest.raises(RetryableError, match="timed out"):
        refiner.refine(PAPER_NARRATION)
    patient = Refiner(refine_cfg(chat_server, "slow", timeout_s=5, retries=0), tmp_path / "c.sqlite")
    assert patient.refine(PAPER_NARRATION)["instruction"] == CANNED_INSTRUCTION


def test_endpoint_down_is_retryable(tmp_path):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = refine_cfg(backend="openai", base_url=f"http://127.0.0.1:{port}/v1", model="x", retries=1, backoff_s=0.01)
    with pytest.raises(RetryableError, match="cannot reach"):
        Refiner(cfg, tmp_path / "c.sqlite").refine(PAPER_NARRATION)


def test_rule_refiner_splits_sentences_with_pysbd_not_at_abbreviations():
    from ophora.curation.refine import rule_refine, split_sentences

    text = "The IOL is placed by Dr. Adams at St. Luke's. Then rotate the IOL with the hook into the capsular bag."
    assert split_sentences(text) == ["The IOL is placed by Dr. Adams at St. Luke's. ",
                                     "Then rotate the IOL with the hook into the capsular bag."]
    assert rule_refine("We use e.g. a cannula to inject fluid under the capsule.") == \
        "Use e.g. a cannula to inject fluid under the capsule."
