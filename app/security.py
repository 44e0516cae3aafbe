"""Server-side checks that every handler makes, and how files reach the browser.

Why here and not in the UI: every Gradio event handler is an HTTP endpoint that anyone who can reach the
port can call with ``gradio_client``. So the study lead's password and a rater's access code are checked
inside the handlers, and what a session has proven is kept in server-side ``gr.State`` (never sent to
the browser). Files are handed to Gradio as fresh copies under an unguessable folder in Gradio's cache,
named as we choose: the history and blinded-clip folders themselves are never servable by path.
"""

from __future__ import annotations

import hmac
import json
import math
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gradio as gr

from app.wording import user_error


@dataclass
class AdminSession:
    """Held in ``gr.State``: set only by a successful password check in this browser session."""

    signed_in: bool = False


@dataclass
class RaterSession:
    """Held in ``gr.State``: the access code a rater proved, and the reading on screen (server-side)."""

    code: str | None = None
    name: str | None = None
    clip_id: str | None = None
    position: int | None = None
    rated: bool = False  # the reading on screen already has an answer (a change needs a reason)
    shown_at: float | None = None


def check_password(given: str | None, expected: str) -> bool:
    """Constant-time comparison; see ``SignInGuard`` for how guessing is slowed down."""
    return hmac.compare_digest((given or "").encode("utf-8"), expected.encode("utf-8"))


class SignInGuard:
    """Exponential backoff after failed admin sign-ins, per client address and for all clients together.

    Why both: per client stops one machine from guessing; the total stops many machines (or parallel
    requests) from sharing the work. After ``free`` failures each further failure doubles the wait, from
    ``base_s`` up to ``max_s``; while a wait runs every attempt (even the right password) is refused without
    being checked. The check and the bookkeeping happen under one lock, so parallel guesses queue up behind
    the lockout instead of racing past it. A successful sign-in clears its client and the total.
    """

    def __init__(self, *, free: int = 3, total_free: int = 10, base_s: float = 1.0, max_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free, self.total_free, self.base_s, self.max_s, self.clock = free, total_free, base_s, max_s, clock
        self._failures: dict[str, int] = {}
        self._until: dict[str, float] = {}
        self._total = 0
        self._total_until = 0.0
        self._lock = threading.Lock()

    def _delay(self, failures: int, free: int) -> float:
        return 0.0 if failures <= free else min(self.max_s, self.base_s * 2 ** (failures - free - 1))

    def wait_s(self, client: str) -> float:
        now = self.clock()
        return max(0.0, self._until.get(client, 0.0) - now, self._total_until - now)

    def check(self, given: str | None, expected: str, client: str) -> bool:
        """True for the right password; raises a "try again in N s" error while a backoff runs."""
        with self._lock:
            wait = self.wait_s(client)
            if wait > 0:
                raise user_error(f"Too many wrong admin passwords. Try again in {math.ceil(wait)} s.")
            if check_password(given, expected):
                self._failures.pop(client, None)
                self._until.pop(client, None)
                self._total, self._total_until = 0, 0.0
                return True
            now = self.clock()
            self._failures[client] = self._failures.get(client, 0) + 1
            self._until[client] = now + self._delay(self._failures[client], self.free)
            self._total += 1
            self._total_until = now + self._delay(self._total, self.total_free)
            return False


def client_key(request: gr.Request | None) -> str:
    """The caller's address (every session from one machine shares its backoff)."""
    client = getattr(request, "client", None)
    return str(getattr(client, "host", None) or "unknown")


def require_admin(session: AdminSession | None) -> None:
    if not isinstance(session, AdminSession) or not session.signed_in:
        raise user_error("Study lead only: sign in with the admin password on the Studies tab first.")


def require_rater(session: RaterSession | None) -> RaterSession:
    if not isinstance(session, RaterSession) or not session.code:
        raise user_error("Sign in with the access code your study lead gave you first.")
    return session


def _staging_folder() -> Path:
    root = Path(os.environ.get("GRADIO_TEMP_DIR") or ".") / "staged" / secrets.token_hex(16)
    root.mkdir(parents=True, exist_ok=True)
    return root


def stage_text(text: str, name: str) -> str:
    """Write ``text`` as ``name`` into a random folder in Gradio's cache (a download made for one request,
    e.g. the access codes one click issued); return its path."""
    target = _staging_folder() / name
    target.write_text(text, encoding="utf-8")
    return str(target)


def stage_file(path: str | Path, name: str | None = None) -> str:
    """Hard-link (or copy) ``path`` into a random folder in Gradio's cache under ``name``; return the new path."""
    source = Path(path)
    target = _staging_folder() / (name or source.name)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return str(target)


# The HTTP routes a rater station answers: the page and its assets, the queue that runs the rating
# endpoints, the heartbeat, staged clip files and the one-off startup check Gradio runs at launch. Everything
# else Gradio offers (uploads, the direct /call and /run APIs, component servers, streams, the proxy,
# OpenAPI, monitoring) gets 404.
RATER_ROUTES = re.compile(
    r"^/(|config/?|theme\.css|favicon\.ico|robots\.txt|(assets|static|svelte)/.+"
    r"|gradio_api/(info/?|theme\.css|startup-events|queue/(join|data)|heartbeat/[^/]+|file=.+|cancel))$")


CHECKED_CALLS = ("/gradio_api/queue/join", "/gradio_api/cancel")  # the routes that take a JSON body


class RaterStationRoutes:
    """ASGI middleware for ``--mode rater``: only the routes in ``RATER_ROUTES`` exist, and a call to the queue
    must name an event this app has. Gradio has no switch for most of the other routes, and a rater station
    reachable from a ward PC must offer nothing but rating; an unknown event would reach Gradio's
    ``fns[fn_index]`` and come back as a 500 with a traceback in the log.

    The body of a queue call is read here (the app's body limit has already capped it, see
    ``app.server.RATER_MAX_BODY_BYTES``), checked, and handed on unchanged. Refusals are short fixed texts that
    never echo the request, and nothing of the body is logged."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            path = scope.get("path", "")
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root):] or "/"
            if not RATER_ROUTES.match(path):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await _reply(send, 404, "Not available on a rater station.")
                return
            if scope["type"] == "http" and path in CHECKED_CALLS:
                if scope.get("method") != "POST":
                    await _reply(send, 405, "Use POST.")
                    return
                body = await _read_body(receive)
                if body is None:  # the client went away
                    return
                problem = _call_problem(body, _event_ids(scope), needs_data=path == CHECKED_CALLS[0])
                if problem:
                    await _reply(send, *problem)
                    return
                receive = _replay(body, receive)
        await self.app(scope, receive, send)


def _event_ids(scope) -> dict[int, int]:
    """The event numbers (``fn_index``) of the Blocks this server runs, each with its number of inputs."""
    app = scope.get("app")
    blocks = app.get_blocks() if app is not None and hasattr(app, "get_blocks") else None
    return {index: len(fn.inputs) for index, fn in (getattr(blocks, "fns", None) or {}).items()}


def _call_problem(body: bytes, events: dict[int, int], needs_data: bool) -> tuple[int, str] | None:
    """(status, text) when a queue call (or its cancel) is malformed or names no event of this app; ``None``
    when it may go on to Gradio."""
    try:
        call = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return 400, "Not a valid request."
    if not isinstance(call, dict) or (needs_data and not isinstance(call.get("data"), list)):
        return 400, "Not a valid request."
    if not needs_data and not all(isinstance(call.get(key), str) for key in ("session_hash", "event_id")):
        return 400, "Not a valid request."
    index = call.get("fn_index")
    if not isinstance(index, int) or isinstance(index, bool) or index not in events:
        return 404, "No such action on this page: reload the page."
    if needs_data and len(call["data"]) != events[index]:  # Gradio would log a traceback for too few
        return 400, "Not a valid request."
    for key in ("session_hash", "event_id"):
        if call.get(key) is not None and not isinstance(call[key], str):
            return 400, "Not a valid request."
    if call.get("trigger_id") is not None and (not isinstance(call["trigger_id"], int)
                                                or isinstance(call["trigger_id"], bool)):
        return 400, "Not a valid request."
    return None


async def _read_body(receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive):
    """An ASGI ``receive`` that hands the already-read body on once, then waits on the real one."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _reply(send, status: int, text: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body", "body": text.encode("utf-8")})
