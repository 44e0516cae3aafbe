"""Drive the app's endpoints the way a browser does, over HTTP with gradio_client."""

from __future__ import annotations

from pathlib import Path

from app.rate_tab import MAX_CRITERIA

from ophora.vocabulary import find_phase

# A free-text instruction and one of the team's phase templates (whose phase is recorded with the clip).
PROMPTS = ["Inject balanced salt solution under the capsule rim with a cannula",
           find_phase("capsulorhexis").templates[0]]


def value_of(update):
    """An output is either a plain value or a ``gr.update`` dict."""
    return update.get("value") if isinstance(update, dict) and update.get("__type__") == "update" else update


def generate(client, prompt: str, seed: int, steps: int = 2, frames: int = 9):
    return client.predict(prompt, "", str(seed), steps, 6.0, frames, None, None, 8, api_name="/generate")


def table_rows(output) -> list[list]:
    output = value_of(output)  # results tables come as updates (hidden when empty)
    return output["data"] if isinstance(output, dict) else output


def sign_in_admin(client, password: str):
    return client.predict(password, api_name="/admin_sign_in")


def rater_screen(outputs) -> dict:
    """Name the outputs of the rate endpoints (the server-side session is not among them)."""
    status, about, video, instruction, *rest = outputs
    radios, (phase, turing, confidence, comment, reason) = rest[:MAX_CRITERIA], rest[MAX_CRITERIA:]
    return {"status": status, "about": about, "video": video, "instruction": instruction, "radios": radios,
            "phase": phase, "turing": turing, "confidence": confidence, "comment": comment, "reason": reason,
            "all": outputs}


def answer_args(screen: dict, score: int, turing: str = "synthetic", reason: str = "") -> list:
    scores = [score if isinstance(r, dict) and r.get("visible") else None for r in screen["radios"]]
    phase = screen["phase"]
    phase_value = phase["choices"][3][1] if isinstance(phase, dict) and phase.get("visible") else None
    return [*scores, phase_value, turing, 4, "", reason]


def rate_all(client, code: str, score: int) -> dict:
    screen = rater_screen(client.predict(code, api_name="/rate_sign_in"))
    while isinstance(screen["video"], dict) and screen["video"].get("path"):
        screen = rater_screen(client.predict(*answer_args(screen, score), api_name="/rate_submit"))
    return screen


def video_path(output) -> Path:
    return Path(value_of(output)["path"] if isinstance(value_of(output), dict) else value_of(output))
