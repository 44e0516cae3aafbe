"""The app in a real headless Chromium: generate, history, studies dashboard, a rater who reloads and
resumes, the kiosk; screenshots of each tab go to $OPHORA_SCREENSHOTS (default: <temp>/ophora-screenshots).
Refresh the README's images with `OPHORA_SCREENSHOTS=docs/screenshots pytest tests/app/test_browser.py` and
look at them after UI changes; a plain test run never rewrites tracked files."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest

from tests.app.conftest import ADMIN_PASSWORD
from tests.app.helpers import rate_all

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(os.environ.get("OPHORA_SCREENSHOTS") or Path(tempfile.gettempdir()) / "ophora-screenshots")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install_system_deps.sh (Debian's chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    page = context.new_page()
    page.outside_requests = []
    page.on("request", lambda r: None if re.match(r"^(https?://127\.0\.0\.1|data:|blob:)", r.url)
            else page.outside_requests.append(r.url))
    yield page
    context.close()


def shot(page, name: str) -> None:
    """A screenshot for the docs, reduced to a 256-colour PNG so each stays well under 300 KB."""
    import io

    from PIL import Image

    SHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(500)
    image = Image.open(io.BytesIO(page.screenshot(full_page=False, type="png"))).convert("RGB")
    path = SHOTS / f"{name}.png"
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    assert path.stat().st_size < 300_000, f"{path} is {path.stat().st_size} bytes"


def close_toasts(page) -> None:
    """Dismiss notices (the cancelled run, the wrong password) so screenshots show the page itself."""
    for button in page.locator("[data-testid='toast-close']").all():
        if button.is_visible():
            button.click()
    page.wait_for_timeout(300)


def set_steps(page, steps: int) -> None:
    page.fill("#steps input[type=number]", str(steps))
    page.locator("#steps input[type=number]").press("Enter")


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def test_studio_generate_history_and_studies(page, studio, rater_station, seeded_study, client_for):
    page.goto(studio.url)
    page.wait_for_selector("#banner")
    assert "Tiny preview model" in page.inner_text("#banner")
    page.locator("#template input").click()
    page.get_by_role("option").nth(3).click()
    page.wait_for_function("document.querySelector('#prompt textarea').value.length > 10")
    page.click("#dice")
    page.wait_for_function("document.querySelector('#seed textarea, #seed input').value !== '12345'")
    # A long run shows the step counter and ETA; Cancel stops it and the app stays usable.
    set_steps(page, 400)
    page.click("#generate-btn")
    page.wait_for_selector("text=/Denoising step \\d+\\/400/", timeout=60_000)
    shot(page, "generate-progress")
    page.click("#cancel-btn")
    page.wait_for_selector("text=/Cancelled after step/", timeout=60_000)
    set_steps(page, 3)
    page.click("#generate-btn")
    page.wait_for_selector("#gen-video video", timeout=60_000)
    page.wait_for_selector("text=Saved to history", timeout=60_000)
    close_toasts(page)
    shot(page, "generate")

    open_tab(page, "History")
    page.wait_for_selector("#history-table")
    assert page.locator("#history-table").inner_text().count("tiny") >= 3
    shot(page, "history")

    for name in ("alice", "bob"):  # a dashboard with two raters' answers
        rate_all(client_for(rater_station.url), seeded_study.codes[name], score=4 if name == "alice" else 3)
    open_tab(page, "Studies")
    page.fill("#admin-password input", "wrong-password")
    page.click("#admin-signin")
    page.wait_for_selector("text=Wrong admin password")
    assert not page.locator("#admin-panel").is_visible()
    page.fill("#admin-password input", ADMIN_PASSWORD)
    page.click("#admin-signin")
    page.wait_for_selector("#admin-panel", state="visible")
    page.click("#show-results")
    page.wait_for_function("document.querySelector('#progress-table').innerText.includes('alice')")
    page.wait_for_selector(".js-plotly-plot", timeout=30_000)
    page.set_viewport_size({"width": 1280, "height": 1250})
    page.locator("#admin-status").scroll_into_view_if_needed()
    close_toasts(page)
    shot(page, "studies")
    assert not page.outside_requests, page.outside_requests


def test_rater_reloads_and_resumes(page, rater_station, seeded_study):
    code = seeded_study.codes["erin"]
    page.goto(rater_station.url)
    page.fill("#rate-code input", code)
    page.click("#rate-signin")
    page.wait_for_selector("#rate-video video")
    assert "Clip 1 of 4" in page.inner_text("#rate-panel")
    # Keyboard only: digits score the next unscored criterion, R/S answer real or synthetic, Ctrl+Enter submits.
    page.locator("#rate-status").click()
    for key in ("4", "3", "5"):
        page.keyboard.press(key)
    page.locator("#rate-phase input").click()
    page.get_by_role("option", name="hydrodissection").click()
    page.locator("#rate-status").click()
    page.keyboard.press("s")
    page.keyboard.press("4")  # confidence
    shot(page, "rate")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("text=Clip 2 of 4")

    page.reload()
    page.fill("#rate-code input", code)
    page.click("#rate-signin")
    page.wait_for_selector("text=continue where you stopped")
    assert "Clip 2 of 4" in page.inner_text("#rate-panel")
    assert "1/4 rated" in page.inner_text("#rate-status")
    # Frame stepping: ',' and '.' pause and move one frame (1/8 s at the blinded 8 fps).
    page.wait_for_selector("#rate-video video")
    page.locator("#rate-status").click()
    page.keyboard.press(",")
    before = page.evaluate("document.querySelector('#rate-video video').currentTime")
    page.keyboard.press(".")
    after, paused = page.evaluate("[document.querySelector('#rate-video video').currentTime, "
                                  "document.querySelector('#rate-video video').paused]")
    assert paused and abs(after - before - 1 / 8) < 0.01, (before, after)
    # Alt+Left goes back to the answered clip, where a change needs a reason.
    page.keyboard.press("Alt+ArrowLeft")
    page.wait_for_selector("text=Clip 1 of 4")
    page.wait_for_selector("#rate-reason", state="visible")
    assert "You already answered this clip" in page.inner_text("#rate-status")
    assert not page.outside_requests, page.outside_requests


def test_kiosk_gallery_and_queue(page, kiosk, studio, seeded_study, client_for):
    client_for(studio.url).predict(seeded_study.history_ids[0], api_name="/history_to_gallery")
    page.goto(kiosk.url)
    page.wait_for_selector("#kiosk-gallery video", timeout=30_000)
    page.locator("#kiosk-template input").click()
    page.get_by_role("option").first.click()
    page.click("#kiosk-generate")
    page.wait_for_selector("#kiosk-video video", timeout=60_000)
    shot(page, "kiosk")
    assert not page.get_by_role("tab", name="Studies").count()
    assert not page.outside_requests, page.outside_requests
