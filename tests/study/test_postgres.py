"""The PostgreSQL path (multi-site studies) against a real server this module starts itself.

The server comes from Debian's ``postgresql`` package (``make test`` installs it). Missing binaries are a
test failure, not a skip: CI installs them, so their absence means a broken setup."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ophora.study import AlreadyRatedError, InvalidRatingError, StudyError, StudyStore, UnknownClipError, load_definition
from ophora.study.db import current_revision, head_revision
from tests.study.helpers import full_answer, write_study

pytestmark = pytest.mark.postgres


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if not found:
        pytest.fail("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: install Debian's "
                    "'postgresql' package (scripts/install_system_deps.sh, run by `make test`)")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_server():
    """initdb into a fresh folder, start on a free 127.0.0.1 port, yield an admin URL, stop and clean up.
    PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` system user."""
    bin_dir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="ophora-pg-"))
    os.chmod(root, 0o755)
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root but there is no 'postgres' system user to run the server as")
        os.chown(root, user.pw_uid, user.pw_gid)
        os.chown(sock, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def run(*cmd: str) -> None:
        result = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed: {result.stdout}\n{result.stderr}")

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
        f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", "start")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server) -> str:
    """A fresh, empty database per test."""
    name = "study_" + uuid.uuid4().hex[:12]
    admin = create_engine(f"{pg_server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"{pg_server}/{name}"


def _study(tmp_path, url, raters=("r1", "r2")):
    definition = load_definition(write_study(tmp_path, n_real=2, n_generated=2, raters=list(raters)))
    store = StudyStore(url, pool_size=10, max_overflow=30)
    codes = store.create_study(definition, blind_dir=tmp_path / "blind")
    store.import_clips(definition.slug, definition.clips())
    store.open_study(definition.slug)
    return store, definition.slug, codes


def test_postgres_full_session_with_versioned_changes(tmp_path, pg_url):
    store, slug, codes = _study(tmp_path, pg_url)
    assert store.engine.dialect.name == "postgresql"
    assert current_revision(store.engine) == head_revision()
    code = codes["r1"]
    item = store.next_item(code)
    with pytest.raises(InvalidRatingError, match="out of range"):
        store.submit_rating(code, item.clip_id, {"phase_matching": 9, "realism": 1}, phase=item.phases[0],
                            turing="real", confidence=1)
    with pytest.raises(UnknownClipError):
        store.submit_rating(code, "cffffffffffffffff", {"phase_matching": 1, "realism": 1})
    a = full_answer(item, 3)
    store.submit_rating(code, item.clip_id, a["scores"], phase=a["phase"], turing="real", confidence=2)
    with pytest.raises(AlreadyRatedError):
        store.submit_rating(code, item.clip_id, a["scores"], phase=a["phase"], turing="real", confidence=2)
    assert store.change_rating(code, item.clip_id, scores={"realism": 5}, reason="recheck") == 2
    store.close()

    reopened = StudyStore(pg_url)  # a second site opens the same database
    assert reopened.next_item(code).position == 2
    frame = reopened.ratings_frame(slug)
    assert len(frame) == 2 and frame.set_index("criterion").loc["realism", "score"] == 5
    log = reopened.audit_log(slug)
    assert list(log[log["actor"] == "r1"]["action"]) == ["submit", "change"]
    for sql in ("DELETE FROM audit_log", "UPDATE audit_log SET actor = 'x'", "UPDATE ratings SET score = 1",
                "DELETE FROM ratings", "UPDATE answers SET comment = 'x'", "DELETE FROM answers",
                "UPDATE studies SET status = 'draft'", "DELETE FROM studies"):
        with pytest.raises(Exception, match="append-only|only forward|only a draft"):
            with reopened.engine.begin() as conn:
                conn.execute(text(sql))
    with reopened.engine.connect() as conn:  # the change is a second version row; the first one stays
        versions = conn.execute(text("SELECT score, version FROM ratings WHERE criterion = 'realism' "
                                     "ORDER BY version")).all()
    assert [tuple(v) for v in versions] == [(3, 1), (5, 2)]
    assert reopened.latest_answer(code, item.clip_id)["scores"] == {"phase_matching": 3, "realism": 5}
    reopened.lock_study(slug, reason="analysis")
    with pytest.raises(StudyError, match="locked"):
        reopened.change_rating(code, item.clip_id, scores={"realism": 1}, reason="late")
    reopened.close()


def test_postgres_concurrent_raters_lose_nothing(tmp_path, pg_url):
    raters = [f"r{i:02d}" for i in range(16)]
    store, slug, codes = _study(tmp_path, pg_url, raters)
    barrier = threading.Barrier(len(raters))

    def rate(code):
        barrier.wait()
        n = 0
        while (item := store.next_item(code)) is not None:
            a = full_answer(item, 1 + item.position % 5)
            store.submit_rating(code, item.clip_id, a["scores"], phase=a["phase"], turing="real", confidence=3)
            n += 1
        return n

    with ThreadPoolExecutor(len(raters)) as pool:
        assert list(pool.map(rate, codes.values())) == [4] * len(raters)
    frame = store.ratings_frame(slug)
    assert len(frame) == len(raters) * 4 * 2
    assert not frame.duplicated(["rater", "clip_id", "reading", "criterion"]).any()

    # Racing submissions of one item (read-committed isolation): the unique constraint admits exactly one.
    late = store.add_rater(slug, "late")
    item = store.next_item(late)
    race = threading.Barrier(8)

    def attempt(_):
        race.wait()
        try:
            store.submit_rating(late, item.clip_id, {"phase_matching": 2, "realism": 2}, phase=item.phases[0],
                                turing="real", confidence=1)
            return "ok"
        except AlreadyRatedError:
            return "refused"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(8)))
    assert outcomes.count("ok") == 1

    # Racing changes of that answer: each is a new version row or a clear "try again", never a lost write.
    def change(i):
        race.wait()
        try:
            return store.change_rating(late, item.clip_id, scores={"realism": 1 + i % 5}, reason=f"race {i}")
        except StudyError as error:
            assert "changed at the same moment" in str(error)
            return None

    with ThreadPoolExecutor(8) as pool:
        versions = [v for v in pool.map(change, range(8)) if v is not None]
    assert versions and len(set(versions)) == len(versions)
    with store.engine.connect() as conn:
        stored = [v for (v,) in conn.execute(text(
            "SELECT r.version FROM ratings r JOIN assignments a ON a.id = r.assignment_id JOIN raters t "
            "ON t.id = a.rater_id WHERE t.name = 'late' AND r.criterion = 'realism' ORDER BY r.version"))]
    assert stored == [1] + sorted(versions)
    store.close()


def test_postgres_schema_matches_the_orm_models(pg_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from ophora.study.models import Base

    store = StudyStore(pg_url)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    store.close()
    assert diff == []


def test_postgres_attacks_on_the_record_are_refused_or_detected(tmp_path, pg_url):
    """Direct SQL from another session (issue 20): TRUNCATE refused, fixed rows refused, forgeries detected."""
    from tests.study.helpers import tamper_with_record

    store, slug, codes = _study(tmp_path, pg_url)
    outside = create_engine(pg_url)

    def execute(sql: str) -> None:
        with outside.begin() as conn:
            conn.execute(text(sql))

    try:
        tamper_with_record(store, slug, codes, execute, truncate=True)
    finally:
        outside.dispose()
        store.close()
