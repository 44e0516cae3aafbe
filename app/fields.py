"""Optional number fields: empty means "use the default", never 0.

Why a text box and not ``gr.Number``: Gradio 6.31's Number component turns an empty value into 0 in the
browser (its frontend sets ``value ??= 0`` whatever the placeholder), so an "empty: default" field would send
0 and the form would fail with its own defaults. A text box keeps empty as empty; this module parses it.
"""

from __future__ import annotations

import gradio as gr

from app.wording import user_error


def optional_number_box(label: str, placeholder: str, elem_id: str, value=None, **kwargs) -> gr.Textbox:
    """A one-line box for an optional number; the placeholder says what empty means."""
    return gr.Textbox("" if value is None else str(value), label=label, placeholder=placeholder, elem_id=elem_id,
                      lines=1, max_lines=1, **kwargs)


def optional_number(value, name: str, *, whole: bool = False) -> float | int | None:
    """``None`` for an empty field; the number otherwise, or a one-line message that says what to type."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(str(value).strip().replace(",", "."))
    except ValueError:
        raise user_error(f"{name}: type a number, or leave it empty for the default (got {value!r}).") from None
    if whole:
        if not number.is_integer():
            raise user_error(f"{name}: type a whole number, or leave it empty for the default (got {value!r}).")
        return int(number)
    return number
