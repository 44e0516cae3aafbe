"""The shipped example study works on a fresh clone: its stand-in clips are drawn by code and shipped."""

from __future__ import annotations

from pathlib import Path

from ophora.study import StudyStore, analysis
from ophora.study.cli import main
from ophora.study.demo_clips import FRAMES, render_clip
from ophora.study.parity import probe
from tests.study.helpers import full_answer

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "studies" / "example_cataract.yaml"


def test_the_demo_renderer_draws_clips_like_the_shipped_ones(tmp_path):
    drawn = probe(render_clip(tmp_path / "x.mp4", phase=1, variant=0, seed=1))
    shipped = probe(REPO / "studies" / "example_clips" / "stand-in-real" / "phacoemulsification.mp4")
    assert (drawn.width, drawn.height, drawn.fps, drawn.frames) == (shipped.width, shipped.height, shipped.fps,
                                                                     shipped.frames) == (720, 480, 8.0, FRAMES)


def test_example_study_runs_end_to_end_without_shared_data(tmp_path, capsys):
    db, served = tmp_path / "example.db", tmp_path / "served"
    assert main(["check", str(EXAMPLE)]) == 0
    assert "Clip sets match" in capsys.readouterr().out
    assert main(["create", str(EXAMPLE), "--db", str(db), "--blind-dir", str(served),
                 "--codes-out", str(tmp_path / "codes.tsv")]) == 0
    assert main(["import", str(EXAMPLE), "--db", str(db)]) == 0
    assert main(["open", "example-cataract", "--db", str(db)]) == 0
    codes = dict(line.split("\t") for line in (tmp_path / "codes.tsv").read_text().splitlines()[1:])
    with StudyStore(db) as store:
        code = codes["rater01"]
        while (item := store.next_item(code)) is not None:
            a = full_answer(item, 4)
            store.submit_rating(code, item.clip_id, a["scores"], phase=a["phase"], turing="real", confidence=3)
        assert store.rater_progress(code).finished and store.rater_progress(code).total == 7
        results = analysis.results_for_study(store, "example-cataract")
    assert set(results.by_model_criterion["model"]) == {"real", "demo-renderer"}
    assert main(["report", "example-cataract", "--db", str(db), "--out", str(tmp_path / "r.html")]) == 0
