"""Process hygiene: a curation run killed with SIGINT, SIGTERM or SIGKILL leaves no worker, resource tracker
or Ray process behind 5 s after it ends. The real CLI runs in its own session over real clips; every process
of that session (and every descendant seen before the kill) must be gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]


def family(leader: int) -> list[psutil.Process]:
    """The run's processes: descendants of the CLI and anything else in its session (re-parented ones too)."""
    found: dict[int, psutil.Process] = {}
    try:
        found.update({p.pid: p for p in psutil.Process(leader).children(recursive=True)})
    except psutil.NoSuchProcess:
        pass
    for process in psutil.process_iter():
        try:
            if process.pid != leader and os.getsid(process.pid) == leader:
                found[process.pid] = process
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return list(found.values())


def start_run(tmp_path: Path, sample_clips, backend: str) -> tuple[subprocess.Popen, Path]:
    rows = [{"clip_id": f"clip-{i:03d}", "video": str(sample_clips[i % 2]),
             "caption": "Remove the cortex with the I/A tip."} for i in range(400)]
    manifest = tmp_path / "many.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    out = tmp_path / "curated.parquet"
    log = tmp_path / "run.log"
    command = [sys.executable, "-m", "ophora", "curate", "--input", str(manifest), "--out", str(out),
               "--backend", backend] + (["--workers", "2"] if backend == "local" else [])
    process = subprocess.Popen(command, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT,
                               start_new_session=True,  # Ctrl-C works even if this shell ignores SIGINT:
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return process, log


def wait_for_work(process: subprocess.Popen, log: Path, timeout_s: float = 120) -> list[psutil.Process]:
    """Wait until clips are being decided (so workers, tracker and Ray are all up), then snapshot the family."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        if sum(line.startswith("[") for line in log.read_text().splitlines()) >= 3:  # "[3/400] clip-002 keep"
            return family(process.pid)
        time.sleep(0.2)
    raise AssertionError(f"no clip decided within {timeout_s} s:\n{log.read_text()}")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", "ray"])
@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_a_killed_run_leaves_no_process_behind(tmp_path, sample_clips, backend, how):
    if backend == "ray":
        import ray  # noqa: F401  a test dependency (requirements-dev.txt): this test must run, not skip
    process, log = start_run(tmp_path, sample_clips, backend)
    try:
        before = wait_for_work(process, log)
        names = sorted({p.name() for p in before if p.is_running()})
        if backend == "local":
            assert len([p for p in before if "python" in p.name().lower()]) >= 3, names  # 2 workers + tracker
        os.kill(process.pid, getattr(signal, how))
        code = process.wait(timeout=30)
        ended = time.monotonic()
        if how == "SIGKILL":
            assert code == -signal.SIGKILL
        else:  # a clean stop that says how to go on
            text = log.read_text()  # a crash report starts with its cause: show both ends
            assert code == 130, text[:3000] + "\n...\n" + text[-1500:]
            assert "Rerun the same command to continue" in log.read_text()
        seen = {p.pid: p for p in before + family(process.pid)}
        left = [p for p in seen.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        while left and time.monotonic() - ended < 5.0:
            time.sleep(0.1)
            left = [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        described = [f"{p.pid} {p.name()} {' '.join(p.cmdline()[:4])}" for p in left if p.is_running()]
        assert not left, f"still running 5 s after the run ended ({how}, {backend}): {described}"
    finally:
        for leftover in family(process.pid):
            leftover.kill()
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
def test_stopping_a_run_on_the_callers_ray_frees_its_cpus_and_keeps_the_session(sample_clips):
    """In a notebook the Ray session belongs to the user: a stopped run cancels only its own tasks (no forced
    kills, which race finishing tasks and can abort the whole process) and leaves the session usable."""
    import ray

    from ophora.curation.config import load_config
    from ophora.curation.inputs import ClipTask
    from ophora.curation.pipeline import run_ray

    tasks = [ClipTask(clip_id=f"clip-{i:03d}", video=str(sample_clips[i % 2]),
                      caption="Remove the cortex with the I/A tip.") for i in range(400)]  # a minute of work
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rows = run_ray(tasks, load_config(None, []), None)
        first = next(rows)
        assert first["decision"] in ("keep", "drop"), first
        rows.close()  # what an interrupted run does
        assert ray.is_initialized()
        deadline = time.monotonic() + 10  # a running batch may finish its current clip first
        while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ray.available_resources().get("CPU", 0) == 2, "the run's cancelled tasks still hold CPUs"
        assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42
    finally:
        ray.shutdown()
