"""De-identification fails closed: 60 synthetic narrations carrying PHI in varied forms go through the curation
and the release; not one PHI string reaches the release, and the counts per kind are printed."""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pandas as pd
import pytest

from ophora.curation.cli import main
from ophora.curation.config import load_config
from ophora.curation.deid import shared_deidentifier
from ophora.curation.inputs import read_tasks
from ophora.curation.pipeline import run_pipeline

NAMES = [("John", "Smith"), ("Maria", "Garcia"), ("Wei", "Chen"), ("Aisha", "Okafor"), ("Liam", "O'Brien"),
         ("Sofia", "Rossi"), ("Hans", "Mueller"), ("Priya", "Patel"), ("Kenji", "Tanaka"), ("Fatima", "Al-Sayed"),
         ("Olga", "Ivanova"), ("Kwame", "Mensah")]
TITLES = ["Mr.", "Mrs.", "Ms.", "Dr.", "Prof.", "", "Miss", ""]
DATES = ["03/04/1950", "1950-04-03", "4.3.1950", "March 3, 2021", "3 March 2021", "3rd of March, 2021",
         "Mar. 3, 2021", "12/31/99", "2021-03-04", "January 2019", "14 Feb 1962", "July 4th, 1976"]
AGES = ["72 years old", "72-year-old", "aged 68", "age: 81", "65 yo", "59 y/o", "83 yrs old"]
MRNS = ["MRN 123456", "MRN: 00987654", "medical record number 4455667", "patient ID A12-34567",
        "chart no. 778899", "hospital number 5566778"]
PHONES = ["555-123-4567", "(555) 987-6543", "+44 20 7946 0958", "+1 415 555 0199", "020 7946 0018"]
EMAILS = ["john.smith@example.com", "m.garcia@hospital.org", "patient123@mail.co.uk", "kchen@clinic.net"]
ADDRESSES = ["12 Main Street", "45 Elm Avenue, Apt 3", "221 Baker Street", "PO Box 1234", "7 Oak Rd."]
HOSPITALS = ["St. Mary's Hospital", "Moorfields Eye Hospital", "Massachusetts Eye and Ear Infirmary",
             "Bascom Palmer Eye Institute", "Mercy General Hospital", "Royal Victoria Infirmary"]
SURGICAL = ["Insert the IOL into the capsular bag with the injector.",
            "Inject fluid under the capsule with a cannula to free the nucleus.",
            "Remove the cortex with the irrigation-aspiration handpiece.",
            "Sculpt a deep central groove in the nucleus with the phaco tip.",
            "Polish the posterior capsule with the capsule polisher."]
# Each template: PHI sentence(s) with their PHI slots; the surgical sentence is added around them.
TEMPLATES = [
    "{title} {first} {last}, born {date}, {mrn}.",
    "This is {first} {last}, a {age} patient seen at {hospital}.",
    "Patient {first} {last} ({age}) was operated on {date}.",
    "{first} {last} can be reached at {phone} or {email}.",
    "Surgery performed on {date} at {hospital} by Dr. {last}.",
    "The patient lives at {address} and was {age} at surgery.",
    "{last}, {first}; {mrn}; DOB {date}.",
    "Case from {hospital}, {address}.",
    "Recorded {date}. {title} {last} consented.",
    "Call {phone} for follow-up with Dr. {first} {last}.",
    "In this video Dr. {last} shows the steps for {first}.",
    "Our patient, {age}, from {address}, phone {phone}.",
]


def narrations(count: int = 60) -> list[dict]:
    """``count`` narrations with their PHI strings (what must never be released)."""
    out = []
    for i in range(count):
        first, last = NAMES[i % len(NAMES)]
        slots = {"title": TITLES[i % len(TITLES)], "first": first, "last": last, "date": DATES[i % len(DATES)],
                 "age": AGES[i % len(AGES)], "mrn": MRNS[i % len(MRNS)], "phone": PHONES[i % len(PHONES)],
                 "email": EMAILS[i % len(EMAILS)], "address": ADDRESSES[i % len(ADDRESSES)],
                 "hospital": HOSPITALS[i % len(HOSPITALS)]}
        template = TEMPLATES[i % len(TEMPLATES)]
        phi_sentence = template.format(**slots).replace("  ", " ").strip()
        surgical = SURGICAL[i % len(SURGICAL)]
        text = f"{phi_sentence} {surgical}" if i % 2 == 0 else f"{surgical} {phi_sentence}"
        used = [value for key, value in slots.items() if "{" + key + "}" in template and key != "title"]
        phi = set()
        for value in used:
            phi.add(value)
            phi.update(part.strip(".,;:()") for part in value.split() if len(part.strip(".,;:()")) > 3
                       and part.lower() not in {"street", "avenue", "hospital", "general", "institute", "years",
                                                "number", "medical", "record", "chart"})
        out.append({"clip_id": f"phi-{i:02d}", "caption": text, "phi": sorted(phi), "surgical": surgical})
    return out


def test_every_phi_sentence_is_removed_and_the_surgical_one_kept():
    deid = shared_deidentifier(load_config()["privacy"]["deid"])
    kinds: Counter = Counter()
    kept_surgical = 0
    for item in narrations():
        screened = deid.screen(item["caption"])
        for phi in item["phi"]:
            assert phi not in screened.text, (item["caption"], phi, screened.text)
        kept_surgical += screened.text == item["surgical"]
        kinds.update(screened.kinds)
    print("PHI items removed per kind:", dict(sorted(kinds.items())))
    assert kept_surgical >= 55  # the surgical sentence survives unless PHI sits inside it
    assert {"name", "date", "age", "record_number", "phone", "email", "address", "hospital"} <= set(kinds)


@pytest.mark.parametrize("text", ["Operated by Dr - White today.", "Operated by Dr: White today.",
                                  "Operated by Dr (White) today.", 'Then Mrs. "Green" was moved.'])
def test_a_name_after_a_title_and_punctuation_is_still_a_name(text):
    """Found in review: punctuation between title and name made the name a sentence start (a common word)."""
    deid = shared_deidentifier(load_config()["privacy"]["deid"])
    assert deid.release_text(text) is None


def test_sentence_splitting_keeps_titles_and_saints_inside_the_sentence():
    deid = shared_deidentifier(load_config()["privacy"]["deid"])
    assert deid.sentences("Mr. Smith was seen at St. Mary's. Remove the lens.") == [(0, 33), (34, 50)]


@pytest.mark.parametrize("answer", [
    "Remove the cortex of John Smith, born 03/04/1950.",
    "Remove the cortex for the 72-year-old patient.",
    "Insert the lens; call 555-123-4567 afterwards.",
    "Rotate the IOL as taught at Moorfields Eye Hospital.",
])
def test_llm_answers_with_phi_are_not_accepted(answer):
    from ophora.curation.pipeline import Curator

    curator = Curator(load_config(overrides=["privacy.face_prescreen.enabled=false"]))
    result = curator.screen_instruction(answer)
    assert result.drop_reason and result.drop_reason.startswith("privacy: PHI in the instruction")
    assert result.measurements["instruction"] is None


@lru_cache(maxsize=None)
def released_text(out: Path) -> str:
    """Every released file as text: table cells, JSON and Markdown (MP4 metadata is checked in test_release).
    PHI is searched as a whole token: the salted hex ids are random, and "2021" inside "9c2021ab" is no leak."""
    parts = []
    for path in sorted(out.rglob("*")):
        if path.suffix == ".parquet":
            parts.append(pd.read_parquet(path).astype(str).to_csv(index=False))
        elif path.is_file() and path.suffix != ".mp4":
            parts.append(path.read_text(encoding="utf-8"))
    return "\n".join(parts)


def test_no_phi_reaches_the_release(tmp_path, sample_clips, capsys):
    from ophora.generation.video import read_clip, write_clip

    items = narrations()
    phases = ["capsule-polishing", "Capsule polishing - Mrs Okafor (bed 4)", "Lens implantation", "cortex for ngozi"]
    # this test is about text: 60 clips go through every stage and the release with their screens on as by
    # default (the release refuses clips whose frames were not all screened), on 8-frame cuts of the real
    # clips (a 8-frame training window) so that decoding, screening and re-encoding stay cheap
    videos = [write_clip(read_clip(path)[0][:8], tmp_path / f"short{i}.mp4", fps=8)
              for i, path in enumerate(sample_clips)]
    rows = [{"clip_id": item["clip_id"], "video": str(videos[i % 2]), "caption": item["caption"],
             "phase": phases[i % 4]} for i, item in enumerate(items)]
    manifest = tmp_path / "phi.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    config = load_config(overrides=["dynamics.enabled=false", "probe.window_frames=8"])
    curated = tmp_path / "curated.parquet"
    frame = run_pipeline(read_tasks(manifest), config, curated, workers=1)
    assert (frame["decision"] == "keep").sum() >= 55
    out = tmp_path / "release"
    assert main(["release", str(curated), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "PHI items removed per kind" in printed
    leaks = [(item["clip_id"], phi) for item in items for phi in item["phi"] + ["Okafor", "ngozi", "bed 4"]
             if re.search(rf"(?<![0-9A-Za-z]){re.escape(phi)}(?![0-9A-Za-z])", released_text(out))]
    assert leaks == []
    card = json.loads((out / "card.json").read_text())
    print("redactions per kind (narrations):", card["deidentification"]["redactions_in_narrations"])
    assert sum(card["deidentification"]["redactions_in_narrations"].values()) >= 100
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert set(manifest["phase"].dropna()) == {"capsule-polishing", "lens-implantation"}  # known names -> ids
    assert card["deidentification"]["phases_withheld"] == manifest["phase"].isna().sum() > 0
    names = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()]
    assert all(re.fullmatch(r"videos/[0-9a-f]{16}\.mp4|manifest\.parquet|decisions\.parquet|card\.json|README\.md", n)
               for n in names), names  # file names are salted hashes or fixed
    readme = (out / "README.md").read_text()
    measured = card["deidentification"]["measured"]["total"]
    assert f"{measured['phi_caught']} of {measured['phi_items']}" in readme and "held-out" in readme
    assert "### What the text screen cannot see" in readme and "saw only" not in readme


def test_no_refiner_sees_a_narration_that_failed_the_screen(tmp_path, sample_clips, chat_server):
    """Even when every stage is measured after a drop, the LLM refiner gets nothing of a PHI-only narration."""
    manifest = tmp_path / "one.csv"
    pd.DataFrame([{"clip_id": "phi-only", "video": str(sample_clips[0]),
                   "caption": "mrs okafor, ninety-two year old, was seen on the third of march."},
                  {"clip_id": "clean", "video": str(sample_clips[1]),
                   "caption": "Then the Kuglen hook rotates the lens into the bag."}]).to_csv(manifest, index=False)
    config = load_config(overrides=["run.stop_at_first_drop=false", "privacy.face_prescreen.enabled=false",
                                    "dynamics.enabled=false", "refine.backend=openai", "refine.model=refine-ok",
                                    f"refine.base_url={chat_server.base_url}", "refine.retries=0"])
    rows = run_pipeline(read_tasks(manifest), config, tmp_path / "out.parquet", workers=1).set_index("clip_id")
    assert rows.loc["phi-only", "reason"].startswith("privacy: PHI in every narration sentence")
    assert "refine: no narration left to refine" in rows.loc["phi-only", "reason"]
    sent = json.dumps([r["messages"] for r in chat_server.requests])
    assert "okafor" not in sent.lower() and "Kuglen hook" in sent  # the clean one was asked about


def test_presidio_is_imported_without_torch_unless_a_transformer_model_needs_it():
    """Start-up: torch is hidden from spaCy's thinc while Presidio imports (0.9 s per process), except when the
    configured spaCy model is a transformer pipeline, which runs on torch."""
    from ophora.curation.deid import _needs_torch

    assert _needs_torch("en_core_web_trf") and not _needs_torch("en_core_web_sm") and not _needs_torch("blank")
    assert _needs_torch("auto") == (importlib.util.find_spec("en_core_web_trf") is not None)
