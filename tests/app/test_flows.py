"""The studio, rater station and kiosk driven over HTTP with gradio_client, as their pages do."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from gradio_client import Client

from app.history import History
from ophora.generation.video import read_clip, read_container_metadata
from tests.app.conftest import ADMIN_PASSWORD
from tests.app.helpers import (PROMPTS, answer_args, generate, rate_all, rater_screen, sign_in_admin, table_rows,
                               value_of, video_path)


def test_generate_writes_clip_provenance_and_history(studio, seeded_study, app_data):
    prov = seeded_study.provenance
    assert prov["model"]["id"] == "tiny" and prov["model"]["tiny_random_weights"] is True
    assert prov["seed"] == 7 and prov["num_inference_steps"] == 2 and prov["num_frames"] == 9
    entries = {e.id: e for e in History(app_data / "history").entries()}
    assert set(seeded_study.history_ids) <= set(entries)
    big = entries[seeded_study.history_ids[1]]
    assert big.provenance["seed"] == 2**62 + 11  # the full integer range survives the browser round trip
    frames, meta = read_clip(big.path)
    assert frames.shape == (9, 96, 144, 3)
    assert big.study_master.is_file() and big.study_master != big.path  # unlabelled copy for blinded studies
    assert big.provenance["phase"] == "capsulorhexis"  # generated from the capsulorhexis template


def test_generate_rejects_bad_input_and_stays_usable(studio, client_for):
    client = client_for(studio.url)
    with pytest.raises(Exception, match="Seed must be a whole number"):
        client.predict(PROMPTS[0], "", "twelve", 2, 6.0, 9, None, None, 8, api_name="/generate")
    with pytest.raises(Exception, match="instruction is empty"):
        client.predict("   ", "", "1", 2, 6.0, 9, None, None, 8, api_name="/generate")
    with pytest.raises(Exception, match="Height must be a multiple"):
        client.predict(PROMPTS[0], "", "1", 2, 6.0, 9, 100, None, 8, api_name="/generate")
    with pytest.raises(Exception, match="Width must be a multiple of 16.*got 0"):  # 0 is an error, never "native"
        client.predict(PROMPTS[0], "", "1", 2, 6.0, 9, None, 0, 8, api_name="/generate")
    seed = client.predict(api_name="/random_seed")
    assert 0 <= int(seed) < 2**63
    out = generate(client, PROMPTS[0], seed=int(seed))
    assert video_path(out[0]).is_file()


def test_cancel_stops_a_running_generation(studio, client_for):
    client = client_for(studio.url)
    saved_before = len(History(studio.config.history_dir).entries())
    job = client.submit(PROMPTS[0], "", "3", 400, 6.0, 9, None, None, 8, api_name="/generate")
    deadline = time.time() + 60
    while time.time() < deadline:
        status = job.status()
        if status.progress_data and "step" in (status.progress_data[0].desc or ""):
            break
        time.sleep(0.1)
    assert status.progress_data and "about" in status.progress_data[0].desc, "no step progress with an ETA"
    assert status.progress_data[0].length == 400
    assert "Cancelling" in client.predict(api_name="/cancel")
    # A cancel is a notice, not an error: the call ends normally and says where it stopped.
    message = job.result(timeout=60)[1]
    assert re.fullmatch(r"Cancelled after step \d+ of 400\. Nothing was saved\.", message), message
    assert int(message.split("step ")[1].split(" ")[0]) < 400  # stopped between steps, not at the end
    assert len(History(studio.config.history_dir).entries()) == saved_before
    assert client.predict(api_name="/cancel") == "Nothing to cancel."


def test_history_rerun_and_survives_restart(studio, seeded_study, client_for):
    from app.server import build_app, launch_app
    from tests.app.conftest import free_port

    client = client_for(studio.url)
    rerun = client.predict(seeded_study.history_ids[1], api_name="/history_rerun")
    assert rerun[0] == PROMPTS[1] and rerun[2] == str(2**62 + 11) and rerun[3] == 2
    shown = client.predict(seeded_study.history_ids[0], api_name="/history_show")
    assert shown[1]["prompt"] == PROMPTS[0]
    with pytest.raises(Exception, match="not a history id"):
        client.predict("../../etc/passwd", api_name="/history_show")
    # A new server on the same data folder (a restart) lists the same clips.
    demo = build_app(studio.config, service=studio.demo.ophora_service)
    port = free_port()
    launch_app(studio.config, port=port, block=False, demo=demo)
    try:
        fresh = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        rows = table_rows(fresh.predict(api_name="/history_refresh")[0])
        assert set(seeded_study.history_ids) <= {row[0] for row in rows}
        # After the restart a clip can still be re-run and added to a (new) study by the study lead.
        assert fresh.predict(seeded_study.history_ids[1], api_name="/history_rerun")[2] == str(2**62 + 11)
        with pytest.raises(Exception, match="Study lead only"):
            fresh.predict(seeded_study.history_ids[0], "restart-study", api_name="/history_add_to_study")
        sign_in_admin(fresh, ADMIN_PASSWORD)
        # per_clip: the free-text instruction of this clip is what raters see (it has no phase for a template).
        fresh.predict("restart-study", "After a restart", "Rate.", "", True, True, "zoe", 0, 1, 144, 96, 8, None,
                      "crop", "per_clip", None, api_name="/study_create")
        added = fresh.predict(seeded_study.history_ids[0], "restart-study", api_name="/history_add_to_study")
        assert "added to study **restart-study**" in added
        again = fresh.predict(seeded_study.history_ids[0], "restart-study", api_name="/history_add_to_study")
        assert "already in study" in again
        fresh.close()
    finally:
        demo.close()


def test_two_raters_rate_change_and_results(studio, rater_station, seeded_study, client_for):
    alice, bob = client_for(rater_station.url), client_for(rater_station.url)
    final = rate_all(alice, seeded_study.codes["alice"], score=4)
    assert final["status"].endswith("**All 4 clips are rated. Thank you!**")  # and nothing else on screen
    rate_all(bob, seeded_study.codes["bob"], score=2)
    # Alice goes back one clip; changing the answer needs a reason and is audited.
    back = rater_screen(alice.predict(api_name="/rate_back"))
    assert "Clip 4 of 4" in back["about"] and back["reason"]["visible"] is True
    # Her earlier answers are filled in; sending them back unchanged changes nothing.
    shown = [value_of(r) for r in back["radios"] if r.get("visible")]
    assert shown == [4, 4, 4] and value_of(back["turing"]) == "synthetic" and value_of(back["confidence"]) == 4
    assert value_of(back["phase"]) == back["phase"]["choices"][3][1]
    with pytest.raises(Exception, match="Nothing changed"):
        alice.predict(*answer_args(back, 4, reason="no change"), api_name="/rate_submit")
    with pytest.raises(Exception, match="say why"):
        alice.predict(*answer_args(back, 5), api_name="/rate_submit")
    changed = rater_screen(alice.predict(*answer_args(back, 5, reason="looked again"), api_name="/rate_submit"))
    assert "Changed your answer" in changed["status"]

    lead = client_for(studio.url)
    sign_in_admin(lead, ADMIN_PASSWORD)
    (progress, summary, fig_c, fig_p, scores, differences, auc, reliability, intra, turing, phase, d_scores, _,
     d_auc, _, columns_note, note) = lead.predict("app-study", api_name="/study_results")
    assert note.startswith("Record verified: ") and "chain head " in note  # what the figures came from
    rows = {r[0]: r for r in table_rows(progress)}
    assert rows["alice"][1:3] == [4, 4] and rows["bob"][1:3] == [4, 4] and rows["carol"][1] == 0
    assert fig_c is not None and fig_p is not None
    assert table_rows(reliability) and table_rows(turing) and table_rows(scores)
    assert "raters scored" in summary and "Real clips:" in summary
    # Plain column names for a clinician, explained in one line; method names, degrees of freedom and variance
    # components only in the statisticians' details.
    assert "Standard error" in value_of(scores)["headers"] and "Degrees of freedom" not in value_of(scores)["headers"]
    assert {"Degrees of freedom", "Readers x cases variance"} <= set(value_of(d_scores)["headers"])
    assert "*Standard error*: how much" in columns_note
    for table in (reliability, turing, scores):  # rounded to 3 significant digits, headers in words
        shown = value_of(table)
        assert all("_" not in header for header in shown["headers"])
        assert all(v == float(f"{v:.3g}") for row in shown["data"] for v in row
                   if isinstance(v, float) and v == v and abs(v) != float("inf"))
    plan_text, plan_scores, _ = lead.predict("app-study", None, None, 0.5, 0.05, 0.05, 0.8, api_name="/study_plan")
    assert "half-width 0.5" in plan_text and table_rows(plan_scores)
    for table in (reliability, turing):  # rounded to 3 significant digits, headers in words
        shown = value_of(table)
        assert all("_" not in header for header in shown["headers"])
        assert all(v == float(f"{v:.3g}") for row in shown["data"] for v in row
                   if isinstance(v, float) and v == v and abs(v) != float("inf"))
    files = lead.predict("app-study", api_name="/study_export")
    names = sorted(video_path(f).name for f in files)
    assert names == ["app-study-report.html", "app-study-tables.zip"]
    from ophora.study.store import StudyStore

    with StudyStore(studio.config.database_url) as db:
        audit = db.audit_log("app-study")
        change = audit[audit.action == "change"].iloc[0]
        assert change.reason == "looked again" and json.loads(change.new_value)["scores"]
        ratings = db.ratings_frame("app-study")
    ours = ratings[ratings.rater.isin(["alice", "bob"])]  # the browser test's rater shares this study
    assert set(ours.rater) == {"alice", "bob"} and len(ours) == 2 * 4 * 3


def test_resume_where_the_rater_stopped(rater_station, seeded_study, client_for):
    first = client_for(rater_station.url)
    screen = rater_screen(first.predict(seeded_study.codes["carol"], api_name="/rate_sign_in"))
    screen = rater_screen(first.predict(*answer_args(screen, 3), api_name="/rate_submit"))
    assert "Clip 2 of 4" in screen["about"]
    again = client_for(rater_station.url)  # a new browser session (reload) after signing in again
    resumed = rater_screen(again.predict(seeded_study.codes["carol"], api_name="/rate_sign_in"))
    assert "Clip 2 of 4" in resumed["about"] and "continue where you stopped" in resumed["status"]


def test_import_rejects_corrupt_video(studio, seeded_study, client_for, tmp_path):
    lead = client_for(studio.url)
    sign_in_admin(lead, ADMIN_PASSWORD)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    from gradio_client import handle_file

    message, details, *_ = lead.predict("app-study", "", "hydrodissection", [handle_file(str(bad))], [],
                                        api_name="/study_import_real")
    details = value_of(details)
    assert message.startswith("Import refused") and "Nothing was imported" in details
    # Named as damaged, not as a difference raters could tell (issue 20, item 7).
    assert "These clips cannot be shown to raters" in details and "broken.mp4" in details
    assert "could tell" not in details
    with pytest.raises(Exception, match="does not exist"):
        lead.predict("app-study", str(tmp_path / "nowhere"), "", [], [], api_name="/study_import_real")
    assert lead.predict("app-study", api_name="/study_results")[0]  # still usable


def test_kiosk_generates_in_queue_and_has_no_admin(kiosk, studio, seeded_study, client_for):
    client = client_for(kiosk.url)
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert names == {"/kiosk_generate"}  # a visitor picks a step; no seed or other technical field
    from ophora.vocabulary import load_phases

    clip, message = client.predict(load_phases()[0].templates[0], api_name="/kiosk_generate")
    frames, _ = read_clip(video_path(clip))
    assert frames.shape[0] == 9 and message.startswith("Done: your clip took ")
    # The visitor's copy (the served file, no sidecar) still carries its provenance and says synthetic.
    provenance = json.loads(read_container_metadata(video_path(clip))["comment"])
    assert provenance["synthetic"] is True and isinstance(provenance["seed"], int)


def test_kiosk_file_names_ignore_the_client_session_hash(kiosk, app_data, client_for):
    """The session hash is whatever the client sends; a '../' in it must not place files outside the kiosk folder."""
    client = client_for(kiosk.url)
    client.session_hash = "../../kiosk-escape"
    from ophora.vocabulary import load_phases

    clip, _ = client.predict(load_phases()[0].templates[0], api_name="/kiosk_generate")
    assert video_path(clip).is_file()
    assert not list(app_data.parent.glob("kiosk-escape*")) and not list(app_data.glob("kiosk-escape*"))
    assert all(p.parent == app_data / "kiosk" for p in (app_data / "kiosk").rglob("*.mp4"))


def test_kiosk_status_line_goes_from_waiting_to_running_to_done(kiosk, studio, client_for):
    """While the GPU is busy, each visitor's one status line shows their place and wait, then the step and time
    left, then the total time including the wait; the GPU still runs one clip at a time."""
    from ophora.vocabulary import load_phases

    template = load_phases()[0].templates[0]
    operator = client_for(studio.url)
    long_job = operator.submit(PROMPTS[0], "", "3", 400, 6.0, 9, None, None, 8, api_name="/generate")
    deadline = time.time() + 60
    while not (long_job.status().progress_data and "step" in (long_job.status().progress_data[0].desc or "")):
        assert time.time() < deadline, "the studio job never started"
        time.sleep(0.1)
    first, second = client_for(kiosk.url), client_for(kiosk.url)
    first_job = first.submit(template, api_name="/kiosk_generate")
    time.sleep(1.0)
    second_job = second.submit(template, api_name="/kiosk_generate")
    deadline = time.time() + 30
    while not any("3rd in line" in out[1] for out in second_job.outputs()):
        assert time.time() < deadline, f"no place for the second visitor: {second_job.outputs()}"
        time.sleep(0.2)
    assert any(re.match(r"You are 2nd in line, about \d+ (s|min)\.$", out[1]) for out in first_job.outputs())
    operator.predict(api_name="/cancel")
    assert "Cancelled" in long_job.result(timeout=60)[1]
    first_done, second_done = first_job.result(timeout=120)[1], second_job.result(timeout=120)[1]
    lines = [out[1] for out in second_job.outputs()]
    assert re.match(r"Done: your clip took \d+ s, of which \d+ s waiting in line\.$", second_done), lines
    assert first_done.startswith("Done: your clip took "), first_done


def test_rerun_from_history_reproduces_the_clip(studio, seeded_study, client_for):
    """The seed and settings recorded in history give back the same frames (seed above 2**53 included)."""
    import numpy as np

    client = client_for(studio.url)
    values = client.predict(seeded_study.history_ids[1], api_name="/history_rerun")[:9]
    again = client.predict(*values, api_name="/generate")
    original = History(studio.config.history_dir).get(seeded_study.history_ids[1])
    new = History(studio.config.history_dir).get(str(again[5]["value"] if isinstance(again[5], dict) else again[5]))
    assert new.provenance["seed"] == 2**62 + 11
    assert np.array_equal(read_clip(original.study_master)[0], read_clip(new.study_master)[0])


def test_study_from_uploaded_yaml_and_from_pasted_text(studio, rater_station, client_for, tmp_path):
    """The study lead's second way to create a study: a YAML file (upload or paste) that names its clip folders."""
    from gradio_client import handle_file

    from tests.study.helpers import make_video

    real = tmp_path / "real"
    for i in range(2):
        make_video(real / f"case_{i}_hydrodissection.mp4", 10 + i, size="96x64")
    text = f"""
slug: yaml-study
title: From a file
instructions: Rate each clip.
criteria:
  - name: realism
    scale: {{min: 1, max: 5, anchors: {{1: "clearly implausible", 5: "indistinguishable from real"}}}}
phases: cataract
ask_phase: true
turing_test: true
clip_sets:
  - {{name: real, source: real, model: real, folder: "{real}"}}
raters: [ann, ben]
blinding: {{width: 96, height: 64}}
"""
    upload = tmp_path / "study.yaml"
    upload.write_text(text, encoding="utf-8")
    lead = client_for(studio.url)
    sign_in_admin(lead, ADMIN_PASSWORD)
    message, codes, *_ = lead.predict(handle_file(str(upload)), "", api_name="/study_create_yaml")
    assert "Created **yaml-study** (a draft) with 2 raters and 2 clips" in message
    assert sorted(row[0] for row in table_rows(codes)) == ["ann", "ben"]
    pasted = text.replace("yaml-study", "yaml-pasted")
    assert "yaml-pasted" in lead.predict(None, pasted, api_name="/study_create_yaml")[0]
    with pytest.raises(Exception, match="Not valid YAML"):
        lead.predict(None, "slug: [unclosed", api_name="/study_create_yaml")
    binary = tmp_path / "clip.yaml"
    binary.write_bytes(b"\x00\xff\xfe not text" * 10)
    with pytest.raises(Exception, match="not a text .UTF-8. YAML file"):
        lead.predict(handle_file(str(binary)), "", api_name="/study_create_yaml")
    with pytest.raises(Exception, match="Upload a study YAML"):
        lead.predict(None, "", api_name="/study_create_yaml")
    # Issue a code to a late rater, then a new one: the old code stops working at the rater station. Each
    # click's codes come back beside the button, with a CSV of exactly those codes.
    _, issued, issued_csv = lead.predict("yaml-study", "cy", api_name="/study_add_rater")
    [[name, first_code]] = table_rows(issued)
    assert video_path(issued_csv).read_text().splitlines() == ["study,rater,access_code", f"yaml-study,cy,{first_code}"]
    rater = client_for(rater_station.url)
    with pytest.raises(Exception, match="not open for rating yet"):
        rater.predict(first_code, api_name="/rate_sign_in")
    assert "is **open**" in lead.predict("yaml-study", api_name="/study_open")[1]
    assert "Clip 1 of 2" in rater_screen(rater.predict(first_code, api_name="/rate_sign_in"))["about"]
    _, reissued, reissued_csv = lead.predict("yaml-study", "cy, ann", api_name="/study_reissue_code")
    [[_, second_code], [other, _]] = table_rows(reissued)
    assert name == "cy" and other == "ann" and second_code != first_code
    assert len(video_path(reissued_csv).read_text().splitlines()) == 3
    with pytest.raises(Exception, match="unknown access code"):
        rater.predict(first_code, api_name="/rate_sign_in")
    assert "Signed in as **cy**" in rater_screen(rater.predict(second_code, api_name="/rate_sign_in"))["status"]


def form_args(slug: str, raters: str, *, width=144, height=96, fps=8, seconds=1.0, fit="crop", repeats=0,
              washout_days=None) -> list:
    return [slug, "Life cycle", "Rate.", "", True, True, raters, repeats, 1, width, height, fps, seconds, fit,
            "phase_template", washout_days]


def test_study_life_cycle_from_the_studies_tab(studio, rater_station, seeded_study, client_for):
    """Draft -> open -> locked from the Studies tab, with the blinding settings of the form and the clip key."""
    import pandas as pd

    lead = client_for(studio.url)
    sign_in_admin(lead, ADMIN_PASSWORD)
    with pytest.raises(Exception, match="even"):
        lead.predict(*form_args("odd-study", "x", width=145), api_name="/study_create")
    with pytest.raises(Exception, match="Length in seconds: must be more than 0"):
        lead.predict(*form_args("zero-study", "x", seconds=0), api_name="/study_create")
    message, codes, *_, codes_csv = lead.predict(*form_args("cycle-study", "gil"), api_name="/study_create")
    [[_, code]] = table_rows(codes)
    assert video_path(codes_csv).read_text().splitlines()[1] == f"cycle-study,gil,{code}"
    lead.predict("cycle-study", seeded_study.history_ids, "hydrodissection", [], api_name="/study_import_history")
    from ophora.study.store import StudyStore

    with StudyStore(studio.config.database_url) as db:
        definition = db.definition("cycle-study")
    assert (definition.blinding.width, definition.blinding.height, definition.blinding.fps) == (144, 96, 8)
    assert definition.blinding.max_seconds == 1.0 and definition.blinding.fit == "crop"
    assert "is **draft**" in lead.predict("cycle-study", api_name="/study_status")[0]
    key = pd.read_csv(video_path(lead.predict("cycle-study", api_name="/study_clip_key")))
    assert len(key) == 2 and set(key.source) == {"generated"} and key.clip_id.str.startswith("c").all()

    # Mistakes are corrected before the first rating: relabel one clip, remove the other.
    first, second = key.clip_id
    with pytest.raises(Exception, match="Say why"):
        lead.predict("cycle-study", first, "", "capsulorhexis", "", api_name="/study_relabel_clip")
    assert "Relabelled" in lead.predict("cycle-study", first, "wrong phase", "capsulorhexis", "fixed-set",
                                        api_name="/study_relabel_clip")
    assert "Removed clip" in lead.predict("cycle-study", second, "duplicate", api_name="/study_remove_clip")
    key = pd.read_csv(video_path(lead.predict("cycle-study", api_name="/study_clip_key")))
    assert list(key.clip_id) == [first] and key.phase[0] == "capsulorhexis" and key.clip_set[0] == "fixed-set"
    with StudyStore(studio.config.database_url) as db:
        audit = db.audit_log("cycle-study")
    assert {"relabel_clip", "remove_clip"} <= set(audit.action)

    rater = client_for(rater_station.url)
    with pytest.raises(Exception, match="not open for rating yet"):
        rater.predict(code, api_name="/rate_sign_in")
    assert "is **open**" in lead.predict("cycle-study", api_name="/study_open")[1]
    screen = rater_screen(rater.predict(code, api_name="/rate_sign_in"))
    screen = rater_screen(rater.predict(*answer_args(screen, 3), api_name="/rate_submit"))
    with pytest.raises(Exception, match="already has 1 rating"):
        lead.predict("cycle-study", first, "too late", api_name="/study_remove_clip")
    with pytest.raises(Exception, match="only a draft"):
        lead.predict("cycle-study", "cycle-study", api_name="/study_delete")
    with pytest.raises(Exception, match="Type the study's short name"):
        lead.predict("cycle-study", "cycle", "analysis starts", api_name="/study_lock")
    assert "is **locked**" in lead.predict("cycle-study", "cycle-study", "analysis starts", api_name="/study_lock")[1]
    with pytest.raises(Exception, match="locked"):  # going back to change the answer
        rater.predict(api_name="/rate_back")
    with StudyStore(studio.config.database_url) as db:
        audit = db.audit_log("cycle-study")
    lock = audit[audit.action == "lock_study"].iloc[0]
    assert lock.reason == "analysis starts"


def test_delete_a_draft_study_with_its_files(studio, seeded_study, client_for):
    lead = client_for(studio.url)
    sign_in_admin(lead, ADMIN_PASSWORD)
    lead.predict(*form_args("doomed-study", "jo"), api_name="/study_create")
    lead.predict("doomed-study", seeded_study.history_ids, "hydrodissection", [], api_name="/study_import_history")
    blinded = studio.config.studies_dir / "doomed-study" / "blinded"
    assert len(list(blinded.glob("*.mp4"))) == 2
    with pytest.raises(Exception, match="Type the study's short name"):
        lead.predict("doomed-study", "", api_name="/study_delete")
    message, _, picker, _ = lead.predict("doomed-study", "doomed-study", api_name="/study_delete")
    assert "Deleted the draft study **doomed-study** and its 2 blinded files" in message
    assert "doomed-study" not in [c[0] for c in picker["choices"]] and not list(blinded.glob("*.mp4"))


def test_import_refuses_clip_sets_raters_could_tell_apart(studio, seeded_study, client_for, tmp_path):
    """Real clips smaller than the study size (enlarged: softer) are refused with the table per clip set and a
    checkbox to accept the difference; accepting it imports them and records the waiver. A clip shorter than
    the study length cannot be accepted."""
    from tests.study.helpers import make_video

    lead = client_for(studio.url)
    sign_in_admin(lead, ADMIN_PASSWORD)
    lead.predict(*form_args("parity-study", "hal"), api_name="/study_create")
    assert "Imported 2 of 2" in lead.predict("parity-study", seeded_study.history_ids, "hydrodissection", [],
                                             api_name="/study_import_history")[0]
    small = tmp_path / "small"
    for i in range(2):
        make_video(small / f"case_{i}.mp4", 20 + i, size="64x48")
    message, note, table, accept = lead.predict("parity-study", str(small), "hydrodissection", [], [],
                                                api_name="/study_import_real")
    assert "Import refused" in message and "Size: " in note["value"] and "accept-difference" not in note["value"] and "Nothing was imported" in note["value"]
    rows = {row[0]: row for row in table_rows(value_of(table))}
    assert set(rows) == {"studio-history", "studio-real"}
    assert [value for _, value in accept["choices"]] == ["size"] and accept["visible"] is True
    from ophora.study.store import StudyStore

    with StudyStore(studio.config.database_url) as db:
        assert len(db.clips_frame("parity-study")) == 2  # nothing of the refused import
    message, *_ = lead.predict("parity-study", str(small), "hydrodissection", [], ["size"],
                               api_name="/study_import_real")
    assert "Imported 2 real clips" in message and "Accepted differences: size" in message
    with StudyStore(studio.config.database_url) as db:
        assert [w["property"] for w in db.accepted_differences("parity-study")] == ["size"]
        assert (db.audit_log("parity-study").action == "accept_difference").sum() == 1
    short = tmp_path / "short"
    make_video(short / "case_short.mp4", 30, size="144x96", seconds=0.5)
    message, note, _, accept = lead.predict("parity-study", str(short), "hydrodissection", [], [],
                                            api_name="/study_import_real")
    assert "Import refused" in message and "case_short.mp4" in note["value"] and "Length: " in note["value"]
    assert accept["visible"] is False  # a short clip cannot be accepted, only replaced
    # What to do, in the app's words: shorten the clips in Study settings; the draft's settings can change.
    assert "set Length in seconds to 0.5 in Study settings" in note["value"] and "max_seconds" not in note["value"]
    shown = lead.predict("parity-study", api_name="/study_load_draft")
    assert shown[0] == "parity-study" and shown[10] == "1" and "hal" in shown[6]
    saved, new_codes, _ = lead.predict("parity-study", *shown[1:6], "hal, ida", *shown[7:10], "0.5", *shown[11:13],
                                       api_name="/study_save_draft")
    assert "Saved the settings" in saved and [row[0] for row in table_rows(new_codes)] == ["ida"]
    message, *_ = lead.predict("parity-study", str(short), "hydrodissection", [], [], api_name="/study_import_real")
    assert "Imported 1 real clip " in message
    with StudyStore(studio.config.database_url) as db:
        assert db.definition("parity-study").blinding.max_seconds == 0.5
        clips = db.clips_frame("parity-study")
        assert db.audit_log("parity-study").action.isin(["update_draft"]).sum() == 1
    assert len(clips) == 5 and {read_clip(Path(p))[0].shape[0] for p in clips.blinded_path} == {4}  # all re-blinded


def test_rater_sees_when_repeats_unlock(studio, rater_station, seeded_study, client_for):
    """A repeat reading waits for its washout (here a day): after the first readings the rater is told when
    the rest unlocks, and moving back and forth skips the waiting reading."""
    lead = client_for(studio.url)
    sign_in_admin(lead, ADMIN_PASSWORD)
    _, codes, *_ = lead.predict(*form_args("washout-study", "ivy", repeats=1, washout_days=1),
                                api_name="/study_create")
    [[_, code]] = table_rows(codes)
    lead.predict("washout-study", seeded_study.history_ids, "hydrodissection", [], api_name="/study_import_history")
    lead.predict("washout-study", api_name="/study_open")
    rater = client_for(rater_station.url)
    screen = rater_screen(rater.predict(code, api_name="/rate_sign_in"))
    assert "Clip 1 of 3" in screen["about"]
    screen = rater_screen(rater.predict(*answer_args(screen, 3), api_name="/rate_submit"))
    screen = rater_screen(rater.predict(*answer_args(screen, 3), api_name="/rate_submit"))
    assert "2 of 3 rated" in screen["status"] and "unlock on" in screen["status"] and "come back" in screen["status"]
    back = rater_screen(rater.predict(api_name="/rate_back"))
    assert "Clip 2 of 3" in back["about"]
    ahead = rater_screen(rater.predict(api_name="/rate_next"))  # past the answered clips: the waiting notice again
    assert "unlock on" in ahead["status"] and not value_of(ahead["video"])


@pytest.mark.slow
def test_example_study_file_uploads_and_runs(studio, rater_station, client_for):
    """studies/example_cataract.yaml, uploaded as a study lead would: its shipped stand-in clips are found
    beside it, blinded and rated."""
    from gradio_client import handle_file

    repo = Path(__file__).resolve().parents[2]
    lead = client_for(studio.url)
    sign_in_admin(lead, ADMIN_PASSWORD)
    message, codes, *_ = lead.predict(handle_file(str(repo / "studies" / "example_cataract.yaml")), "",
                                      api_name="/study_create_yaml")
    assert "Created **example-cataract** (a draft) with 3 raters and 6 clips" in message
    assert "is **open**" in lead.predict("example-cataract", api_name="/study_open")[1]
    code = table_rows(codes)[0][1]
    rater = client_for(rater_station.url)
    screen = rater_screen(rater.predict(code, api_name="/rate_sign_in"))
    assert "Clip 1 of 7" in screen["about"] and screen["instruction"].startswith("**Instruction:**")
    screen = rater_screen(rater.predict(*answer_args(screen, 4), api_name="/rate_submit"))
    assert "Clip 2 of 7" in screen["about"]


def test_refused_clips_of_a_study_file_keep_the_codes(studio, client_for, tmp_path):
    """A study file whose clip sets differ is created as a draft without clips, and the codes (shown once)
    still come back, with what to change."""
    from tests.study.helpers import make_video

    for i in range(2):
        make_video(tmp_path / "small" / f"case_{i}_hydrodissection.mp4", 40 + i, size="64x48")
        make_video(tmp_path / "large" / f"case_{i}_hydrodissection.mp4", 50 + i, size="144x96")
    text = f"""
slug: mismatched-study
title: Mismatched sets
criteria: [{{name: realism, scale: {{min: 1, max: 5}}}}]
clip_sets:
  - {{name: small, source: real, folder: "{tmp_path / 'small'}"}}
  - {{name: large, source: generated, model: other, folder: "{tmp_path / 'large'}"}}
raters: [kim]
blinding: {{width: 144, height: 96, fps: 8}}
"""
    lead = client_for(studio.url)
    sign_in_admin(lead, ADMIN_PASSWORD)
    message, codes, *_, codes_csv = lead.predict(None, text, api_name="/study_create_yaml")
    assert "with 1 rater and 0 clips" in message and "not imported" in message and "Size: " in message
    assert table_rows(codes)[0][0] == "kim" and video_path(codes_csv).is_file()
