"""launch.py as a user runs it, refusals of unsafe launches, and the app's behaviour without weights."""

from __future__ import annotations

import os
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
])
def test_unsafe_launches_are_refused(args, message, capsys):
    import launch

    with pytest.raises(SystemExit) as exit_:
        launch.main(["--model", "tiny", "--no-browser", *args])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


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
