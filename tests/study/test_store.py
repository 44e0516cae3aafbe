"""The study database on a real SQLite file: assignments, resume, validation, versioned changes, audit log."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from ophora.study import (AlreadyRatedError, InvalidRatingError, NotRatedError, StudyError, StudyStore,
                          UnknownClipError, UnknownRaterError, UnknownStudyError, load_definition)
from ophora.study.db import current_revision, head_revision, integrity_check, upgrade, make_engine
from tests.study.helpers import make_video, full_answer, write_study


def test_sqlite_pragmas(store_and_codes):
    store, _, _ = store_and_codes
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000
    assert integrity_check(store.engine) == "ok"
    assert current_revision(store.engine) == head_revision()


def test_orders_are_seeded_per_rater_and_cover_every_clip(tmp_path, store_and_codes):
    store, slug, codes = store_and_codes
    clip_ids = set(store.clips_frame(slug)["clip_id"])

    def order(code):
        return [store.item_at(code, p).clip_id for p in range(1, len(clip_ids) + 1)]

    orders = {name: order(code) for name, code in codes.items()}
    for seq in orders.values():
        assert sorted(seq) == sorted(clip_ids)
    assert len({tuple(seq) for seq in orders.values()}) > 1, "raters must get independent orders"
    # Same seed and rater names in a fresh database give the same positions for the same source files.
    definition = load_definition(write_study(tmp_path / "again"))
    again = StudyStore(tmp_path / "again.db")
    codes2 = again.create_study(definition, blind_dir=tmp_path / "again-blind")
    again.import_clips(slug, definition.clips())
    again.open_study(slug)
    key1, key2 = store.clips_frame(slug), again.clips_frame(slug)
    name1 = dict(zip(key1["clip_id"], key1["sha256"]))
    name2 = dict(zip(key2["clip_id"], key2["sha256"]))
    for rater in codes:
        seq2 = [again.item_at(codes2[rater], p).clip_id for p in range(1, len(clip_ids) + 1)]
        assert [name1[c] for c in orders[rater]] == [name2[c] for c in seq2]
    again.close()


def test_rate_resume_and_finish(tmp_path, store_and_codes):
    store, slug, codes = store_and_codes
    code = codes["r1"]
    seen = []
    for _ in range(3):
        item = store.next_item(code)
        seen.append(item.position)
        a = full_answer(item, 4)
        store.submit_rating(code, item.clip_id, a["scores"], phase=a["phase"], turing=a["turing"],
                            confidence=a["confidence"], seconds=5.0, comment="ok")
    assert seen == [1, 2, 3]
    store.close()
    # The rater comes back later (new process, new store object): they continue at the first unrated clip.
    reopened = StudyStore(tmp_path / "study.db")
    item = reopened.next_item(code)
    assert item.position == 4 and item.total == 6
    assert reopened.rater_progress(code).done == 3
    while item is not None:
        a = full_answer(item, 2)
        reopened.submit_rating(code, item.clip_id, a["scores"], phase=a["phase"], turing=a["turing"],
                               confidence=a["confidence"])
        item = reopened.next_item(code)
    progress = {p.rater: p for p in reopened.progress(slug)}
    assert progress["r1"].finished and progress["r1"].next_position is None
    assert progress["r2"].done == 0
    frame = reopened.ratings_frame(slug)
    assert len(frame) == 6 * 2 and set(frame["rater"]) == {"r1"}
    reopened.close()


def test_instruction_shown_only_when_a_criterion_needs_it(tmp_path):
    path = write_study(tmp_path, n_real=1, n_generated=1)
    definition = load_definition(path)
    with StudyStore(tmp_path / "a.db") as store:
        codes = store.create_study(definition, blind_dir=tmp_path / "b")
        store.import_clips(definition.slug, definition.clips())
        store.open_study(definition.slug)
        assert store.next_item(codes["r1"]).instruction  # phase_matching shows the instruction
    text_ = path.read_text().replace("shows_instruction: true", "shows_instruction: false").replace("test-study", "other")
    path.write_text(text_)
    definition = load_definition(path)
    with StudyStore(tmp_path / "c.db") as store:
        codes = store.create_study(definition, blind_dir=tmp_path / "d")
        store.import_clips(definition.slug, definition.clips())
        store.open_study(definition.slug)
        assert store.next_item(codes["r1"]).instruction is None


@pytest.mark.parametrize("kwargs,error,message", [
    ({"scores": {"phase_matching": 6, "realism": 3}}, InvalidRatingError, "out of range: 6 is not between 1 and 5"),
    ({"scores": {"phase_matching": 0, "realism": 3}}, InvalidRatingError, "out of range"),
    ({"scores": {"phase_matching": 2.5, "realism": 3}}, InvalidRatingError, "whole number from 1 to 5"),
    ({"scores": {"phase_matching": 3}}, InvalidRatingError, "missing scores for ['realism']"),
    ({"scores": {"phase_matching": 3, "realism": 3, "colour": 1}}, InvalidRatingError, "unknown criterion ['colour']"),
    ({"phase": "appendectomy"}, InvalidRatingError, "phase answer 'appendectomy' is not one of"),
    ({"turing": "maybe"}, InvalidRatingError, "must be 'real' or 'synthetic'"),
    ({"confidence": 9}, InvalidRatingError, "confidence is out of range"),
    ({"clip_id": "cdeadbeefdeadbeef"}, UnknownClipError, "unknown clip 'cdeadbeefdeadbeef'"),
    ({"code": "not-a-code"}, UnknownRaterError, "unknown access code"),
    ({"scores": {"phase_matching": float("inf"), "realism": 3}}, InvalidRatingError, "whole number from 1 to 5"),
    ({"scores": {"phase_matching": float("nan"), "realism": 3}}, InvalidRatingError, "whole number from 1 to 5"),
    ({"scores": {"phase_matching": "3", "realism": 3}}, InvalidRatingError, "whole number from 1 to 5"),
    ({"scores": {"phase_matching": True, "realism": 3}}, InvalidRatingError, "whole number from 1 to 5"),
    ({"confidence": float("nan")}, InvalidRatingError, "confidence must be a whole number"),
    ({"comment": 42}, InvalidRatingError, "a comment must be text, got int"),
    ({"comment": ["a"]}, InvalidRatingError, "a comment must be text, got list"),
    ({"comment": "x" * 5001}, InvalidRatingError, "the comment has 5001 characters; shorten it to at most 5000"),
    ({"seconds": -1}, InvalidRatingError, "seconds spent must be a finite number >= 0"),
    ({"seconds": float("inf")}, InvalidRatingError, "seconds spent must be a finite number >= 0"),
    ({"seconds": "12"}, InvalidRatingError, "seconds spent must be a finite number >= 0"),
    ({"phase": 3}, InvalidRatingError, "phase answer 3 is not one of"),
])
def test_bad_ratings_get_clear_errors(store_and_codes, kwargs, error, message):
    store, slug, codes = store_and_codes
    item = store.next_item(codes["r1"])
    a = full_answer(item)
    call = {"code": codes["r1"], "clip_id": item.clip_id, **a}
    call.update(kwargs)
    with pytest.raises(error) as info:
        store.submit_rating(call.pop("code"), call.pop("clip_id"), call.pop("scores"), **call)
    assert message in str(info.value)
    assert store.ratings_frame(slug).empty  # nothing half-written
    assert store.next_item(codes["r1"]).position == 1


def test_numpy_numbers_are_accepted_as_integers(store_and_codes):
    import numpy as np

    store, slug, codes = store_and_codes
    item = store.next_item(codes["r1"])
    store.submit_rating(codes["r1"], item.clip_id, {"phase_matching": np.int64(4), "realism": np.int32(2)},
                        phase=item.phases[0], turing="real", confidence=np.int16(5), comment="x" * 5000,
                        seconds=np.float32(3.5))
    answer = store.latest_answer(codes["r1"], item.clip_id)
    assert answer["scores"] == {"phase_matching": 4, "realism": 2} and answer["confidence"] == 5
    assert type(answer["scores"]["realism"]) is int and answer["seconds"] == 3.5


def test_unknown_study_and_duplicate_study(store_and_codes, study_file):
    store, slug, _ = store_and_codes
    with pytest.raises(UnknownStudyError, match="no study 'nope'.*test-study"):
        store.progress("nope")
    with pytest.raises(StudyError, match="already exists"):
        store.create_study(load_definition(study_file))


def test_second_rating_is_refused_and_changes_are_versioned_in_the_audit_log(store_and_codes):
    store, slug, codes = store_and_codes
    code = codes["r2"]
    item = store.next_item(code)
    a = full_answer(item, 2)
    with pytest.raises(NotRatedError, match="has not been rated yet"):
        store.change_rating(code, item.clip_id, scores={"realism": 5}, reason="x")
    store.submit_rating(code, item.clip_id, a["scores"], phase=a["phase"], turing=a["turing"], confidence=2)
    with pytest.raises(AlreadyRatedError, match="use change_rating"):
        store.submit_rating(code, item.clip_id, a["scores"], phase=a["phase"], turing=a["turing"], confidence=2)
    with pytest.raises(InvalidRatingError, match="needs a reason"):
        store.change_rating(code, item.clip_id, scores={"realism": 5}, reason=" ")
    with pytest.raises(InvalidRatingError, match="out of range"):
        store.change_rating(code, item.clip_id, scores={"realism": 7}, reason="typo")
    assert store.change_rating(code, item.clip_id, scores={"realism": 5}, turing="synthetic", reason="second look") == 2
    assert store.change_rating(code, item.clip_id, scores={"realism": 4}, reason="third look") == 3

    frame = store.ratings_frame(slug)
    rows = frame[frame["clip_id"] == item.clip_id].set_index("criterion")
    assert len(frame) == 2  # readers see one row per criterion: the newest version
    assert rows.loc["realism", "score"] == 4 and rows.loc["realism", "version"] == 3
    assert rows.loc["phase_matching", "score"] == 2 and rows.loc["realism", "turing_answer"] == "synthetic"

    log = store.audit_log(slug)
    mine = log[log["actor"] == "r2"]
    assert list(mine["action"]) == ["submit", "change", "change"]
    history = [json.loads(v)["scores"].get("realism") for v in mine["new_value"]]
    assert history == [2, 5, 4]
    assert [json.loads(v)["scores"]["realism"] for v in mine["old_value"].dropna()] == [2, 5]
    assert list(mine["reason"].dropna()) == ["second look", "third look"]


def test_ratings_are_append_only_versions_and_the_form_can_be_prefilled(store_and_codes, tmp_path):
    store, slug, codes = store_and_codes
    code = codes["r1"]
    item = store.next_item(code)
    assert store.latest_answer(code, item.clip_id) is None
    store.submit_rating(code, item.clip_id, {"phase_matching": 2, "realism": 3}, phase="incision", turing="real",
                        confidence=4, comment="blurry", seconds=12.5)
    assert store.change_rating(code, item.clip_id, scores={"realism": 5}, comment="sharp after all",
                               reason="second look") == 2
    assert store.latest_answer(code, item.clip_id) == {
        "scores": {"phase_matching": 2, "realism": 5}, "phase": "incision", "turing": "real", "confidence": 4,
        "comment": "sharp after all", "seconds": 12.5, "version": 2}
    assert store.latest_answer(code, item.clip_id, position=item.position)["version"] == 2
    raw = sqlite3.connect(tmp_path / "study.db")
    # Every version is kept: the first score and comment are still rows of their own.
    assert raw.execute("SELECT score, version FROM ratings WHERE criterion = 'realism' ORDER BY version").fetchall() \
        == [(3, 1), (5, 2)]
    assert raw.execute("SELECT comment FROM answers ORDER BY version").fetchall() == [("blurry",), ("sharp after all",)]
    for sql in ("UPDATE ratings SET score = 1", "DELETE FROM ratings", "UPDATE answers SET comment = 'x'",
                "DELETE FROM answers"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute(sql)
    raw.close()


def test_codes_issued_by_a_call_are_returned(store_and_codes):
    store, slug, codes = store_and_codes
    new = store.add_raters(slug, [" r4 ", "r5"])
    assert set(new) == {"r4", "r5"} and all(store.rater_name(c) == n for n, c in new.items())
    again = store.reissue_codes(slug, ["r1", "r4"])
    assert set(again) == {"r1", "r4"} and store.rater_name(again["r1"]) == "r1"
    with pytest.raises(UnknownRaterError):
        store.rater_name(codes["r1"])
    with pytest.raises(StudyError, match="listed twice"):
        store.add_raters(slug, ["r6", " r6"])
    assert "r6" not in [p.rater for p in store.progress(slug)]


def test_failed_import_leaves_no_blinded_file_and_no_row(store_and_codes, tmp_path):
    from ophora.study.definition import ClipSpec

    store, slug, _ = store_and_codes
    before_files = sorted((tmp_path / "blinded").iterdir())
    before_log = len(store.audit_log(slug))
    good = make_video(tmp_path / "more" / "good.mp4", 55)
    broken = tmp_path / "more" / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    specs = [ClipSpec(good, "real", "real", "incision", "Make an incision", "late"),
             ClipSpec(broken, "real", "real", "incision", "Make an incision", "late")]
    with pytest.raises(StudyError, match=r"damaged: these files are damaged .*broken\.mp4 \(.*Invalid data"):
        store.import_clips(slug, specs)  # refused while checking, before anything is encoded

    def nothing_left() -> None:
        assert sorted((tmp_path / "blinded").iterdir()) == before_files
        assert not [p for p in tmp_path.iterdir() if "staging" in p.name]
        assert len(store.clips_frame(slug)) == 6 and len(store.audit_log(slug)) == before_log

    nothing_left()
    # A failure after encoding: the lead locks the study while clips are being blinded.
    more = [ClipSpec(make_video(tmp_path / "more" / f"m{i}.mp4", 60 + i), "real", "real", "incision", "x", "real")
            for i in range(3)]
    seen = []

    def lock_midway(done: int, total: int) -> None:
        seen.append(done)
        if done == 2:
            store.lock_study(slug)

    with pytest.raises(StudyError, match="locked for analysis; cannot import clips"):
        store.import_clips(slug, more, progress=lock_midway)
    assert seen == [1, 2, 3]
    before_log += 1  # the lock itself is audited
    nothing_left()


def test_audit_log_is_append_only_in_the_database(store_and_codes, tmp_path):
    store, slug, _ = store_and_codes
    # Even a SQL shell cannot rewrite history: the triggers from migration 0002 abort UPDATE and DELETE.
    raw = sqlite3.connect(tmp_path / "study.db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("UPDATE audit_log SET actor = 'someone else'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("DELETE FROM audit_log")
    raw.execute("INSERT INTO audit_log (study_id, at, actor, action, is_admin) VALUES (1, '2026-01-01', 'x', 'note', 0)")
    raw.commit()
    raw.close()


def test_access_codes_are_stored_only_as_hashes(store_and_codes, tmp_path):
    store, slug, codes = store_and_codes
    store.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("study.db*"))
    for code in codes.values():
        assert code.encode() not in blob
    reopened = StudyStore(tmp_path / "study.db")
    assert reopened.rater_name(codes["r3"]) == "r3"
    new_code = reopened.reissue_code(slug, "r3")
    with pytest.raises(UnknownRaterError):
        reopened.rater_name(codes["r3"])
    assert reopened.rater_name(new_code) == "r3"
    reopened.close()


def _rate_all(store, code, score: int = 3, limit: int | None = None) -> list:
    """Rate the readings the rater is offered (all, or the first ``limit``), in order; return the items."""
    items = []
    while (limit is None or len(items) < limit) and (item := store.next_item(code)) is not None:
        items.append(item)
        a = full_answer(item, score)
        store.submit_rating(code, item.clip_id, a["scores"], phase=a["phase"], turing="real", confidence=1)
    return items


def _one_rater_study(tmp_path, *, clock=None, **study):
    """An open study with one rater 'a' and its clips imported: (store, definition, code)."""
    definition = load_definition(write_study(tmp_path, raters=("a",), **study))
    store = StudyStore(tmp_path / "one.db", clock=clock)
    code = store.create_study(definition, blind_dir=tmp_path / "blinded")["a"]
    store.import_clips(definition.slug, definition.clips())
    store.open_study(definition.slug)
    return store, definition, code


def test_repeats_come_after_first_readings_and_feed_intra_rater_reliability(tmp_path):
    definition = load_definition(write_study(tmp_path, n_real=2, n_generated=2, raters=("a",), repeats=2))
    with StudyStore(tmp_path / "r.db") as store:
        code = store.create_study(definition, blind_dir=tmp_path / "b")["a"]
        store.import_clips(definition.slug, definition.clips())
        store.open_study(definition.slug)
        rated = _rate_all(store, code)
        items = [item.clip_id for item in rated]
        # Six readings under six different opaque ids: the rater is not told which two are repeats.
        assert len(items) == 6 and len(set(items)) == 6
        frame = store.ratings_frame(definition.slug)
        assert sorted(frame.drop_duplicates(["clip_id", "reading"])["reading"]) == [0, 0, 0, 0, 1, 1]
        # The analysis sees the repeats as second readings of first-pass clips, each placed after its first.
        firsts = frame[frame["reading"] == 0].groupby("clip_id")["position"].first()
        for repeat in frame[frame["reading"] == 1].drop_duplicates("clip_id").itertuples():
            assert repeat.position > firsts[repeat.clip_id]
        last = rated[-1]
        with pytest.raises(AlreadyRatedError):
            store.submit_rating(code, last.clip_id, {"phase_matching": 1, "realism": 1}, phase="incision",
                                turing="real", confidence=1)
        assert store.change_rating(code, last.clip_id, scores={"realism": 5}, reason="repeat fix") == 2
        changed = store.ratings_frame(definition.slug)
        realism = changed[changed["criterion"] == "realism"]
        assert realism[realism["position"] == last.position]["score"].item() == 5
        assert realism[realism["position"] != last.position]["score"].eq(3).all()


def test_repeats_are_their_own_encodes_at_random_places(tmp_path, monkeypatch):
    """Issue 20: a repeat was a byte copy of its first reading (same size, so the same ETag from the
    fixed time) and always came last. Now each is its own encode, a few percent off in size, and the
    served files' ETag and Last-Modified say nothing about which readings belong together."""
    import os

    from starlette.responses import FileResponse

    from app.security import stage_file

    definition = load_definition(write_study(tmp_path, n_real=2, n_generated=2, raters=("a", "b", "c"),
                                             repeats={"count": 2, "after_items": 1}))
    with StudyStore(tmp_path / "r.db") as store:
        store.create_study(definition, blind_dir=tmp_path / "b")
        store.import_clips(definition.slug, definition.clips())
        with store.engine.connect() as conn:
            rows = conn.execute(text("SELECT a.rater_id, a.position, a.reading, c.blinded_path, a.alias_path, "
                                     "(SELECT position FROM assignments f WHERE f.rater_id = a.rater_id AND "
                                     "f.clip_id = a.clip_id AND f.reading = 0) FROM assignments a JOIN clips c "
                                     "ON c.id = a.clip_id WHERE a.reading = 1")).all()
    assert len(rows) == 3 * 2
    last_places = 0
    for rater, position, _, first_file, repeat_file, first_position in rows:
        first, repeat = Path(first_file).read_bytes(), Path(repeat_file).read_bytes()
        assert first != repeat and abs(len(repeat) - len(first)) / len(first) < 0.15
        assert position - first_position >= 2  # the washout: at least one other reading in between
        last_places += position > 4  # after all four first readings
    assert last_places < len(rows), "every repeat came after every first reading"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "served"))  # where the rater station stages clips
    headers = []
    for rater, _, _, first_file, repeat_file, _ in rows:
        for path in (first_file, repeat_file):
            staged = stage_file(path, name="clip.mp4")
            headers.append(FileResponse(staged, stat_result=os.stat(staged)).headers)
    assert len({h["last-modified"] for h in headers}) == 1  # one fixed time: no order
    for i in range(0, len(headers), 2):
        assert headers[i]["etag"] != headers[i + 1]["etag"]
        assert headers[i]["content-length"] != headers[i + 1]["content-length"]


def test_clips_imported_later_and_raters_added_later(tmp_path):
    path = write_study(tmp_path, n_real=2, n_generated=1)
    definition = load_definition(path)
    with StudyStore(tmp_path / "l.db") as store:
        codes = store.create_study(definition, blind_dir=tmp_path / "b")
        with pytest.raises(StudyError, match="not open for rating yet"):
            store.next_item(codes["r1"])  # a draft: the lead is still setting it up
        with pytest.raises(StudyError, match="no clips yet"):
            store.open_study(definition.slug)
        assert store.import_clips(definition.slug, definition.clips()) == 3
        assert store.import_clips(definition.slug, definition.clips()) == 0  # idempotent by content hash
        late = store.add_rater(definition.slug, "late")
        assert store.rater_progress(late).total == 3
        with pytest.raises(StudyError, match="already exists"):
            store.add_rater(definition.slug, "late")


def test_migration_from_the_first_schema_keeps_data(tmp_path):
    """A database made by the first release (schema 0001, no append-only triggers) opens in this one."""
    url = tmp_path / "old.db"
    engine = make_engine(url)
    upgrade(engine, "0001")
    assert current_revision(engine) == "0001"
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO studies (slug, title, definition_yaml, seed, created_at) "
                          "VALUES ('old', 'Old', :y, 1, '2025-01-01')"),
                     {"y": write_study(tmp_path, n_real=1, n_generated=0, slug="old").read_text()})
        conn.execute(text("INSERT INTO audit_log (study_id, at, actor, action, is_admin) "
                          "VALUES (1, '2025-01-01', 'admin', 'create_study', 1)"))
        conn.execute(text("UPDATE audit_log SET reason = 'editable in 0001'"))  # allowed before 0002
        # A rating made by the old schema (one row per criterion, edited in place back then).
        conn.execute(text("INSERT INTO clips (study_id, blind_id, clip_set, source, model, original_path, sha256, "
                          "blinded_path, created_at) VALUES (1, 'c0', 'real', 'real', 'real', 'a.mp4', 'x', 'b.mp4', "
                          "'2025-01-01')"))
        conn.execute(text("INSERT INTO raters (study_id, name, code_hash, created_at) VALUES (1, 'r', 'h', '2025-01-01')"))
        conn.execute(text("INSERT INTO assignments (rater_id, clip_id, position, reading, completed_at) "
                          "VALUES (1, 1, 1, 0, '2025-01-01')"))
        conn.execute(text("INSERT INTO ratings (assignment_id, criterion, score, version, rated_at) "
                          "VALUES (1, 'realism', 4, 2, '2025-01-01')"))
        conn.execute(text("INSERT INTO answers (assignment_id, version, answered_at) VALUES (1, 2, '2025-01-01')"))
    engine.dispose()
    with StudyStore(url) as store:
        assert current_revision(store.engine) == head_revision() == "0004"
        assert store.verify_record("old").ok  # chained as found, with its status
        assert store.studies() == ["old"]
        assert store.definition("old").title == "Test study"
        assert store.status("old") == "open"  # it may hold ratings: never a draft that could be deleted
        # What its raters saw stays as it was: each clip's own instruction, letterboxed pictures.
        assert store.definition("old").instruction_source == "per_clip"
        assert store.definition("old").blinding.fit == "letterbox"
        assert store.ratings_frame("old")[["criterion", "score", "version"]].values.tolist() == [["realism", 4, 2]]
        for sql in ("UPDATE audit_log SET reason = 'rewritten'", "DELETE FROM audit_log",
                    "UPDATE ratings SET score = 1", "DELETE FROM ratings", "UPDATE answers SET comment = 'x'",
                    "UPDATE studies SET status = 'draft'", "DELETE FROM studies"):
            with pytest.raises(Exception, match="append-only|only forward|only a draft"):
                with store.engine.begin() as conn:
                    conn.execute(text(sql))


def test_orm_models_match_the_migrated_schema(store_and_codes):
    """The ORM classes and the alembic head must describe the same schema (else a new column was added
    to one and not the other: write a migration)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from ophora.study.models import Base

    store, _, _ = store_and_codes
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_definition_built_in_code_round_trips_through_the_database(tmp_path, study_file):
    """The app builds definitions from a form (no YAML text): the store keeps an equivalent YAML."""
    import yaml as _yaml

    from ophora.study import parse_definition

    data = _yaml.safe_load(study_file.read_text())
    data["turing_test"] = {"enabled": True, "confidence": {"min": 0, "max": 100}}
    definition = parse_definition(data, base_dir=study_file.parent)
    with StudyStore(tmp_path / "code.db") as store:
        store.create_study(definition, blind_dir=tmp_path / "b")
        again = store.definition(definition.slug)
    for field in ("slug", "title", "criteria", "phases", "ask_phase", "turing_test", "turing_confidence",
                  "raters", "repeats", "seed", "blinding"):
        assert getattr(again, field) == getattr(definition, field), field


def test_clips_built_in_code_are_checked(store_and_codes, tmp_path):
    from ophora.study.definition import ClipSpec

    store, slug, _ = store_and_codes
    clip = next((tmp_path / "clips" / "real").glob("*.mp4"))
    bad = [
        (ClipSpec(tmp_path / "missing.mp4", "real", "real", None, None, "x"), "no such file"),
        (ClipSpec(clip, "fake", "real", None, None, "x"), "source must be 'real' or 'generated'"),
        (ClipSpec(clip, "generated", "", None, None, "x"), "model is empty"),
        (ClipSpec(clip, "real", "real", "appendectomy", None, "x"), "is not one of the study's phases"),
    ]
    for spec, message in bad:
        with pytest.raises(StudyError, match=message):
            store.import_clips(slug, [spec])
    assert len(store.clips_frame(slug)) == 6


def test_repeats_wait_for_an_item_washout(tmp_path):
    store, definition, code = _one_rater_study(tmp_path, n_real=3, n_generated=3,
                                               repeats={"count": 2, "after_items": 3})
    with store:
        order = [item.position for item in _rate_all(store, code)]
        assert order == list(range(1, 9)) and store.rater_progress(code).finished
        frame = store.ratings_frame(definition.slug).drop_duplicates(["clip_id", "reading"])
        firsts = frame[frame["reading"] == 0].set_index("clip_id")["position"]
        for clip_id, position in frame[frame["reading"] == 1][["clip_id", "position"]].values:
            assert position - firsts[clip_id] > 3  # at least 3 other readings in between

    too_long = load_definition(write_study(tmp_path / "x", n_real=3, n_generated=3, raters=("a",),
                                           repeats={"count": 2, "after_items": 5}))
    with StudyStore(tmp_path / "x.db") as store:
        store.create_study(too_long, blind_dir=tmp_path / "xb")
        with pytest.raises(StudyError, match="repeats.after_items is 5, but with 6 clips only 1 can be repeated"):
            store.import_clips(too_long.slug, too_long.clips())
        assert store.clips_frame(too_long.slug).empty and not list((tmp_path / "xb").iterdir())


def test_repeats_wait_for_a_day_washout_and_the_rater_sees_when(tmp_path, capsys):
    from datetime import datetime, timedelta, timezone

    now = [datetime.now(timezone.utc).replace(microsecond=0)]
    store, definition, code = _one_rater_study(tmp_path, clock=lambda: now[0], n_real=2, n_generated=1,
                                               repeats={"count": 1, "after_days": 2})
    with store:
        for _ in range(3):
            _rate_all(store, code, limit=1)
            now[0] += timedelta(minutes=10)
        progress = store.rater_progress(code)
        assert (progress.done, progress.total, progress.waiting, progress.finished) == (3, 4, 1, False)
        first = store.ratings_frame(definition.slug).query("reading == 0")["rated_at"]
        # two days after the repeated clip's first reading
        assert (progress.unlocks_at - timedelta(days=2)).replace(tzinfo=None) in set(first.dt.to_pydatetime())
        assert f"unlock on {progress.unlocks_at:%Y-%m-%d %H:%M} UTC" in progress.message
        assert progress.unlocks_at > datetime.now(timezone.utc) + timedelta(days=1)
        from ophora.study.cli import main

        assert main(["status", definition.slug, "--db", str(tmp_path / "one.db")]) == 0  # the real clock
        assert f"1 repeat(s) in washout until {progress.unlocks_at:%Y-%m-%d %H:%M} UTC" in capsys.readouterr().out
        repeat = store.item_at(code, 4)
        with pytest.raises(UnknownClipError, match="not open for rating yet"):
            store.submit_rating(code, repeat.clip_id, {"phase_matching": 1, "realism": 1}, phase="incision",
                                turing="real", confidence=1)
        now[0] = progress.unlocks_at + timedelta(seconds=1)
        item = store.next_item(code)
        assert item is not None and item.position == 4 and store.rater_progress(code).waiting == 0


def test_an_item_washout_never_leaves_a_rater_stuck_after_clips_are_removed(tmp_path):
    store, definition, code = _one_rater_study(tmp_path, n_real=3, n_generated=3,
                                               repeats={"count": 1, "after_items": 3})
    with store:
        _rate_all(store, code, limit=3)
        for position in (4, 4, 4):  # the lead removes the three unrated clips; later positions move up
            store.remove_clip(definition.slug, store.item_at(code, position).clip_id, reason="withdrawn")
        # The repeat can no longer get 3 readings after its first one: it is offered rather than stuck.
        item = store.next_item(code)
        assert item is not None and item.position == 4 and store.rater_progress(code).total == 4
