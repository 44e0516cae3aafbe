"""How the app talks: user errors that log one line, YAML problems with line and column, queue places in
words, and result tables rounded to digits a reader can use.

Why one module: every tab says these things, and a clinician should read them the same way everywhere.
"""

from __future__ import annotations

import logging
import math

import gradio as gr

from app.glossary import ANALYSIS_NAMES, column_name, duration, for_clinicians

logger = logging.getLogger("app")


def user_error(message: str, duration: float | None = None) -> gr.Error:
    """A ``gr.Error`` for a mistake the user can fix: shown in full in the page, logged as one line (Gradio
    would print a whole traceback for every mistyped seed)."""
    logger.info("user error: %s", message.splitlines()[0][:300] if message else "")
    return gr.Error(message, duration=duration, print_exception=False)


def quiet(error: gr.Error) -> gr.Error:
    """The same for an error raised elsewhere (a tab's own ``gr.Error``): log one line, no traceback."""
    if getattr(error, "print_exception", True):
        error.print_exception = False
        logger.info("user error: %s", (str(error.message).splitlines() or [""])[0][:300])
    return error


def yaml_problem(error: Exception) -> str:
    """'line 3, column 7: mapping values are not allowed here' from a PyYAML error (marks are 0-based)."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    if mark is None:
        return problem
    context = getattr(error, "context", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" + (f" ({context})" if context else "")


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def queue_message(place: int, wait_s: float | None) -> str:
    """'You are 2nd in line, about 40 s.' (place 1: your clip is the one being made)."""
    where = "Your clip is next" if place <= 1 else f"You are {ordinal(place)} in line"
    if wait_s is None:
        return f"{where}. The wait estimate appears once the first clip has started."
    return f"{where}, about {duration(wait_s)}."


def round_value(value, digits: int = 3):
    """Floats to ``digits`` significant digits; values within 1e-9 of zero (float noise such as -1.665e-16) become 0."""
    if isinstance(value, bool) or not isinstance(value, float):
        return value
    if math.isnan(value) or math.isinf(value):
        return value
    if abs(value) < 1e-9:
        return 0.0
    return float(f"{value:.{digits}g}")


def readable_table(frame, digits: int = 3, clinician: bool = False):
    """A results table for a person: rounded numbers, plain column names (see ``app.glossary``); with
    ``clinician`` only the columns a clinician reads (the rest is for the statisticians' details). A
    ``gr.update`` that hides the table when it has no rows (an empty Dataframe shows "1 2 3" as headers)."""
    if frame is None or len(frame) == 0:
        return gr.update(value=None, visible=False)
    shown = frame[for_clinicians(frame.columns)].copy() if clinician else frame.copy()
    for column in shown.columns:
        shown[column] = shown[column].map(lambda v: round_value(v, digits))
        if column in ("analysis",):
            shown[column] = shown[column].map(lambda v: ANALYSIS_NAMES.get(v, v))
    shown.columns = [column_name(c) for c in shown.columns]
    return gr.update(value=shown, visible=True)

