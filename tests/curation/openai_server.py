"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions protocol, for the backend tests.

The request's ``model`` picks the behaviour, so one server covers every case:
  refine-ok      a canned instruction            refine-narrate  an instruction that still narrates
  malformed      a body that is not JSON         no-choices      JSON without ``choices``
  slow           answers after ``slow_s``        fail-500        always HTTP 500
  flaky          HTTP 503 twice, then canned     vlm-clean / vlm-text / vlm-garbled  privacy rubric answers
  rate-limited   HTTP 429 with Retry-After: 1 twice, then canned
  deid-judge     PHI second opinion: "PHI" when the sentence mentions a relative, else "CLEAN"
  deid-unsure    PHI second opinion that answers neither word
  down-after-first  canned once (the run's preflight), then HTTP 503 for ever
  hang           answers after ``hang_s`` (a server that hangs)
``outage_after = N`` makes every request after the N-th answer HTTP 503 (an outage during a run).
Every request is recorded (path, model, messages) so tests can count calls and inspect what was sent.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CANNED_INSTRUCTION = ("Carefully remove cortex while managing aspiration to prevent zonular stress and avoid "
                      "capsule grasping or pulling.")
RUBRIC_NO = {"face": "no", "identifiable_person": "no", "on_screen_text": "no", "non_surgical": "no"}


class ChatServer:
    def __init__(self, slow_s: float = 2.0, hang_s: float = 20.0):
        self.requests: list[dict] = []
        self.slow_s = slow_s
        self.hang_s = hang_s
        self._flaky_count = 0
        self._counts: dict[str, int] = {}
        self.outage_after: int | None = None  # set: every request after this many (in all) gets HTTP 503
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append({"path": self.path, "model": body.get("model"),
                                            "messages": body.get("messages")})
                if self.path != "/v1/chat/completions":
                    return self._send(404, b'{"error": "not found"}')
                status, payload, *headers = server.answer(body)
                self._send(status, payload if isinstance(payload, bytes) else json.dumps(payload).encode(),
                           headers[0] if headers else {})

            def _send(self, status: int, payload: bytes, headers: dict | None = None):
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def calls(self, model: str | None = None) -> int:
        return sum(1 for r in self.requests if model is None or r["model"] == model)

    @staticmethod
    def completion(text: str) -> dict:
        return {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": "test",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}

    def _count(self, model: str) -> int:
        with self._lock:
            self._counts[model] = self._counts.get(model, 0) + 1
            return self._counts[model]

    def answer(self, body: dict) -> tuple:
        model = body.get("model")
        if self.outage_after is not None and len(self.requests) > self.outage_after:
            return 503, {"error": {"message": "outage"}}
        if model == "rate-limited":
            if self._count(model) <= 2:
                return 429, {"error": {"message": "rate limited"}}, {"Retry-After": "1"}
            return 200, self.completion(CANNED_INSTRUCTION)
        if model == "down-after-first":
            if self._count(model) == 1:
                return 200, self.completion(CANNED_INSTRUCTION)
            return 503, {"error": {"message": "down"}}
        if model == "hang":
            time.sleep(self.hang_s)
            return 200, self.completion(CANNED_INSTRUCTION)
        if model == "refine-ok":
            return 200, self.completion(CANNED_INSTRUCTION)
        if model == "refine-narrate":
            return 200, self.completion("In this video the surgeon removes the cortex.")
        if model == "malformed":
            return 200, b"<html>upstream proxy error</html>"
        if model == "no-choices":
            return 200, {"object": "chat.completion", "choices": []}
        if model == "slow":
            time.sleep(self.slow_s)
            return 200, self.completion(CANNED_INSTRUCTION)
        if model == "fail-500":
            return 500, {"error": {"message": "model crashed"}}
        if model == "flaky":
            with self._lock:
                self._flaky_count += 1
                count = self._flaky_count
            if count <= 2:
                return 503, {"error": {"message": "overloaded"}}
            return 200, self.completion(CANNED_INSTRUCTION)
        if model == "vlm-clean":
            return 200, self.completion("```json\n" + json.dumps(RUBRIC_NO) + "\n```")
        if model == "vlm-text":
            return 200, self.completion(json.dumps({**RUBRIC_NO, "on_screen_text": "yes"}))
        if model == "deid-judge":
            sentence = body["messages"][-1]["content"].lower()
            return 200, self.completion("PHI" if any(w in sentence for w in ("grandmother", "son", "wife")) else "CLEAN")
        if model == "deid-unsure":
            return 200, self.completion("It is hard to say.")
        if model == "vlm-garbled":
            return 200, self.completion("I think the frames look fine.")
        return 400, {"error": {"message": f"unknown test model {model!r}"}}

    def __enter__(self) -> "ChatServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
