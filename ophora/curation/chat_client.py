"""A minimal client for OpenAI-compatible ``/v1/chat/completions`` servers (vLLM, SGLang, TGI, OpenAI).

Why httpx and not the ``openai`` package: the pipeline needs one call (chat completions, optionally with
images as data URLs) plus explicit timeouts and retries it can reason about; httpx is already a dependency.

Endpoint behaviour over a long run: connection errors, timeouts and HTTP 408/429/5xx are retried with
jittered exponential backoff, and a ``Retry-After`` header is honoured (and pauses every worker, since a rate
limit is the endpoint's, not the clip's). Each clip has a time cap (``clip_timeout_s``) over all its attempts
and waits. A circuit breaker shared by all worker processes (a small locked file beside the output) pauses
every worker for ``breaker_pause_s`` after ``breaker_failures`` consecutive failures; after
``breaker_stop_after`` pauses without one success the run stops (``EndpointDown``) instead of spending every
remaining clip's retries. ``preflight`` stops a run whose endpoint is down before the first clip.
A 4xx answer or a reply that is not a chat completion is reported as malformed, not retried here.
"""

from __future__ import annotations

import base64
import email.utils
import fcntl
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .stages import RetryableError

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class MalformedAnswer(ValueError):
    """The server answered, but not with a usable chat completion."""


class EndpointDown(RuntimeError):
    """The endpoint is down (at start, or for several breaker pauses in a row): the run stops; rerun later."""


class CircuitBreaker:
    """Consecutive-failure breaker whose state lives in a locked JSON file, so every worker process (and Ray
    task on shared storage) sees the same state. Without a path it is local to this process."""

    def __init__(self, path: str | Path | None, failures: int = 5, pause_s: float = 30.0, stop_after: int = 3):
        self.path = Path(path) if path is not None else None
        self.failures, self.pause_s, self.stop_after = int(failures), float(pause_s), int(stop_after)
        self._state = {"failures": 0, "open_until": 0.0, "trips": 0, "last": ""}

    def _update(self, change=None) -> dict:
        if self.path is None:
            if change is not None:
                change(self._state)
            return dict(self._state)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            text = handle.read()
            state = json.loads(text) if text.strip() else {"failures": 0, "open_until": 0.0, "trips": 0, "last": ""}
            if change is not None:
                change(state)
                handle.seek(0)
                handle.truncate()
                handle.write(json.dumps(state))
                handle.flush()
            return state

    def success(self) -> None:
        def change(state):
            state.update(failures=0, trips=0)
        self._update(change)

    def failure(self, what: str) -> None:
        def change(state):
            state["failures"] += 1
            state["last"] = what
            if state["failures"] >= self.failures:
                state.update(failures=0, trips=state["trips"] + 1, open_until=time.time() + self.pause_s)
        self._update(change)

    def pause(self, seconds: float) -> None:
        """Pause every worker (a ``Retry-After`` from the server)."""
        def change(state):
            state["open_until"] = max(state["open_until"], time.time() + seconds)
        self._update(change)

    def wait(self, deadline: float) -> None:
        """Block while the breaker is open. Raises ``EndpointDown`` when it tripped ``stop_after`` times without
        a success, ``RetryableError`` when the clip's deadline comes first."""
        while True:
            state = self._update()
            if state["trips"] >= self.stop_after:
                raise EndpointDown(f"endpoint failed {self.failures} times in a row, {state['trips']} times over "
                                   f"(last: {state['last']}); the run stops. Check the server and rerun the same "
                                   f"command to continue")
            now = time.time()
            if state["open_until"] <= now:
                return
            if time.monotonic() + (state["open_until"] - now) > deadline:
                raise RetryableError(f"endpoint paused for {state['open_until'] - now:.0f} s more (circuit "
                                     f"breaker or Retry-After), beyond this clip's time cap")
            time.sleep(min(0.25, state["open_until"] - now))


def retry_after_s(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date), None when absent or unreadable."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass
class ChatEndpoint:
    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    retries: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    clip_timeout_s: float = 300.0
    breaker: CircuitBreaker = field(default_factory=lambda: CircuitBreaker(None))
    rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def from_config(cls, cfg: dict, breaker_path: str | Path | None = None) -> "ChatEndpoint":
        breaker = CircuitBreaker(breaker_path, cfg.get("breaker_failures", 5), cfg.get("breaker_pause_s", 30.0),
                                 cfg.get("breaker_stop_after", 3))
        return cls(base_url=cfg["base_url"], model=cfg["model"], api_key=os.environ.get(cfg.get("api_key_env") or ""),
                   timeout_s=float(cfg.get("timeout_s", 60)), retries=int(cfg.get("retries", 3)),
                   backoff_s=float(cfg.get("backoff_s", 1.0)), max_backoff_s=float(cfg.get("max_backoff_s", 30.0)),
                   clip_timeout_s=float(cfg.get("clip_timeout_s", 300.0)), breaker=breaker)

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def _post(self, payload: dict, timeout: float) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.post(self.url, json=payload, headers=headers, timeout=timeout)

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter (half to all of backoff_s * 2^attempt, at most max_backoff_s), so
        workers that failed together do not retry together."""
        return min(self.max_backoff_s, self.backoff_s * 2 ** attempt) * self.rng.uniform(0.5, 1.0)

    def preflight(self) -> None:
        """One tiny request before the run: raise ``EndpointDown`` when nothing answers, the answer is a 5xx,
        or the server refuses the request (wrong model, key or URL). A 429 means it is up."""
        payload = {"model": self.model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
        try:
            response = self._post(payload, min(self.timeout_s, 30.0))
        except httpx.TimeoutException:
            raise EndpointDown(f"endpoint {self.url} did not answer within {min(self.timeout_s, 30.0):g} s at "
                               f"start; is the server up? Nothing was curated") from None
        except httpx.TransportError as error:
            raise EndpointDown(f"cannot reach endpoint {self.url} at start ({type(error).__name__}: {error}); "
                               f"start the server or fix base_url. Nothing was curated") from None
        if response.status_code >= 500:
            raise EndpointDown(f"endpoint {self.url} answers HTTP {response.status_code} at start: "
                               f"{response.text[:200]}. Nothing was curated")
        if 400 <= response.status_code < 500 and response.status_code not in (408, 409, 429):
            raise EndpointDown(f"endpoint {self.url} refuses the request at start (HTTP {response.status_code}: "
                               f"{response.text[:200]}); check the model name and the API key. Nothing was curated")

    def complete(self, messages: list[dict], max_tokens: int = 128, temperature: float = 0.0) -> str:
        """Return the first choice's text. Raises ``RetryableError`` when the endpoint stays unreachable or
        failing after all retries or past the clip's time cap, ``MalformedAnswer`` when it answers with
        something unusable, ``EndpointDown`` when the circuit breaker says the run must stop."""
        payload = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        deadline = time.monotonic() + self.clip_timeout_s
        last = "no attempt made"
        for attempt in range(self.retries + 1):
            self.breaker.wait(deadline)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            delay = self.backoff(attempt)
            try:
                response = self._post(payload, min(self.timeout_s, remaining))
            except httpx.TimeoutException:
                last = f"timed out after {min(self.timeout_s, remaining):.3g} s"
                self.breaker.failure(last)
            except httpx.TransportError as error:
                last = f"cannot reach {self.url} ({type(error).__name__}: {error})"
                self.breaker.failure(last)
            else:
                if response.status_code in RETRY_STATUS:
                    last = f"HTTP {response.status_code} from {self.url}: {response.text[:200]}"
                    wait = retry_after_s(response)
                    if wait is not None:
                        self.breaker.pause(wait)  # the server said when: every worker waits that long
                        delay = wait
                        last += f" (Retry-After {wait:g} s)"
                    else:
                        self.breaker.failure(last)
                elif response.status_code != 200:
                    raise MalformedAnswer(f"HTTP {response.status_code} from {self.url}: {response.text[:200]}")
                else:
                    try:
                        text = parse_completion(response)
                    except MalformedAnswer:
                        self.breaker.failure("malformed answer")
                        raise
                    self.breaker.success()
                    return text
            if attempt < self.retries:
                if time.monotonic() + delay > deadline:
                    raise RetryableError(f"endpoint failed ({last}); the next try would pass this clip's time cap "
                                         f"of {self.clip_timeout_s:g} s")
                time.sleep(delay)
        if deadline - time.monotonic() <= 0:
            raise RetryableError(f"endpoint gave no answer within this clip's time cap of {self.clip_timeout_s:g} s "
                                 f"({last})")
        raise RetryableError(f"endpoint failed after {self.retries + 1} attempts: {last}")


def parse_completion(response: httpx.Response) -> str:
    try:
        body = response.json()
        content = body["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise MalformedAnswer(f"not a chat completion ({type(error).__name__}): {response.text[:200]!r}") from None
    if isinstance(content, list):  # some servers return content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str):
        raise MalformedAnswer(f"message content is {type(content).__name__}, not text")
    return content


def image_part(jpeg_bytes: bytes) -> dict:
    """An OpenAI-style image content part carrying a JPEG as a data URL (nothing is uploaded elsewhere)."""
    encoded = base64.b64encode(jpeg_bytes).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{encoded}"}}
