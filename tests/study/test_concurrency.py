"""Many raters at once on one SQLite file lose nothing; a SIGKILLed rater session keeps every committed
rating and leaves a file that passes ``PRAGMA integrity_check``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


from ophora.study import AlreadyRatedError, StudyStore, load_definition
from ophora.study.db import integrity_check
from tests.study.helpers import full_answer, write_study

REPO = Path(__file__).resolve().parents[2]


def _populated(tmp_path, n_raters: int, n_real: int = 3, n_generated: int = 3):
    raters = [f"r{i:02d}" for i in range(n_raters)]
    definition = load_definition(write_study(tmp_path, n_real=n_real, n_generated=n_generated, raters=raters))
    db = tmp_path / "study.db"
    with StudyStore(db) as store:
        codes = store.create_study(definition, blind_dir=tmp_path / "blinded")
        store.import_clips(definition.slug, definition.clips())
        store.open_study(definition.slug)
    return db, definition.slug, codes


def _rate_all(store: StudyStore, code: str) -> int:
    n = 0
    while (item := store.next_item(code)) is not None:
        a = full_answer(item, 1 + item.position % 5)
        store.submit_rating(code, item.clip_id, a["scores"], phase=a["phase"], turing=a["turing"],
                            confidence=a["confidence"], seconds=0.1)
        n += 1
    return n


def test_many_threads_rating_at_once_lose_nothing(tmp_path):
    db, slug, codes = _populated(tmp_path, n_raters=24)
    store = StudyStore(db, pool_size=8, max_overflow=32)
    barrier = threading.Barrier(len(codes))

    def worker(code):
        barrier.wait()
        return _rate_all(store, code)

    with ThreadPoolExecutor(max_workers=len(codes)) as pool:
        done = list(pool.map(worker, codes.values()))
    assert done == [6] * len(codes)
    frame = store.ratings_frame(slug)
    assert len(frame) == len(codes) * 6 * 2
    assert not frame.duplicated(["rater", "clip_id", "reading", "criterion"]).any()
    assert all(p.finished for p in store.progress(slug))
    log = store.audit_log(slug)
    assert (log["action"] == "submit").sum() == len(codes) * 6
    assert integrity_check(store.engine) == "ok"
    store.close()


def test_racing_submissions_of_the_same_item_store_exactly_one(tmp_path):
    db, slug, codes = _populated(tmp_path, n_raters=1, n_real=1, n_generated=1)
    store = StudyStore(db, pool_size=8, max_overflow=8)
    code = codes["r00"]
    item = store.next_item(code)
    barrier = threading.Barrier(12)

    def attempt(i):
        barrier.wait()
        try:
            store.submit_rating(code, item.clip_id, {c["name"]: 1 + i % 5 for c in item.criteria},
                                phase=item.phases[0], turing="real", confidence=1)
            return "ok"
        except AlreadyRatedError:
            return "refused"

    with ThreadPoolExecutor(max_workers=12) as pool:
        outcomes = list(pool.map(attempt, range(12)))
    assert outcomes.count("ok") == 1 and outcomes.count("refused") == 11
    assert len(store.ratings_frame(slug)) == 2
    store.close()


WORKER = r"""
import json, sys
from ophora.study import StudyStore, AlreadyRatedError
from tests.study.helpers import full_answer
db, codes, shared = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
store = StudyStore(db, migrate=True)
results = {"rated": 0, "shared_ok": 0, "shared_refused": 0}
item = store.item_at(shared, 1)  # every process races for the same first item
a = full_answer(item, 2)
try:
    store.submit_rating(shared, item.clip_id, a["scores"], phase=a["phase"], turing="real", confidence=2, position=1)
    results["shared_ok"] += 1
except AlreadyRatedError:
    results["shared_refused"] += 1
for code in codes:
    while (item := store.next_item(code)) is not None:
        a = full_answer(item, 1 + item.position % 5)
        store.submit_rating(code, item.clip_id, a["scores"], phase=a["phase"], turing="synthetic", confidence=4)
        results["rated"] += 1
        sys.stdout.write("committed %s %s\n" % (code, item.position)); sys.stdout.flush()
print(json.dumps(results))
"""


def test_many_processes_rating_at_once_lose_nothing(tmp_path):
    db, slug, codes = _populated(tmp_path, n_raters=13)
    names = sorted(codes)
    shared = codes[names[0]]
    groups = [[codes[n] for n in names[1 + i::4]] for i in range(4)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(db), json.dumps(g), shared], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for g in groups]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(r["rated"] for r in results) == 12 * 6
    assert sum(r["shared_ok"] for r in results) == 1 and sum(r["shared_refused"] for r in results) == 3
    with StudyStore(db) as store:
        frame = store.ratings_frame(slug)
        assert len(frame) == (12 * 6 + 1) * 2
        assert not frame.duplicated(["rater", "clip_id", "reading", "criterion"]).any()
        assert integrity_check(store.engine) == "ok"


def test_sigkill_mid_session_keeps_every_committed_rating(tmp_path):
    db, slug, codes = _populated(tmp_path, n_raters=10)
    names = sorted(codes)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(db), json.dumps([codes[n] for n in names[1:]]),
                             codes[names[0]]], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    committed = []
    deadline = time.monotonic() + 120
    while len(committed) < 20 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("committed "):
            committed.append(tuple(line.split()[1:]))
    os.kill(proc.pid, signal.SIGKILL)  # no cleanup, no rollback handlers: the process just vanishes
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert len(committed) >= 20, proc.stderr.read()

    with StudyStore(db) as store:
        assert integrity_check(store.engine) == "ok"
        by_code = {code: name for name, code in codes.items()}
        frame = store.ratings_frame(slug)
        stored = set(zip(frame["rater"], frame["position"].astype(str)))
        for code, position in committed:
            assert (by_code[code], position) in stored, f"committed rating {by_code[code]} #{position} was lost"
        # Every stored reading is complete (all criteria + answer): a kill never leaves half a rating.
        per_reading = frame.groupby(["rater", "position"]).size()
        assert (per_reading == 2).all()
        assert frame["turing_answer"].notna().all()
        # The killed rater resumes exactly after their last stored reading.
        for name in names[1:]:
            progress = store.rater_progress(codes[name])
            assert progress.done == (frame["rater"] == name).sum() // 2
            if not progress.finished:
                assert store.next_item(codes[name]).position == progress.done + 1
