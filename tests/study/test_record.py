"""The tamper-evident study record (issue 20): every attack on the database is refused or detected by
``study verify``, and every report and export carries the chain head it was made from."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest
from sqlalchemy import text

from ophora.study.cli import main
from tests.study.helpers import full_answer, tamper_with_record


def test_attacks_on_a_sqlite_record_are_refused_or_detected(store_and_codes, tmp_path):
    store, slug, codes = store_and_codes
    db = tmp_path / "study.db"

    def execute(sql: str) -> None:  # an external client: Python's sqlite3, foreign keys off (its default)
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA foreign_keys").fetchone() == (0,)
            with conn:
                conn.execute(sql)
        finally:
            conn.close()

    tamper_with_record(store, slug, codes, execute)


def test_verify_report_and_export_carry_the_chain_head_and_refuse_a_changed_record(store_and_codes, tmp_path,
                                                                                   capsys):
    store, slug, codes = store_and_codes
    code = codes["r2"]
    item = store.next_item(code)
    store.submit_rating(code, item.clip_id, **full_answer(item))
    head = store.verify_record(slug).head
    db = ["--db", str(tmp_path / "study.db")]
    assert main(["verify", slug, *db]) == 0
    assert f"chain head {head}" in capsys.readouterr().out
    report = tmp_path / "report.html"
    assert main(["report", slug, *db, "--out", str(report)]) == 0
    assert capsys.readouterr().out.startswith("record verified: ")
    assert f"chain head {head}" in report.read_text()
    assert main(["export", slug, *db, "--out", str(tmp_path / "export"), "--formats", "csv"]) == 0
    record = pd.read_csv(tmp_path / "export" / "record.csv")
    assert record["chain_head"].tolist() == [head] and record["verified"].tolist() == [True]

    with store.engine.begin() as conn:  # a forged newer version of one score
        conn.execute(text("INSERT INTO ratings (assignment_id, criterion, score, version, rated_at) "
                          "SELECT assignment_id, criterion, 1, version + 1, rated_at FROM ratings LIMIT 1"))
        forged = conn.execute(text("SELECT max(id) FROM ratings")).scalar()
    capsys.readouterr()
    assert main(["verify", slug, *db]) == 1
    assert f"ratings row {forged} is not in the record" in capsys.readouterr().err
    assert main(["report", slug, *db, "--out", str(report)]) == 2
    err = capsys.readouterr().err
    assert "RECORD CHECK FAILED" in err and "--force" in err and "Traceback" not in err
    assert main(["report", slug, *db, "--out", str(report), "--force"]) == 0
    assert "\033[31mWARNING: RECORD CHECK FAILED" in capsys.readouterr().err
    assert "color:#b00020" in report.read_text() and f"ratings row {forged}" in report.read_text()
    ratings_csv = tmp_path / "export" / "ratings.csv"
    assert main(["scores", str(ratings_csv), "--study", slug, *db]) == 2


@pytest.mark.parametrize("when", ["draft", "open"])
def test_the_engine_own_changes_keep_the_record_verified(tmp_path, when):
    """Relabel, remove (positions move up), reissue codes, change ratings, delete a draft: all chained."""
    from ophora.study import StudyStore, load_definition
    from tests.study.helpers import write_study

    definition = load_definition(write_study(tmp_path, repeats=1))
    store = StudyStore(tmp_path / "s.db")
    codes = store.create_study(definition, blind_dir=tmp_path / "b")
    store.import_clips(definition.slug, definition.clips())
    slug = definition.slug
    if when == "open":
        store.open_study(slug)
        item = store.next_item(codes["r1"])
        store.submit_rating(codes["r1"], item.clip_id, **full_answer(item, seconds=2.0))  # a whole float
        store.change_rating(codes["r1"], item.clip_id, reason="second look", scores={"realism": 1})
    clips = store.clips_frame(slug)["clip_id"].tolist()
    rated = set(store.ratings_frame(slug)["clip_id"])
    free = [c for c in clips if c not in rated]
    store.relabel_clip(slug, free[0], reason="wrong set", model="other")
    store.remove_clip(slug, free[1], reason="wrong file")
    store.reissue_code(slug, "r2")
    store.add_rater(slug, "late") if when == "draft" else None
    check = store.verify_record(slug)
    assert check.ok, check.problems
    assert check.rows["clips"] == len(clips) - 1
    if when == "draft":
        store.delete_study(slug)
        assert store.studies() == []
    store.close()


def test_two_simultaneous_imports_are_serialised_and_both_parity_checked(tmp_path):
    """Issue 20: two imports started together each passed the parity check against a study without the
    other's clips, so a 5x up-scaled set entered unwaived. Now the second waits and is checked against
    the first's clips; a killed import's staging folder is removed by the next import."""
    import threading

    from ophora.study import ParityError, StudyStore, load_definition
    from ophora.study.definition import ClipSpec
    from tests.study.helpers import make_video, write_study

    definition = load_definition(write_study(tmp_path, n_real=0, n_generated=2, raters=["r1"],
                                             blinding={"width": 320, "height": 240, "fps": 8, "crf": 30}))
    small = definition.clips()  # 64x48: enlarged 5x to the study size
    sharp = [ClipSpec(make_video(tmp_path / "hd" / f"real{i}.mp4", 50 + i, size="320x240"), "real", "real",
                      "phacoemulsification", f"Remove the lens {i}", "real") for i in range(2)]
    db = tmp_path / "s.db"
    with StudyStore(db) as store:
        store.create_study(definition, blind_dir=tmp_path / "blinded")
    stale = tmp_path / ".blinded-staging-deadbeef"  # left by an import killed mid-way
    stale.mkdir()
    (stale / "half.mp4").write_bytes(b"partial")
    start = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def run(name: str, specs) -> None:
        with StudyStore(db) as store:
            start.wait()
            try:
                outcomes[name] = store.import_clips(definition.slug, specs)
            except ParityError as error:
                outcomes[name] = error

    threads = [threading.Thread(target=run, args=a) for a in (("real", sharp), ("generated", small))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [o for o in outcomes.values() if isinstance(o, ParityError)]
    assert len(errors) == 1 and "enlarged" in str(errors[0]), outcomes
    assert sorted(o for o in outcomes.values() if not isinstance(o, ParityError)) == [2]
    with StudyStore(db) as store:
        assert len(store.clips_frame(definition.slug)) == 2
        assert store.accepted_differences(definition.slug) == []
        assert store.verify_record(definition.slug).ok
    assert not stale.exists()
