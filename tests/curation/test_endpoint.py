"""LLM endpoint behaviour over a run, against the real local fake server: Retry-After honoured, jittered
exponential backoff, a circuit breaker that pauses all workers and then stops the run, a clear stop when the
endpoint is down at start, and a per-clip time cap (hanging server). Malformed JSON is in test_refine.py."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from ophora.curation.chat_client import ChatEndpoint, CircuitBreaker, EndpointDown
from ophora.curation.cli import main
from ophora.curation.config import load_config
from ophora.curation.inputs import read_tasks
from ophora.curation.pipeline import run_pipeline
from ophora.curation.stages import RetryableError

from .openai_server import CANNED_INSTRUCTION, ChatServer

MESSAGES = [{"role": "user", "content": "Narration: remove the cortex."}]


def endpoint(server, model: str, **extra) -> ChatEndpoint:
    cfg = {"base_url": server.base_url, "model": model, "timeout_s": 5, "retries": 3, "backoff_s": 0.01, **extra}
    return ChatEndpoint.from_config(cfg)


def test_retry_after_is_honoured(chat_server):
    began = time.perf_counter()
    assert endpoint(chat_server, "rate-limited").complete(MESSAGES) == CANNED_INSTRUCTION
    assert chat_server.calls("rate-limited") == 3
    assert time.perf_counter() - began >= 2.0  # Retry-After: 1, twice (the backoff alone would be ~0.03 s)


def test_backoff_is_exponential_jittered_and_capped():
    chat = ChatEndpoint("http://127.0.0.1:9/v1", "m", backoff_s=1.0, max_backoff_s=5.0)
    draws = [[chat.backoff(attempt) for attempt in range(5)] for _ in range(20)]
    for attempt in range(5):
        values = [d[attempt] for d in draws]
        full = min(5.0, 2.0 ** attempt)
        assert all(0.5 * full <= v <= full for v in values) and len(set(values)) > 1  # jittered, in range


def test_endpoint_down_at_start_stops_the_run_before_any_clip(tmp_path, sample_clips, capsys):
    manifest = tmp_path / "clips.csv"
    pd.DataFrame([{"video": str(sample_clips[0]), "caption": "Remove the cortex with the I/A tip."}]).to_csv(
        manifest, index=False)
    began = time.perf_counter()
    code = main(["--input", str(manifest), "--out", str(tmp_path / "out.parquet"), "--workers", "1", "--quiet",
                 "--set", "refine.backend=openai", "--set", "refine.base_url=http://127.0.0.1:9/v1"])
    assert code == 3 and time.perf_counter() - began < 30
    error = capsys.readouterr().err
    assert "cannot reach endpoint http://127.0.0.1:9/v1/chat/completions at start" in error
    assert "Nothing was curated" in error
    with ChatServer() as server:  # a server that answers 500 at start is down too
        with pytest.raises(EndpointDown, match="answers HTTP 500 at start"):
            endpoint(server, "fail-500").preflight()


def test_hanging_endpoint_is_cut_by_the_per_clip_time_cap():
    with ChatServer(hang_s=15) as server:
        began = time.perf_counter()
        with pytest.raises(RetryableError, match="time cap of 1.5 s"):
            endpoint(server, "hang", timeout_s=60, clip_timeout_s=1.5).complete(MESSAGES)
        assert time.perf_counter() - began < 4


def test_circuit_breaker_is_shared_and_pauses(tmp_path):
    path = tmp_path / "breaker.json"
    one, other = CircuitBreaker(path, failures=2, pause_s=0.6), CircuitBreaker(path, failures=2, pause_s=0.6)
    one.failure("HTTP 500")
    other.failure("HTTP 500")  # the second consecutive failure, seen by another worker: open for everyone
    began = time.monotonic()
    one.wait(deadline=time.monotonic() + 10)
    assert time.monotonic() - began >= 0.5
    other.failure("x")
    other.failure("x")  # open again: a clip whose deadline comes before the end of the pause gives up at once
    with pytest.raises(RetryableError, match="beyond this clip's time cap"):
        one.wait(deadline=time.monotonic() + 0.1)


def test_outage_mid_run_pauses_all_workers_then_stops_the_run(tmp_path, sample_clips):
    rows = [{"clip_id": f"c{i}", "video": str(sample_clips[i % 2]),
             "caption": f"Remove the cortex with the I/A tip, part {i}."} for i in range(8)]
    manifest = tmp_path / "clips.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    with ChatServer() as server:
        server.outage_after = 1  # the preflight passes, then every request fails
        config = load_config(overrides=[
            "refine.backend=openai", f"refine.base_url={server.base_url}", "refine.model=refine-ok",
            "refine.retries=1", "refine.backoff_s=0.01", "refine.breaker_failures=3", "refine.breaker_pause_s=1",
            "refine.breaker_stop_after=2", "privacy.face_prescreen.enabled=false", "dynamics.enabled=false"])
        out = tmp_path / "out.parquet"
        began = time.perf_counter()
        with pytest.raises(EndpointDown, match="failed 3 times in a row, 2 times over"):
            run_pipeline(read_tasks(manifest), config, out, workers=2)
        elapsed = time.perf_counter() - began
        failed_requests = server.calls("refine-ok") - 1
    # 8 clips x 2 attempts would be 16 failing requests; the breaker stopped at 2 x 3 (+ what was in flight)
    assert failed_requests <= 3 * 2 + 2
    assert elapsed >= 1.0  # every worker sat out the pause
    saved = pd.read_parquet(out)  # what was decided before the stop is saved; the rest waits for a rerun
    assert (saved["decision"] != "keep").all() and len(saved) < 8
