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
from app import glossary as words

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
    context = browser.new_context(viewport={"width": 1280, "height": 800}, device_scale_factor=1)
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


# What a clinician must not read: unrounded numbers, internal ids and "1 clips".
RAW_FLOAT = re.compile(r"(?<![\w.])\d+\.\d{5,}(?![\w.])")
SNAKE_ID = re.compile(r"\b[a-z]+(?:_[a-z0-9]+)+\b")
ONE_PLURAL = re.compile(r"(?<![\d.,/])\b1 (?:[a-z]+ )?[a-z]{2,}s\b")


def assert_plain_words(page, where: str) -> None:
    """Scan the rendered, visible text of the page (not code editors: a study file is written in YAML)."""
    text = page.evaluate("""() => {
        let text = document.body.innerText;
        document.querySelectorAll('.cm-editor').forEach(e => { text = text.split(e.innerText).join(' '); });
        return text;
    }""")
    for name, pattern in (("raw float", RAW_FLOAT), ("internal id", SNAKE_ID), ("'1 ...s' plural", ONE_PLURAL)):
        found = pattern.findall(text)
        assert not found, f"{where}: {name} in the page: {found[:5]}"


def in_view(page, selector: str) -> None:
    """A message appears where the user is looking: inside the viewport, after scrolling to it."""
    page.wait_for_function(f"""() => {{
        const box = document.querySelector('{selector}').getBoundingClientRect();
        return box.height > 0 && box.top >= 0 && box.bottom <= window.innerHeight;
    }}""", timeout=10_000)


def test_studio_forms_work_with_their_defaults(page, studio, rater_station, seeded_study, client_for):
    """Generate (Advanced open), Create study, Import and Add raters, each with nothing but the required
    fields; messages beside their buttons, in view, in plain words."""
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
    page.wait_for_selector("text=/Refining step \\d+ of 400/", timeout=60_000)
    shot(page, "generate-progress")
    page.click("#cancel-btn")
    page.wait_for_selector("text=/Cancelled after step/", timeout=60_000)
    # Defaults only: a fresh page, a phase template (the one required field), Advanced open, Generate.
    page.reload()
    page.get_by_text(words.ADVANCED).click()
    page.wait_for_selector("#height input", state="visible")
    assert page.input_value("#height input") == "" and page.input_value("#width input") == ""
    page.locator("#template input").click()
    page.get_by_role("option").nth(3).click()
    page.wait_for_function("document.querySelector('#prompt textarea').value.length > 10")
    page.click("#generate-btn")
    page.wait_for_selector("text=Saved to history", timeout=120_000)
    page.wait_for_selector("#gen-video video", timeout=60_000)
    close_toasts(page)
    page.get_by_text(words.ADVANCED).click()  # closed again for the screenshot
    shot(page, "generate")
    assert_plain_words(page, "Generate")

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
    close_toasts(page)
    page.click("#show-results")
    page.wait_for_function("document.querySelector('#progress-table').innerText.includes('alice')")
    page.wait_for_selector(".js-plotly-plot", timeout=30_000)
    page.wait_for_selector("#scores-table", state="visible")
    assert "Standard error" in page.inner_text("#scores-table")
    assert "Degrees of freedom" not in page.inner_text("#scores-table")
    page.get_by_text("Details for statisticians").click()
    page.wait_for_function("document.querySelector('#detail-scores').innerText.includes('Degrees of freedom')")
    assert_plain_words(page, "Studies results")
    page.get_by_text("Details for statisticians").click()

    # Create study with a title only (the short name comes from it; every number field left as it is).
    page.get_by_text("Study settings: create a study").click()
    page.fill("#f-title textarea, #f-title input", "Browser defaults")
    assert page.input_value("#f-seconds input") == "" and page.input_value("#f-washout input") == ""
    page.click("#create-study")
    page.wait_for_selector("#create-message >> text=Created browser-defaults", timeout=30_000)
    in_view(page, "#create-message")
    page.get_by_text("Study settings: create a study").click()
    # Import a folder of real clips: the folder, the button. (The study's default frame is the published
    # 720x480; the tiny model's 144x96 history clips would be refused as enlarged, rightly, so real clips of
    # that size stand in for the form's required-fields-only check.)
    from tests.study.helpers import make_video

    real = Path(tempfile.mkdtemp(prefix="browser-real-"))
    for i in range(2):
        make_video(real / f"case_{i}_hydrodissection.mp4", 20 + i, size="720x480")
    page.get_by_text("Import clips").click()
    page.fill("#import-real-folder textarea, #import-real-folder input", str(real))
    page.click("#import-real")
    page.wait_for_selector("#import-message >> text=/Imported 2 real clips/", timeout=60_000)
    in_view(page, "#import-message")
    assert_plain_words(page, "Studies import")
    page.get_by_text("Import clips").click()
    # Add raters: a name, the button; the code appears beside it with its CSV, the message in view.
    page.fill("#rater-name textarea, #rater-name input", "gus")
    page.click("#add-rater")
    page.wait_for_function("document.querySelector('#issued-codes').innerText.includes('gus')")
    page.wait_for_selector("#issued-codes-csv a", timeout=30_000)
    in_view(page, "#rater-message")
    button, table = page.locator("#add-rater").bounding_box(), page.locator("#issued-codes").bounding_box()
    assert abs(table["y"] - button["y"]) < 200 and table["x"] > button["x"], (button, table)
    page.set_viewport_size({"width": 1280, "height": 1000})
    page.evaluate("document.querySelector('#raters-panel').scrollIntoView({block: 'start'})")
    close_toasts(page)
    shot(page, "studies")
    assert_plain_words(page, "Studies raters")
    assert not page.outside_requests, page.outside_requests


def checked(page) -> list[str]:
    return page.evaluate("[...document.querySelectorAll('#rate-panel input:checked')].map(i => i.value)")


def test_rater_rates_by_keyboard_resumes_and_finishes(page, rater_station, seeded_study):
    """Keyboard only: the code typed in capitals without dashes, Enter; then one key per question and Enter
    to submit. A missed question is marked once beside it (no red badges, no toast) and gets the focus; Space
    chooses the focused answer (it does not play the video); after Submit the focus is on the next clip's
    first question. Reload resumes; the finished screen says thank you and shows nothing else."""
    code = seeded_study.codes["erin"]
    page.goto(rater_station.url)
    page.locator("#rate-code input").focus()
    page.keyboard.type(code.replace("-", "").upper())
    page.keyboard.press("Enter")
    page.wait_for_selector("#rate-video video")
    assert "Clip 1 of 4" in page.inner_text("#rate-panel")
    page.wait_for_function("document.activeElement.closest('#crit-0') !== null")  # focus on the first question
    for key in ("4", "3", "5", "d", "s", "4"):  # three scores, phase D (hydrodissection), synthetic, sureness
        page.keyboard.press(key)
    assert checked(page) == ["4", "3", "5", "hydrodissection", "synthetic", "4"]
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Clip 2 of 4")
    assert "Saved clip 1" in page.inner_text("#rate-status")
    page.wait_for_function("document.activeElement.closest('#crit-0') !== null && "
                           "!document.querySelector('#rate-panel input:checked')")

    # Clip 2: one score only, then Submit: each missed question says so beside it, the focus on the first.
    page.keyboard.press("4")
    page.keyboard.press("Enter")
    page.wait_for_selector("#crit-1.missing")
    assert page.locator("#rate-panel .missing").count() == 5 and "Please choose an answer here" in \
        page.inner_text("#crit-1")
    assert not page.get_by_text("Error", exact=True).count() and not page.locator(".toast-body").count()
    page.wait_for_function("document.activeElement.closest('#crit-1') !== null")
    playing = page.evaluate("!document.querySelector('#rate-video video').paused")
    page.keyboard.press("ArrowRight")  # arrows move within the question, Space chooses
    page.keyboard.press("Space")
    assert page.evaluate("!document.querySelector('#rate-video video').paused") == playing
    assert page.evaluate("document.querySelector('#crit-1 input:checked')?.value") == "2"
    for key in ("3", "b", "r", "5", "Enter"):  # the next unanswered score, phase B, real, sureness; submit
        page.keyboard.press(key)
    page.wait_for_selector("text=Clip 3 of 4")
    assert not page.locator("#rate-panel .missing").count()

    page.reload()
    page.fill("#rate-code input", code)
    page.click("#rate-signin")
    page.wait_for_selector("text=continue where you stopped")
    assert "Clip 3 of 4" in page.inner_text("#rate-panel")
    assert "2/4 rated" in page.inner_text("#rate-status")
    # Frame stepping: ',' and '.' pause and move one frame (1/8 s at the blinded 8 fps).
    page.wait_for_selector("#rate-video video")
    page.keyboard.press(",")
    before = page.evaluate("document.querySelector('#rate-video video').currentTime")
    page.keyboard.press(".")
    after, paused = page.evaluate("[document.querySelector('#rate-video video').currentTime, "
                                  "document.querySelector('#rate-video video').paused]")
    assert paused and abs(after - before - 1 / 8) < 0.01, (before, after)
    # Alt+Left goes back to the answered clip, where a change needs a reason.
    page.keyboard.press("Alt+ArrowLeft")
    page.wait_for_selector("text=Clip 2 of 4")
    page.wait_for_selector("#rate-reason", state="visible")
    assert "You answered this clip before" in page.inner_text("#rate-status")
    page.click("#rate-next")
    for clip in (3, 4):
        page.wait_for_selector(f"text=Clip {clip} of 4")
        page.wait_for_function("document.activeElement.closest('#crit-0') !== null")
        for key in ("2", "2", "2", "a", "s", "3", "Enter"):
            page.keyboard.press(key)
    page.wait_for_selector("text=Thank you")
    assert page.locator("#rate-panel").is_hidden() and page.locator("#rate-submit").is_hidden()
    assert page.inner_text("#rate-status").strip().endswith("All 4 clips are rated. Thank you!")
    assert_plain_words(page, "rater finished")
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
        page.wait_for_function("document.activeElement.closest('#crit-0') !== null")
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
        page.locator("#rate-phase input[value='hydrodissection']").check()
        page.locator("#rate-turing input[value='real']").check()
        page.locator("#rate-confidence input[value='2']").check()
        answers = page.evaluate("[...document.querySelectorAll('#rate-panel input:checked')].map(i => i.value)")
        assert answers == ["4", "3", "5", "hydrodissection", "real", "2"], answers  # Tab lands on option 1; two arrows: 3
        page.fill("#rate-comment textarea, #rate-comment input", "slight flicker")
        page.locator("#rate-comment textarea, #rate-comment input").press("Control+Enter")
        page.wait_for_selector("text=Clip 2 of 4")
        assert "Saved clip 1" in page.inner_text("#rate-status")
        # Going back shows what was chosen, filled in.
        page.click("#rate-back")
        page.wait_for_selector("text=Clip 1 of 4")
        page.wait_for_selector("#rate-reason", state="visible")
        page.wait_for_function("document.querySelectorAll('#rate-panel input:checked').length === 6")
        box = page.locator("#rate-submit").bounding_box()  # with the reason box shown, Submit still fits
        assert box["y"] + box["height"] <= 800 and page.locator("#rate-reason").bounding_box()["y"] < box["y"], box
        assert page.evaluate("[...document.querySelectorAll('#rate-panel input:checked')].map(i => i.value)") == answers
        assert page.input_value("#rate-comment textarea, #rate-comment input") == "slight flicker"
        assert_plain_words(page, "rater page")
        assert not missing, missing
    finally:
        context.close()


def test_kiosk_one_status_line_and_a_closed_tab_leaves(browser, page, kiosk, studio, seeded_study, client_for):
    """While the GPU is busy (a long studio clip), visitor A and then B wait, each with one status line: place
    and ETA. A closes the tab: A leaves the line (B moves up to 2nd) and A's clip is never made. Once the GPU
    is free, B's line goes to running and then to done with the total time including the wait. Visitors see
    no seed or other technical field."""
    from tests.app.helpers import PROMPTS

    client_for(studio.url).predict(seeded_study.history_ids[0], api_name="/history_to_gallery")
    service = studio.demo.ophora_service
    operator = client_for(studio.url)
    long_job = operator.submit(PROMPTS[0], "", "3", 500, 6.0, 49, None, None, 8, api_name="/generate")
    kiosk_dir = kiosk.config.kiosk_dir
    before = set(kiosk_dir.glob("*.mp4"))
    visitor_a = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    try:
        for visitor, place in ((visitor_a, "2nd"), (page, "3rd")):
            visitor.goto(kiosk.url)
            visitor.wait_for_selector("#kiosk-generate")
            assert not visitor.locator("#kiosk-seed").count() and "Seed" not in visitor.inner_text("body")
            visitor.locator("#kiosk-template input").click()
            visitor.get_by_role("option").first.click()
            visitor.click("#kiosk-generate")
            visitor.wait_for_selector(f"#kiosk-wait >> text=/You are {place} in line(, about \\d+ (s|min))?\\./",
                                      timeout=60_000)
        assert page.locator("#kiosk-wait").inner_text().count("\n") == 0  # one line, nothing stacked on it
        visitor_a.context.close()  # A walks away: out of the line, B moves up
        page.wait_for_selector("#kiosk-wait >> text=/You are 2nd in line/", timeout=30_000)
        page.wait_for_timeout(1500)  # B waits a measurable while
        operator.predict(api_name="/cancel")
        assert "Cancelled" in long_job.result(timeout=60)[1]
        page.wait_for_selector("#kiosk-video video", timeout=60_000)
        status = page.inner_text("#kiosk-wait")
        assert re.match(r"Done: your clip took \d+ s, of which \d+ s waiting in line\.$", status), status
        assert len(set(kiosk_dir.glob("*.mp4")) - before) == 1  # B's clip only; A's was never made
        assert not service.busy() and service.place_in_line("anything") is None
        page.wait_for_selector("#kiosk-gallery video", timeout=30_000)
        shot(page, "kiosk")
        assert_plain_words(page, "kiosk")
        assert not page.get_by_role("tab", name="Studies").count()
        assert not page.outside_requests, page.outside_requests
    finally:
        operator.predict(api_name="/cancel")
