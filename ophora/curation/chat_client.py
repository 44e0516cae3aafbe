"""A minimal client for OpenAI-compatible ``/v1/chat/completions`` servers (vLLM, SGLang, TGI, OpenAI).

Why httpx and not the ``openai`` package: the pipeline needs one call (chat completions, optionally with
images as data URLs) plus explicit timeouts and retries it can reason about; httpx is already a dependency.
Retries: connection errors, timeouts, HTTP 408/429/5xx, with exponential backoff. A 4xx answer or a reply
that is not a chat completion is not retried the same way: it is reported as malformed.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass

import httpx

from .stages import RetryableError

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class MalformedAnswer(ValueError):
    """The server answered, but not with a usable chat completion."""


@dataclass
class ChatEndpoint:
    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    retries: int = 3
    backoff_s: float = 1.0

    @classmethod
    def from_config(cls, cfg: dict) -> "ChatEndpoint":
        return cls(base_url=cfg["base_url"], model=cfg["model"], api_key=os.environ.get(cfg.get("api_key_env") or ""),
                   timeout_s=float(cfg.get("timeout_s", 60)), retries=int(cfg.get("retries", 3)),
                   backoff_s=float(cfg.get("backoff_s", 1.0)))

    def complete(self, messages: list[dict], max_tokens: int = 128, temperature: float = 0.0) -> str:
        """Return the first choice's text. Raises ``RetryableError`` when the endpoint stays unreachable or
        failing after all retries, ``MalformedAnswer`` when it answers with something unusable."""
        url = self.base_url.rstrip("/") + "/chat/completions"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        payload = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        last = "no attempt made"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = httpx.post(url, json=payload, headers=headers, timeout=self.timeout_s)
            except httpx.TimeoutException:
                last = f"timed out after {self.timeout_s:g} s"
                continue
            except httpx.TransportError as error:
                last = f"cannot reach {url} ({type(error).__name__}: {error})"
                continue
            if response.status_code in RETRY_STATUS:
                last = f"HTTP {response.status_code} from {url}: {response.text[:200]}"
                continue
            if response.status_code != 200:
                raise MalformedAnswer(f"HTTP {response.status_code} from {url}: {response.text[:200]}")
            return parse_completion(response)
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
