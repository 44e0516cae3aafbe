"""The studio, rater station and kiosk driven over HTTP with gradio_client, as their pages do."""

from __future__ import annotations

import json
import time

import pytest
from gradio_client import Client

from app.history import History
from ophora.generation.video import read_clip, read_container_metadata
from tests.app.conftest import ADMIN_PASSWORD
from tests.app.helpers import (PROMPTS, answer_args, generate, rate_all, rater_screen, sign_in_admin, table_rows,
                               video_path)


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
        client.predict(PROMPTS[0], "", "twelve", 2, 6.0, 9, 0, 0, 8, api_name="/generate")
    with pytest.raises(Exception, match="instruction is empty"):
        client.predict("   ", "", "1", 2, 6.0, 9, 0, 0, 8, api_name="/generate")
    with pytest.raises(Exception, match="Height must be a multiple"):
        client.predict(PROMPTS[0], "", "1", 2, 6.0, 9, 100, 0, 8, api_name="/generate")
    seed = client.predict(api_name="/random_seed")
    assert 0 <= int(seed) < 2**63
    out = generate(client, PROMPTS[0], seed=int(seed))
    assert video_path(out[0]).is_file()


def test_cancel_stops_a_running_generation(studio, client_for):
    client = client_for(studio.url)
    job = client.submit(PROMPTS[0], "", "3", 400, 6.0, 9, 0, 0, 8, api_name="/generate")
    deadline = time.time() + 60
    while time.time() < deadline:
        status = job.status()
        if status.progress_data and "step" in (status.progress_data[0].desc or ""):
            break
        time.sleep(0.1)
    assert status.progress_data and "about" in status.progress_data[0].desc, "no step progress with an ETA"
    assert status.progress_data[0].length == 400
    assert "Cancelling" in client.predict(api_name="/cancel")
    with pytest.raises(Exception, match="Cancelled"):
        job.result(timeout=60)
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
        fresh.close()
    finally:
        demo.close()


def test_two_raters_rate_change_and_results(studio, rater_station, seeded_study, client_for):
    alice, bob = client_for(rater_station.url), client_for(rater_station.url)
    final = rate_all(alice, seeded_study.codes["alice"], score=4)
    assert "4/4 rated" in final["status"]
    rate_all(bob, seeded_study.codes["bob"], score=2)
    # Alice goes back one clip; changing the answer needs a reason and is audited.
    back = rater_screen(alice.predict(api_name="/rate_back"))
    assert "Clip 4 of 4" in back["about"] and back["reason"]["visible"] is True
    with pytest.raises(Exception, match="say why"):
        alice.predict(*answer_args(back, 5), api_name="/rate_submit")
    changed = rater_screen(alice.predict(*answer_args(back, 5, reason="looked again"), api_name="/rate_submit"))
    assert "Changed your answer" in changed["status"]

    lead = client_for(studio.url)
    sign_in_admin(lead, ADMIN_PASSWORD)
    progress, fig_c, fig_p, reliability, turing, phase, _ = lead.predict("app-study", api_name="/study_results")
    rows = {r[0]: r for r in table_rows(progress)}
    assert rows["alice"][1:3] == [4, 4] and rows["bob"][1:3] == [4, 4] and rows["carol"][1] == 0
    assert fig_c is not None and fig_p is not None
    assert table_rows(reliability) and table_rows(turing)
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

    with pytest.raises(Exception, match="could not re-encode"):
        lead.predict("app-study", "", "hydrodissection", [handle_file(str(bad))], api_name="/study_import_real")
    with pytest.raises(Exception, match="does not exist"):
        lead.predict("app-study", str(tmp_path / "nowhere"), "", [], api_name="/study_import_real")
    assert lead.predict("app-study", api_name="/study_results")[0]  # still usable


def test_kiosk_generates_in_queue_and_has_no_admin(kiosk, studio, seeded_study, client_for):
    client = client_for(kiosk.url)
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert names == {"/kiosk_generate", "/kiosk_random_seed"}
    from ophora.vocabulary import load_phases

    clip, message = client.predict(load_phases()[0].templates[0], "5", api_name="/kiosk_generate")
    frames, _ = read_clip(video_path(clip))
    assert frames.shape[0] == 9 and "Done" in message
    # The visitor's copy (the served file, no sidecar) still carries its provenance and says synthetic.
    provenance = json.loads(read_container_metadata(video_path(clip))["comment"])
    assert provenance["synthetic"] is True and provenance["seed"] == 5
