"""Who can reach what, checked by calling every endpoint over HTTP, as an anonymous client and as a rater.

The rule: a rater (or anyone reaching a rater station) never receives provenance, model names, clip
sources, original file names, the generation history or another rater's data; nobody without the admin
password can run a study-lead action; Gradio never serves the history or study folders by path.
"""

from __future__ import annotations

import json

import pytest
import requests

from tests.app.conftest import ADMIN_PASSWORD
from tests.app.helpers import answer_args, rater_screen

ADMIN_ENDPOINTS = ["/study_create", "/study_create_yaml", "/study_import_history", "/study_import_real",
                   "/study_add_rater", "/study_reissue_code", "/study_results", "/study_export", "/study_refresh",
                   "/study_plan",

                   "/study_status", "/study_open", "/study_lock", "/study_clip_key", "/study_delete",
                   "/study_relabel_clip", "/study_remove_clip",
                   "/history_add_to_study"]


def forbidden_markers(seeded_study) -> list[str]:
    return [*seeded_study.history_ids, *[n.removesuffix(".mp4") for n in seeded_study.real_names], "alice", "bob", "carol",
            "tiny", "studio-history", "studio-real", "ophora", "seed", "provenance", "history_id", "sha256",
            "original_path", "clip_set", "fingerprint", "/history/", ADMIN_PASSWORD]


def call_every_endpoint(client) -> list[str]:
    """Call each event the page defines (documented or not) with empty inputs; return what came back."""
    config = requests.get(client.src.rstrip("/") + "/config", timeout=10).json()
    seen = []
    for index, dependency in enumerate(config["dependencies"]):
        if dependency.get("api_visibility") == "private":
            continue
        n_inputs = len([i for i in dependency["inputs"]
                        if not _is_state(config, i)])
        try:
            seen.append(json.dumps(client.predict(*([None] * n_inputs), fn_index=index), default=str))
        except Exception as error:  # noqa: BLE001 - refusals are the expected outcome for most
            seen.append(f"refused: {error}")
    return seen


def _is_state(config, component_id) -> bool:
    return any(c["id"] == component_id and c.get("type") == "state" for c in config["components"])


def test_rater_station_exposes_only_rating(rater_station, seeded_study, client_for):
    client = client_for(rater_station.url)
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert names == {"/rate_sign_in", "/rate_submit", "/rate_back", "/rate_next"}
    page = requests.get(rater_station.url + "config", timeout=10).text
    for marker in forbidden_markers(seeded_study):
        assert marker not in page, marker


def test_anonymous_client_gets_nothing_from_the_rater_station(rater_station, seeded_study, client_for):
    client = client_for(rater_station.url)
    for endpoint in ("/rate_submit", "/rate_back", "/rate_next"):
        args = [None] * 13 if endpoint == "/rate_submit" else []
        with pytest.raises(Exception, match="Sign in with the access code"):
            client.predict(*args, api_name=endpoint)
    with pytest.raises(Exception, match="unknown access code"):
        client.predict("0000-guess", api_name="/rate_sign_in")
    replies = call_every_endpoint(client)
    assert replies
    for marker in forbidden_markers(seeded_study):
        assert not any(marker in reply for reply in replies), marker


def test_signed_in_rater_sees_only_blinded_data(rater_station, seeded_study, client_for):
    client = client_for(rater_station.url)
    screen = rater_screen(client.predict(seeded_study.codes["dave"], api_name="/rate_sign_in"))
    if "Clip 1 of" in screen["about"]:  # answer one clip so that going back returns a clip too
        screen = rater_screen(client.predict(*answer_args(screen, 3), api_name="/rate_submit"))
    video = screen["video"]
    name = video["orig_name"] if isinstance(video, dict) and video.get("orig_name") else None
    replies = [json.dumps(screen["all"], default=str)] + call_every_endpoint(client)
    assert any(".mp4" in reply for reply in replies[1:])  # some calls did answer with a clip
    markers = forbidden_markers(seeded_study)
    for marker in markers:
        assert not any(marker in reply for reply in replies), marker
    # The file reaches the browser under its opaque blind id only.
    assert name is not None and name.startswith("c") and len(name) == len("c0123456789abcdef.mp4")


def test_studio_admin_actions_need_the_password(studio, seeded_study, client_for):
    client = client_for(studio.url)
    config = requests.get(studio.url + "config", timeout=10).json()
    named = {"/" + d["api_name"]: d for d in config["dependencies"] if d.get("api_name")}
    types = {c["id"]: c.get("type") for c in config["components"]}
    for endpoint in ADMIN_ENDPOINTS:
        # Empty values of the right kind (a checkbox group refuses None before any handler runs).
        args = [[] if types[i] == "checkboxgroup" else None for i in named[endpoint]["inputs"]
                if not _is_state(config, i)]
        with pytest.raises(Exception, match="Study lead only"):
            client.predict(*args, api_name=endpoint)
    with pytest.raises(Exception, match="Wrong admin password"):
        client.predict("not-the-password", api_name="/admin_sign_in")
    with pytest.raises(Exception, match="Study lead only"):  # a failed sign-in grants nothing
        client.predict("app-study", api_name="/study_results")
    assert ADMIN_PASSWORD not in json.dumps(config)


def test_private_folders_are_never_served_by_path(studio, rater_station, seeded_study, app_data):
    history_clip = app_data / "history" / f"{seeded_study.history_ids[0]}.mp4"
    blinded = sorted((app_data / "studies" / seeded_study.slug / "blinded").glob("*.mp4"))
    assert blinded  # the rater's copies: their names are the blind ids, their folder must stay private
    from pathlib import Path

    outside = [Path(__file__).resolve().parents[2] / "launch.py", Path("/etc/passwd")]  # the working folder, the OS
    for path in (history_clip, history_clip.with_suffix(".json"), app_data / "studies.db", blinded[0], *outside):
        assert path.is_file()
        for app in (studio, rater_station):
            for route in (f"gradio_api/file={path}", f"file={path}"):
                reply = requests.get(f"{app.url}{route}", timeout=10)
                assert reply.status_code in (403, 404), (route, path)
                assert b"ftyp" not in reply.content[:16] and b"SQLite" not in reply.content[:16], (route, path)
                assert b"root:" not in reply.content and b"GRADIO_ANALYTICS" not in reply.content, (route, path)


def test_analytics_off_and_loopback_only(studio, rater_station, kiosk):
    import os
    import subprocess
    import sys
    from pathlib import Path

    for running in (studio, rater_station, kiosk):
        assert running.demo.analytics_enabled is False
        assert running.demo.server_name == "127.0.0.1"
    # launch.py turns analytics off before Gradio is imported, even when the user's environment says otherwise.
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "True"}
    out = subprocess.run([sys.executable, "-c", "import launch, gradio.analytics as a; print(a.analytics_enabled())"],
                         check=False, cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr


def test_rater_station_serves_only_the_rating_routes(rater_station, studio):
    """No uploads and none of Gradio's other routes (direct /call and /run APIs, component servers, streams,
    the proxy, OpenAPI) on a rater station: only the page, its queue and the staged clips."""
    config = requests.get(rater_station.url + "config", timeout=10).json()
    assert config["max_file_size"] == 0  # Gradio's own upload limit, in case the route ever came back
    upload = {"files": ("clip.mp4", b"\x00" * 64, "video/mp4")}
    assert requests.post(rater_station.url + "gradio_api/upload", files=upload, timeout=10).status_code == 404
    # The studio imports uploaded real clips, so the same request works there: the refusal is the station's own.
    assert requests.post(studio.url + "gradio_api/upload", files=upload, timeout=10).status_code == 200
    for route in ("gradio_api/call/rate_sign_in", "gradio_api/call/v2/rate_sign_in", "gradio_api/run/rate_sign_in",
                  "gradio_api/api/rate_sign_in", "gradio_api/openapi.json", "gradio_api/component_server",
                  "gradio_api/upload_progress?upload_id=x", "gradio_api/proxy=http://127.0.0.1/",
                  "gradio_api/stream/x", "gradio_api/process_recording", "gradio_api/queue/status",
                  "gradio_api/reset", "gradio_api/mcp/sse", "monitoring", "login",
                  "gradio_api/vibe-edit", "manifest.json"):
        for method in ("GET", "POST"):
            reply = requests.request(method, rater_station.url + route, json={"data": [None]}, timeout=10)
            assert reply.status_code == 404, (method, route, reply.status_code)
    for route in ("", "config", "gradio_api/info", "theme.css"):
        assert requests.get(rater_station.url + route, timeout=10).status_code == 200, route
