"""The app's wording and guards without a server: YAML positions, queue places and waits, rounded tables,
sign-in backoff, and the kiosk's wait estimate from the loaded model's real step time."""

from __future__ import annotations

import threading

import pandas as pd
import pytest
import yaml

from app.security import SignInGuard
from app.wording import ordinal, queue_message, readable_table, round_value, yaml_problem


def test_yaml_problem_names_line_and_column():
    with pytest.raises(yaml.YAMLError) as info:
        yaml.safe_load("title: x\ncriteria:\n  - name: a\n    scale: [1, 5\n")
    text = yaml_problem(info.value)
    assert text.startswith("line ") and ", column " in text


def test_queue_places_and_waits_read_as_words():
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st"]
    assert queue_message(2, 40.2) == "You are 2nd in line, about 40 s."
    assert queue_message(1, 12) == "Your clip is next, about 12 s."
    assert queue_message(3, 300) == "You are 3rd in line, about 5 min."
    assert "estimate appears" in queue_message(2, None)


def test_result_tables_are_rounded_with_readable_headers_and_hidden_when_empty():
    frame = pd.DataFrame({"criterion": ["realism"], "icc": [0.08333333333333333], "ci_low": [-1.665e-16],
                          "n_raters": [3]})
    update = readable_table(frame)
    shown = update["value"]
    assert list(shown.columns) == ["Question", "Icc", "95% interval from", "N raters"]
    assert shown.iloc[0].tolist() == ["realism", 0.0833, 0.0, 3]
    assert update["visible"] is True
    assert readable_table(frame.iloc[0:0])["visible"] is False and readable_table(None)["visible"] is False
    assert round_value(True) is True and round_value(float("nan")) != round_value(float("nan"))


def test_failed_sign_ins_back_off_per_client_and_in_total():
    now = [0.0]
    guard = SignInGuard(free=2, total_free=4, base_s=1.0, max_s=60.0, clock=lambda: now[0])
    assert not guard.check("guess", "secret-pass", "10.0.0.1")
    assert not guard.check("guess", "secret-pass", "10.0.0.1")  # typos are free
    assert guard.wait_s("10.0.0.1") == 0
    assert not guard.check("guess", "secret-pass", "10.0.0.1")
    assert guard.wait_s("10.0.0.1") == 1.0
    with pytest.raises(Exception, match="Try again in 1 s"):
        guard.check("secret-pass", "secret-pass", "10.0.0.1")  # refused unchecked while the wait runs
    now[0] += 1.0
    assert not guard.check("guess", "secret-pass", "10.0.0.1")
    assert guard.wait_s("10.0.0.1") == 2.0  # doubles
    # Other clients share the total: a fifth failure anywhere locks everyone for a while.
    now[0] += 2.0
    assert not guard.check("guess", "secret-pass", "10.0.0.2")
    assert guard.wait_s("10.0.0.3") == 1.0
    now[0] += 1.0
    assert guard.check("secret-pass", "secret-pass", "10.0.0.3")  # success clears the total
    assert guard.wait_s("10.0.0.2") == 0


def test_parallel_guesses_cannot_race_past_the_backoff():
    guard = SignInGuard(free=1, total_free=100, base_s=30.0)
    outcomes = []

    def guess():
        try:
            outcomes.append(guard.check("guess", "secret-pass", "10.0.0.9"))
        except Exception:  # noqa: BLE001 - the refusal
            outcomes.append("refused")

    threads = [threading.Thread(target=guess) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count(False) == 2 and outcomes.count("refused") == 18  # one free, one that starts the wait


def test_kiosk_wait_comes_from_the_loaded_models_step_time(tiny_model_dir):
    """Before the first clip finishes, a second and third visitor get a place and an ETA in seconds."""
    from app.service import GenerationService
    from ophora.generation.engine import GenerationCancelled, GenerationRequest
    from ophora.generation.loading import LoadOptions

    service = GenerationService(LoadOptions(model=str(tiny_model_dir)))
    assert service.join_line("first", 60) == (1, None)  # nothing timed yet: no made-up number
    started = threading.Event()
    done = []

    def run():
        try:
            service.generate(GenerationRequest(prompt="Inject fluid", num_inference_steps=60), key="first",
                             on_step=lambda step: started.set() if step.step >= 3 else None)
        except GenerationCancelled as cancelled:
            done.append(cancelled)

    worker = threading.Thread(target=run)
    worker.start()
    assert started.wait(120)
    place2, wait2 = service.join_line("second", 60)
    place3, wait3 = service.join_line("third", 60)
    assert service.typical_seconds() is None  # the first clip has not finished: the ETA comes from its steps
    assert (place2, place3) == (2, 3) and 0 < wait2 < wait3
    service.cancel("first")
    worker.join(120)
    assert isinstance(done[0], GenerationCancelled)
    service.leave_line("first")  # the kiosk handler leaves the line when its clip ends, however it ends
    service.leave_line("second")
    assert service.join_line("third", 60)[0] == 1


def test_user_errors_log_one_line_not_a_traceback(caplog):
    import logging

    import gradio as gr

    from app.wording import quiet, user_error

    with caplog.at_level(logging.INFO, logger="app"):
        error = user_error("Seed must be a whole number.\nPress the dice.")
        other = quiet(gr.Error("Wrong admin password."))
    assert error.print_exception is False and other.print_exception is False  # Gradio prints no traceback
    assert [r.getMessage() for r in caplog.records] == ["user error: Seed must be a whole number.",
                                                        "user error: Wrong admin password."]


def test_glossary_says_study_checks_in_the_apps_words():
    from app.glossary import duration, in_app_words, plural

    assert [plural(n, "real clip") for n in (0, 1, 2)] == ["0 real clips", "1 real clip", "2 real clips"]
    assert [duration(s) for s in (0.2, 40.4, 300, 5400)] == ["1 s", "40 s", "5 min", "1 h 30 min"]
    text = in_app_words("length: clips are shorter: a.mp4; remove them or set blinding.max_seconds to at most 1.125")
    assert text.endswith("set Length in seconds to 1.1 in Study settings")  # at most: rounded down
    assert in_app_words("size: smaller; or accept it with --accept-difference size").endswith(
        'or tick "accept this difference" below')
    assert in_app_words("study form: blinding.fps: Input should be greater than 0 (got 0)") == \
        "Frames per second: must be more than 0 (got 0)"


def test_access_codes_are_read_in_any_case_with_or_without_dashes():
    from app.rate_tab import normalize_code
    from ophora.study.store import new_access_code

    code = new_access_code()
    assert {normalize_code(c) for c in (code, code.upper(), code.replace("-", ""), f" {code.upper()} ",
                                        code.replace("-", " "))} == {code}
    assert normalize_code("not-a-code") == "not-a-code"  # anything else goes to the store unchanged (refused)
