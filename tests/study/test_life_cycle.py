"""The study life cycle (draft -> open -> locked) and the lead's corrections, through the CLI and the API,
on a real SQLite file and real blinded clips."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from ophora.study import StudyError, StudyStore, UnknownClipError, load_definition
from ophora.study.cli import main
from tests.study.helpers import full_answer, write_study


def test_draft_open_locked_with_the_cli(tmp_path, capsys):
    study = write_study(tmp_path, n_real=2, n_generated=2, raters=("r1",), repeats=1)
    db, served = tmp_path / "l.db", tmp_path / "served"
    assert main(["create", str(study), "--db", str(db), "--blind-dir", str(served),
                 "--codes-out", str(tmp_path / "codes.tsv")]) == 0
    assert main(["import", str(study), "--db", str(db)]) == 0
    assert len(list(served.iterdir())) == 5  # 4 clips + 1 repeat copy
    capsys.readouterr()

    # Clip key: admin only, a private file, never printed.
    assert main(["key", "test-study", "--db", str(db), "--out", str(tmp_path / "key.csv")]) == 0
    assert "ophora" not in capsys.readouterr().out
    assert (tmp_path / "key.csv").stat().st_mode & 0o777 == 0o600
    key = pd.read_csv(tmp_path / "key.csv")
    assert set(key["model"]) == {"real", "ophora"} and len(key) == 4

    # Corrections before the first rating: relabel and remove, both audited.
    wrong = key[key["model"] == "ophora"]["clip_id"].iloc[0]
    assert main(["relabel-clip", "test-study", wrong, "--db", str(db), "--phase", "Lens Implantation",
                 "--model", "ophora-v2", "--reason", "sidecar had the wrong phase"]) == 0
    gone = key[key["source"] == "real"]["clip_id"].iloc[0]
    assert main(["remove-clip", "test-study", gone, "--db", str(db), "--reason", "patient withdrew consent"]) == 0
    with StudyStore(db) as store:
        clips = store.clips_frame("test-study").set_index("clip_id")
        assert gone not in clips.index and clips.loc[wrong, "phase"] == "lens-implantation"
        assert clips.loc[wrong, "model"] == "ophora-v2"
        log = store.audit_log("test-study")
        removed = log[log["action"] == "remove_clip"].iloc[0]
        assert json.loads(removed["old_value"])["original_path"].endswith(".mp4")
        assert removed["reason"] == "patient withdrew consent"
        relabel = log[log["action"] == "relabel_clip"].iloc[0]
        assert json.loads(relabel["old_value"])["phase"] == "phacoemulsification"
    assert not (served / f"{gone}.mp4").exists()
    positions = sorted(sqlite3.connect(db).execute("SELECT position FROM assignments").fetchall())
    assert [p for (p,) in positions] == list(range(1, len(positions) + 1))

    assert main(["open", "test-study", "--db", str(db)]) == 0
    assert main(["delete", "test-study", "--db", str(db), "--yes"]) == 2
    assert "only a draft" in capsys.readouterr().err
    code = next(iter(dict(l.split("\t") for l in (tmp_path / "codes.tsv").read_text().splitlines()[1:]).values()))
    with StudyStore(db) as store:
        item = store.next_item(code)
        a = full_answer(item)
        store.submit_rating(code, item.clip_id, a["scores"], phase=a["phase"], turing="real", confidence=2)
        rated = store.ratings_frame("test-study")["clip_id"].iloc[0]
        with pytest.raises(StudyError, match="already has 1 rating"):
            store.remove_clip("test-study", rated, reason="x")
        with pytest.raises(StudyError, match="already has 1 rating"):
            store.relabel_clip("test-study", rated, phase="incision", reason="x")
    capsys.readouterr()
    assert main(["lock", "test-study", "--db", str(db), "--reason", "analysis starts"]) == 0
    with StudyStore(db) as store:
        assert store.status("test-study") == "locked"
        with pytest.raises(StudyError, match="locked"):
            store.next_item(code)
        with pytest.raises(StudyError, match="locked"):
            store.change_rating(code, item.clip_id, scores={"realism": 1}, reason="late")
        with pytest.raises(StudyError, match="locked"):
            store.add_rater("test-study", "late")
        log = store.audit_log("test-study")
        assert log[log["action"] == "lock_study"]["reason"].item() == "analysis starts"
    assert main(["status", "test-study", "--db", str(db)]) == 0
    assert "(locked)" in capsys.readouterr().out


def test_delete_a_draft_study_with_its_files(tmp_path):
    definition = load_definition(write_study(tmp_path, n_real=1, n_generated=2, repeats=1))
    with StudyStore(tmp_path / "d.db") as store:
        store.create_study(definition, blind_dir=tmp_path / "served")
        store.import_clips(definition.slug, definition.clips())
        other = load_definition(write_study(tmp_path / "o", n_real=1, n_generated=0, slug="other"))
        store.create_study(other, blind_dir=tmp_path / "served-other")
        store.import_clips("other", other.clips())
        assert len(list((tmp_path / "served").iterdir())) == 3 + 3
        with pytest.raises(UnknownClipError):
            store.remove_clip(definition.slug, "cffffffffffffffff", reason="x")
        assert store.delete_study(definition.slug) == 6
        assert not (tmp_path / "served").exists()
        assert store.studies() == ["other"] and len(store.audit_log("other")) > 0  # the other study is intact
        raw = sqlite3.connect(tmp_path / "d.db")
        counts = {t: raw.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("clips", "raters", "assignments")}
        assert counts == {"clips": 1, "raters": 3, "assignments": 3}  # only the other study's rows are left
        assert raw.execute("SELECT count(*) FROM audit_log WHERE study_id = 1").fetchone()[0] == 0
        raw.close()
