"""Real app servers on free 127.0.0.1 ports (studio, rater station, kiosk) sharing one data folder and study DB."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

ADMIN_PASSWORD = "lead-password-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Running:
    url: str
    demo: object
    config: object


def _start(config) -> Running:
    from app.server import launch_app

    port = free_port()
    demo = launch_app(config, host="127.0.0.1", port=port, block=False, open_browser=False)
    return Running(url=f"http://127.0.0.1:{port}/", demo=demo, config=config)


@pytest.fixture(scope="session")
def app_data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("studio-data")


@pytest.fixture(scope="session")
def studio(app_data):
    from app.config import AppConfig

    running = _start(AppConfig(mode="studio", model="tiny", data_dir=app_data, admin_password=ADMIN_PASSWORD))
    yield running
    running.demo.close()


@pytest.fixture(scope="session")
def rater_station(app_data):
    from app.config import AppConfig

    running = _start(AppConfig(mode="rater", data_dir=app_data))
    yield running
    running.demo.close()


@pytest.fixture(scope="session")
def kiosk(app_data, studio):
    from app.config import AppConfig

    # Shares the studio's loaded tiny pipeline (one model in memory, as one GPU would have).
    config = AppConfig(mode="kiosk", model="tiny", data_dir=app_data, kiosk_max_steps=2)
    from app.server import build_app, launch_app

    demo = build_app(config, service=studio.demo.ophora_service)
    port = free_port()
    launch_app(config, port=port, block=False, demo=demo)
    yield Running(url=f"http://127.0.0.1:{port}/", demo=demo, config=config)
    demo.close()


@pytest.fixture()
def client_for():
    """A fresh gradio_client (its own session) for an app URL."""
    from gradio_client import Client

    clients = []

    def make(url: str):
        client = Client(url, verbose=False, download_files=False)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@dataclass
class SeededStudy:
    slug: str
    history_ids: list[str]
    codes: dict[str, str]
    real_names: list[str]
    provenance: dict


@pytest.fixture(scope="session")
def seeded_study(studio, tmp_path_factory) -> SeededStudy:
    """Two clips generated with the tiny model, a study with six raters (alice, bob: HTTP flows; carol: resume;
    dave: security checks; erin, fay: the browser), those clips and two real clips; the study is opened."""
    from gradio_client import Client

    from tests.app.helpers import PROMPTS, generate, sign_in_admin, table_rows, value_of
    from tests.study.helpers import make_video

    client = Client(studio.url, verbose=False, download_files=False)
    first = generate(client, PROMPTS[0], seed=7)
    second = generate(client, PROMPTS[1], seed=2**62 + 11)
    ids = [value_of(first[5]), value_of(second[5])]
    sign_in_admin(client, ADMIN_PASSWORD)
    # Blinded to 144x96 at 8 fps, 1 s long: the tiny model's 9-frame clips and the 1 s real clips both fit.
    out = client.predict("app-study", "App study", "Rate every clip.", "", True, True,
                         "alice, bob, carol, dave, erin, fay", 0, 3, 144, 96, 8, 1.0, "crop", "phase_template", None,
                         api_name="/study_create")
    codes = {name: code for name, code in table_rows(out[1])}
    # The free-text clip names no phase: the lead gives it one (phase_template shows that phase's wording).
    imported = client.predict("app-study", ids, "hydrodissection", [], api_name="/study_import_history")
    assert "Imported 2 of 2" in imported[0], imported
    real = tmp_path_factory.mktemp("real-clips")
    names = [f"secret_patient_case_{i}.mp4" for i in range(2)]
    for i, name in enumerate(names):
        make_video(real / name, i, size="144x96")  # the study size: no clip set is enlarged
    imported = client.predict("app-study", str(real), "hydrodissection", [], [], api_name="/study_import_real")
    assert "Imported 2 real clips" in imported[0], imported
    client.predict("app-study", api_name="/study_open")
    client.close()
    return SeededStudy("app-study", ids, codes, names, first[3])
