"""launch.py as a user runs it, refusals of unsafe launches, and the app's behaviour without weights."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import torch

from tests.app.conftest import free_port

REPO = Path(__file__).resolve().parents[2]


def _launch(args, tmp_path, **env):
    environment = {**os.environ, "OPHORA_STUDIO_HOME": str(tmp_path / "home"), **env}
    return subprocess.Popen([sys.executable, "launch.py", *args], cwd=REPO, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_launch_tiny_serves_the_studio_on_loopback(tmp_path):
    port = free_port()
    proc = _launch(["--model", "tiny", "--port", str(port), "--no-browser"], tmp_path,
                   OPHORA_ADMIN_PASSWORD="a-long-password")
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                page = requests.get(f"http://127.0.0.1:{port}/", timeout=2)
                if page.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.5)
        else:
            pytest.fail("launch.py did not serve within 120 s")
        assert "Ophora Studio" in page.text
        config = requests.get(f"http://127.0.0.1:{port}/config", timeout=5).json()
        assert "Tiny preview model" in str(config)  # the banner names the model and its caveat
        for host in ("fonts.googleapis.com", "cdn.jsdelivr", "unpkg.com"):
            assert host not in page.text
        cache = tmp_path / "home" / "gradio-cache"
        assert cache.is_dir() and oct(cache.stat().st_mode)[-3:] == "700"
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert "a-long-password" not in output  # a chosen password is never echoed
    assert f"127.0.0.1:{port}" in output


@pytest.mark.parametrize("args, message", [
    (["--share"], "needs --auth"),
    (["--host", "0.0.0.0"], "needs --auth"),
    (["--share", "--auth", "lead:short"], "at least 8 characters"),
    (["--mode", "rater", "--host", "0.0.0.0"], "give --ssl-certfile and --ssl-keyfile, or --allow-plain-http"),
    (["--mode", "rater", "--ssl-certfile", "launch.py"], "HTTPS needs both --ssl-certfile and --ssl-keyfile"),
    (["--mode", "rater", "--ssl-certfile", "launch.py", "--ssl-keyfile", "launch.py"], "cannot serve HTTPS"),
    (["--mode", "rater", "--ssl-certfile", "no-such.crt", "--ssl-keyfile", "k"], "--ssl-certfile no-such.crt: no such"),
    (["--port", "70000"], "--port 70000 is out of range"),
    (["--port", "0"], "--port 0 is out of range"),
    (["--mode", "kiosk", "--kiosk-steps", "800"], "--kiosk-steps must be a whole number from 1 to 500"),
    (["--mode", "kiosk", "--kiosk-steps", "0"], "--kiosk-steps must be a whole number from 1 to 500"),
    (["--mode", "kiosk", "--model", "studies", "--kiosk-speed", "magcache"], "has not been calibrated"),
])
def test_unsafe_or_impossible_launches_are_refused_in_one_line(args, message, capsys):
    """Refused before any model loads (``--model`` names no folder: loading it would fail differently)."""
    import launch

    with pytest.raises(SystemExit) as exit_:
        launch.main(["--model", "no/such/model", "--no-browser", *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_port_in_use_is_refused_before_the_model_loads(capsys):
    import launch

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # --allow-plain-http lets a network bind past the HTTPS rule; the port check then answers.
        for args in (["--port", str(port)], ["--host", "0.0.0.0", "--allow-plain-http", "--port", str(port)]):
            with pytest.raises(SystemExit) as exit_:
                launch.main(["--mode", "rater", "--model", "no/such/model", "--no-browser", *args])
            err = capsys.readouterr().err
            assert exit_.value.code == 2 and f"--port {port} on " in err and "in use" in err, err
            assert len(err.strip().splitlines()) == 1


def test_errors_become_actionable_messages():
    from app.service import OOM_MESSAGE, explain_error
    from ophora.generation.engine import GenerationCancelled, GenerationInputError

    assert explain_error(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")) == OOM_MESSAGE
    assert "model_offload" in OOM_MESSAGE
    assert explain_error(GenerationCancelled("Cancelled after step 3 of 50.")).startswith("Cancelled")
    assert explain_error(GenerationInputError("Seed must be ...")) == "Seed must be ..."


def test_missing_weights_keep_the_app_usable(tmp_path, client_for):
    from app.config import AppConfig
    from app.server import launch_app

    config = AppConfig(mode="studio", model=str(tmp_path / "no-such-model"), data_dir=tmp_path / "data",
                       admin_password="a-long-password")
    port = free_port()
    demo = launch_app(config, port=port, block=False)
    try:
        assert "No such folder" in demo.ophora_service.banner()
        client = client_for(f"http://127.0.0.1:{port}/")
        with pytest.raises(Exception, match="No model loaded"):
            client.predict("Inject fluid", "", "1", 2, 6.0, 9, None, None, 8, api_name="/generate")
        client.predict("a-long-password", api_name="/admin_sign_in")  # studies still work
    finally:
        demo.close()


def test_failed_reload_keeps_the_previous_model():
    """A bad choice under "Advanced" must not leave the app without a model."""
    from app.service import GenerationService
    from ophora.generation.engine import GenerationRequest
    from ophora.generation.loading import LoadOptions

    service = GenerationService(LoadOptions(model="tiny"))
    banner = service.reload(precision="fp64")
    assert banner.startswith("**Model in use.**") and "Could not apply the new settings" in banner
    assert "Unknown precision 'fp64'" in banner and service.options.precision == "auto"
    result = service.generate(GenerationRequest(prompt="Inject fluid", seed=1, num_inference_steps=1, num_frames=9),
                              key="test")
    assert result.frames.shape[0] == 9
    assert "Could not apply" not in service.reload(precision="fp32")  # a good reload clears the note


@pytest.mark.slow
def test_rater_station_starts_with_an_empty_admin_password_variable(tmp_path):
    """A rater station has no study lead: OPHORA_ADMIN_PASSWORD= (set, empty) must not stop it."""
    port = free_port()
    proc = _launch(["--mode", "rater", "--port", str(port), "--no-browser"], tmp_path, OPHORA_ADMIN_PASSWORD="")
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if requests.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("the rater station did not serve within 120 s")
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
