"""The text PHI screen measured on the team's synthetic corpus (tests/curation/data, see its README): recall
over annotated PHI items >= 0.99 and >= 0.95 of clean, eponym-rich narrations kept unchanged; the figures the
release card prints (ophora/curation/deid_measured.json) are the ones measured here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ophora.curation.config import load_config
from ophora.curation.deid import (MEASURED_PATH, VOCABULARY_PATH, Deidentifier, load_lexicon, measured_figures,
                                  shared_deidentifier)

CORPUS = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def deid() -> Deidentifier:
    return shared_deidentifier(load_config()["privacy"]["deid"])


@pytest.fixture(scope="module")
def figures(deid) -> dict:
    return measured_figures(deid, CORPUS)


def test_recall_and_clean_narrations_on_the_corpus(figures):
    total, held_out = figures["total"], figures["heldout"]
    print(f"PHI recall: development {figures['dev']['recall']}, held-out {held_out['recall']}, total "
          f"{total['recall']} ({total['phi_caught']}/{total['phi_items']}); clean kept: development "
          f"{figures['dev']['clean_kept_share']}, held-out {held_out['clean_kept_share']}, total "
          f"{total['clean_kept_share']}")
    assert total["phi_narrations"] >= 200 and total["clean_narrations"] >= 100
    assert held_out["phi_narrations"] >= 50 and held_out["clean_narrations"] >= 30
    assert total["recall"] >= 0.99
    assert total["clean_kept_share"] >= 0.95
    kinds = {"name", "date", "age", "record_number", "phone", "email", "address", "hospital"}
    assert kinds <= set(figures["dev"]["per_kind"]) and kinds <= set(held_out["per_kind"])


def test_the_card_prints_what_was_measured(figures):
    assert json.loads(MEASURED_PATH.read_text(encoding="utf-8")) == json.loads(json.dumps(figures)), \
        "rerun `python bench/bench_deid.py --write` after changing the screen or the corpus"


def test_the_vocabulary_is_large_enough():
    lexicon, listed = load_lexicon(), yaml.safe_load(VOCABULARY_PATH.read_text(encoding="utf-8"))
    assert len(listed["eponyms"]) + len(listed["terms"]) >= 150  # in the file itself, assets/ lists aside
    assert {"descemet", "bowman", "kelman", "sinskey", "vannas", "utrata", "nagahara", "soemmering", "rycroft",
            "elschnig", "kratz", "connor", "jaffe", "cionni", "hoskins", "simcoe", "kuglen", "chang"} <= lexicon.eponyms
    assert {"healon", "weck-cel"} <= lexicon.terms


@pytest.mark.parametrize("text, kept", [
    ("The Simcoe cannula aspirates the cortex.", True),
    ("Mr Simcoe came back for his second eye.", False),
    ("Bowman's layer is intact.", True),
    ("Dr Bowman performed the case.", False),
    ("Bowman drove home after the case.", False),
    ("He was driven home to Simcoe.", False),
    ("Simcoe's cataract was dense.", False),
    ("A Chang chopper splits the nucleus.", True),
    ("Mark Chang was the patient.", False),
    ("The zonules of Zinn are intact.", True),
    ("Vision Blue stains the capsule.", True),
    ("mrs okafor was nervous.", False),
    ("señora núñez was nervous.", False),
    ("mr white was nervous.", False),
    ("The specimen kx-4471-b went to the lab.", False),
    ("A 10-0 nylon suture and a 2.2mm keratome were used.", True),
    ("Seen on the third of march.", False),
    ("A ninety-two year old man.", False),
    ("Questions to okafor at nhs dot net.", False),
    ("Consent was signed by Ngozi\nOkafor.", False),
    ("Here we polish the posterior capsule with the I/A tip.", True),
    ("Three steps shown one after another.", True),
    ("A Weck-Cel dries the wound.", True),
])
def test_eponyms_survive_unless_the_context_marks_a_person(deid, text, kept):
    assert (deid.screen(text).text != "") is kept, deid.screen(text).findings


def test_release_text_passes_clean_fields_and_withholds_the_others(deid):
    assert deid.release_text("Capsule polishing") == "Capsule polishing"
    assert deid.release_text("capsule-polishing") == "capsule-polishing"
    assert deid.release_text("Capsule polishing - Mrs Okafor (bed 4)") is None
    assert deid.release_text("Remove the cortex. Patient kx-4471-b.") is None  # never a part of a field
    assert deid.release_text(None) is None


@pytest.mark.parametrize("model", ["deid-judge", "deid-unsure"])
def test_a_local_llm_second_opinion_removes_what_it_flags(chat_server, model):
    cfg = {**load_config()["privacy"]["deid"],
           "llm": {"enabled": True, "base_url": chat_server.base_url, "model": model, "retries": 0}}
    deid = Deidentifier(cfg)
    screened = deid.screen("Insert the lens with the injector. Her grandmother held her hand.")
    assert screened.text == ("" if model == "deid-unsure" else "Insert the lens with the injector.")
    assert "llm_opinion" in screened.kinds
    asked = [r["messages"][-1]["content"] for r in chat_server.requests]
    assert asked == ["Insert the lens with the injector.", "Her grandmother held her hand."]  # rules passed both
    assert deid.screen("Dr Bowman operated.").text == "" and len(chat_server.requests) == 2  # rules found it first


def test_release_withholds_what_the_llm_could_not_check(chat_server):
    cfg = {**load_config()["privacy"]["deid"],
           "llm": {"enabled": True, "base_url": chat_server.base_url, "model": "fail-500", "retries": 0}}
    assert Deidentifier(cfg).release_text("Insert the lens with the injector.") is None
