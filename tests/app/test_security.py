"""Who can reach what, checked by calling every endpoint over HTTP, as an anonymous client and as a rater.

The rule: a rater (or anyone reaching a rater station) never receives provenance, model names, clip
sources, original file names, the generation history or another rater's data; nobody without the admin
password can run a study-lead action; Gradio never serves the history or study folders by path.
"""

from __future__ import annotations

import json
import logging

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


def test_an_answer_outside_the_choices_is_refused_in_one_line(rater_station, seeded_study, client_for, capfd):
    """Gradio's own choice check would print a traceback holding the value; the store refuses it in a short line."""
    client = client_for(rater_station.url)
    screen = rater_screen(client.predict(seeded_study.codes["dave"], api_name="/rate_sign_in"))
    args = answer_args(screen, 3)
    junk = "x" * 30_000 + MARKER  # a message may quote the first 40 characters of an answer, never more
    phase, args[-5] = args[-5], junk  # the phase answer
    capfd.readouterr()
    with pytest.raises(Exception, match="is not one of"):
        client.predict(*args, api_name="/rate_submit")
    args[-5], args[0] = phase, junk  # a score that is no number on the scale
    with pytest.raises(Exception, match="whole number"):
        client.predict(*args, api_name="/rate_submit")
    out, err = capfd.readouterr()
    assert "Traceback" not in err + out and MARKER not in err + out, (err + out)[-2000:]


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


MARKER = "BODY-MARKER-7f3a"  # must never reach the log


def hostile_requests(base: str, connection) -> list[tuple[str, int]]:
    """Oversized, malformed and unknown calls to a rater station; (what, status) of each reply.

    ``connection()`` opens a fresh ``http.client`` connection (HTTP or HTTPS) to the station."""
    join = "/gradio_api/queue/join"
    seen = []

    def raw(what, method, path, body: bytes = b"", length: int | None = None):
        conn = connection()
        try:
            conn.putrequest(method, path)
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(len(body) if length is None else length))
            conn.endheaders()
            conn.send(body)
            reply = conn.getresponse()
            text = reply.read()
            assert b"Traceback" not in text and MARKER.encode() not in text, (what, text[:300])
            seen.append((what, reply.status))
        finally:
            conn.close()

    # 30 MB announced, a few bytes sent: the answer comes from the header alone (the body is never read).
    raw("30 MB announced", "POST", join, f'{{"data": ["{MARKER}'.encode(), length=30 * 1024**2)
    raw("70 KB sent", "POST", join, json.dumps({"data": [MARKER * 5000], "fn_index": 0}).encode())
    raw("bad JSON", "POST", join, f'{{"data": ["{MARKER}"'.encode())
    raw("not an object", "POST", join, json.dumps([MARKER]).encode())
    raw("no data", "POST", join, json.dumps({"fn_index": 0, "session_hash": MARKER}).encode())
    raw("too few inputs", "POST", join, json.dumps({"data": [], "fn_index": 0, "session_hash": MARKER}).encode())
    for index in (999, -1, "0", True, None):
        raw(f"fn_index {index!r}", "POST", join, json.dumps({"data": [MARKER], "fn_index": index}).encode())
    raw("GET join", "GET", join)
    raw("bad cancel", "POST", "/gradio_api/cancel", f'{{"{MARKER}'.encode())
    raw("bad cancel 2", "POST", "/gradio_api/cancel", json.dumps([MARKER]).encode())
    raw("unknown file", "GET", "/gradio_api/file=no-such-clip.mp4")
    raw("unknown route", "POST", "/gradio_api/upload", MARKER.encode())
    return seen


def test_rater_station_answers_hostile_requests_with_4xx(rater_station, caplog):
    import http.client
    from urllib.parse import urlsplit

    from app.server import RATER_MAX_BODY_BYTES

    address = urlsplit(rater_station.url)
    caplog.set_level("DEBUG")
    servers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "gradio")]
    for logger in servers:  # uvicorn's loggers need not propagate to the root logger caplog listens on
        logger.addHandler(caplog.handler)
    try:
        seen = dict(hostile_requests(rater_station.url,
                                     lambda: http.client.HTTPConnection(address.hostname, address.port, timeout=10)))
    finally:
        for logger in servers:
            logger.removeHandler(caplog.handler)
    assert seen["30 MB announced"] == 413 and seen["70 KB sent"] == 413 and RATER_MAX_BODY_BYTES == 64 * 1024
    assert all(400 <= status < 500 for status in seen.values()), seen
    assert seen["fn_index 999"] == 404 and seen["bad JSON"] == 400 and seen["too few inputs"] == 400
    logged = "\n".join(record.getMessage() + str(record.exc_info or "") for record in caplog.records)
    assert MARKER not in logged and "Traceback" not in logged
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")], logged[-2000:]
    # The rater's own calls still go through (the checked body is handed on unchanged).
    config = requests.get(rater_station.url + "config", timeout=10).json()
    sign_in = next(i for i, d in enumerate(config["dependencies"]) if d.get("api_name") == "rate_sign_in")
    reply = requests.post(rater_station.url + "gradio_api/queue/join", timeout=10,
                          json={"data": ["0000-guess"], "fn_index": sign_in, "session_hash": "s1"})
    assert reply.status_code == 200 and "event_id" in reply.json()


@pytest.mark.slow
def test_rater_station_over_https_reached_from_the_network(tmp_path):
    """launch.py with a self-signed certificate made here, bound to every network (allowed because of TLS):
    the page over HTTPS, no plain HTTP, the same 4xx answers, and a log without any request body."""
    import http.client
    import os
    import ssl
    import subprocess
    import sys
    import time
    from pathlib import Path

    from tests.app.conftest import free_port

    cert, key = tmp_path / "station.crt", tmp_path / "station.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    port = free_port()
    env = {**os.environ, "OPHORA_STUDIO_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "launch.py", "--mode", "rater", "--host", "0.0.0.0", "--port", str(port),
                             "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--no-browser"],
                            cwd=Path(__file__).resolve().parents[2], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"https://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                page = requests.get(url, verify=str(cert), timeout=5)
                break
            except requests.ConnectionError:
                assert time.time() < deadline, "the HTTPS rater station did not serve within 120 s"
                time.sleep(0.5)
        assert page.status_code == 200 and "rater station" in page.text
        with pytest.raises(requests.ConnectionError):  # plain HTTP is not spoken on the station's port
            requests.get(f"http://127.0.0.1:{port}/", timeout=5)
        context = ssl.create_default_context(cafile=str(cert))
        seen = dict(hostile_requests(url, lambda: http.client.HTTPSConnection("127.0.0.1", port, context=context,
                                                                            timeout=10)))
        assert seen["30 MB announced"] == 413 and all(400 <= status < 500 for status in seen.values()), seen
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert f"https://0.0.0.0:{port}" in output or f"https://127.0.0.1:{port}" in output, output[-2000:]
    assert MARKER not in output and "Traceback" not in output and len(output) < 20_000, output[-3000:]
