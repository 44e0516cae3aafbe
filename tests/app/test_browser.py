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
    # A code issued in the raters panel appears right beside its button, with its CSV.
    page.fill("#rater-name textarea, #rater-name input", "gus")
    page.click("#add-rater")
    page.wait_for_function("document.querySelector('#issued-codes').innerText.includes('gus')")
    page.wait_for_selector("#issued-codes-csv a", timeout=30_000)
    button, table = page.locator("#add-rater").bounding_box(), page.locator("#issued-codes").bounding_box()
    assert abs(table["y"] - button["y"]) < 200 and table["x"] > button["x"], (button, table)
    page.set_viewport_size({"width": 1280, "height": 1000})
    page.locator("#raters-panel").scroll_into_view_if_needed()
    page.evaluate("document.querySelector('#raters-panel').scrollIntoView({block: 'start'})")
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
    assert "You answered this clip before" in page.inner_text("#rate-status")
    assert not page.outside_requests, page.outside_requests


def test_rater_page_fits_1280x800_and_keeps_answers(browser, rater_station, seeded_study):
    """After sign-in one clip, all its questions and Submit fit a 1280x800 screen without scrolling; each
    question is one tab stop with arrow keys inside; Ctrl+Enter submits from the comment box; going back
    shows the earlier answers filled in. Every request the page makes exists on the rater station."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, device_scale_factor=1)
    page = context.new_page()
    missing = []
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    try:
        page.goto(rater_station.url)
        page.fill("#rate-code input", seeded_study.codes["fay"])
        page.click("#rate-signin")
        page.wait_for_selector("#rate-video video")
        page.wait_for_selector("#rate-code", state="hidden")  # sign-in collapses
        shot(page, "rate")
        scroll = page.evaluate("[document.documentElement.scrollHeight, window.innerHeight]")
        assert scroll[0] <= scroll[1], f"the page scrolls: {scroll}"
        for selector in ("#rate-video video", "#crit-0", "#crit-1", "#crit-2", "#rate-phase", "#rate-turing",
                         "#rate-confidence", "#rate-comment", "#rate-submit"):
            box = page.locator(selector).bounding_box()
            assert box and box["y"] >= 0 and box["y"] + box["height"] <= 800, (selector, box)
        # One tab stop per question: Tab from the first question lands in the second, not on its next option.
        page.locator("#crit-0 input[value='3']").check()
        page.locator("#crit-0 input[value='3']").focus()
        page.keyboard.press("ArrowRight")  # arrows move the answer inside the question
        assert page.evaluate("document.activeElement.value") == "4"
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.closest('[id^=crit-]').id") == "crit-1"
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        assert page.evaluate("document.activeElement.closest('[id^=crit-]').id") == "crit-1"
        page.locator("#crit-2 input[value='5']").check()
        page.locator("#rate-phase input").click()
        page.get_by_role("option", name="hydrodissection").click()
        page.locator("#rate-turing input[value='real']").check()
        page.locator("#rate-confidence input[value='2']").check()
        answers = page.evaluate("[...document.querySelectorAll('#rate-panel input:checked')].map(i => i.value)")
        assert answers == ["4", "3", "5", "real", "2"], answers  # Tab lands on option 1; two arrows: 3
        page.fill("#rate-comment textarea, #rate-comment input", "slight flicker")
        page.locator("#rate-comment textarea, #rate-comment input").press("Control+Enter")
        page.wait_for_selector("text=Clip 2 of 4")
        assert "Saved clip 1" in page.inner_text("#rate-status")
        # Going back shows what was chosen, filled in.
        page.click("#rate-back")
        page.wait_for_selector("text=Clip 1 of 4")
        page.wait_for_selector("#rate-reason", state="visible")
        page.wait_for_function("document.querySelectorAll('#rate-panel input:checked').length === 5")
        box = page.locator("#rate-submit").bounding_box()  # with the reason box shown, Submit still fits
        assert box["y"] + box["height"] <= 800 and page.locator("#rate-reason").bounding_box()["y"] < box["y"], box
        assert page.evaluate("[...document.querySelectorAll('#rate-panel input:checked')].map(i => i.value)") == answers
        assert page.input_value("#rate-comment textarea, #rate-comment input") == "slight flicker"
        assert page.input_value("#rate-phase input") == "hydrodissection"
        assert not missing, missing
    finally:
        context.close()


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
