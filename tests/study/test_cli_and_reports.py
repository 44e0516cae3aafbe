"""The CLI end to end on real files: create, import, status, export (CSV, Excel, HTML) and report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest
import pandas as pd

from ophora.study import StudyStore
from ophora.study.cli import main
from tests.study.helpers import full_answer, write_study

REPO = Path(__file__).resolve().parents[2]


def test_cli_create_import_rate_status_export_report(tmp_path, capsys):
    study = write_study(tmp_path, n_real=2, n_generated=2, raters=("r1", "r2", "r3"))
    db = tmp_path / "cli.db"
    codes_file = tmp_path / "codes.tsv"
    assert main(["create", str(study), "--db", str(db), "--blind-dir", str(tmp_path / "blind"),
                 "--codes-out", str(codes_file)]) == 0
    assert codes_file.stat().st_mode & 0o777 == 0o600
    codes = dict(line.split("\t") for line in codes_file.read_text().splitlines()[1:])
    assert set(codes) == {"r1", "r2", "r3"}
    assert main(["import", str(study), "--db", str(db)]) == 0
    assert "imported 4 new clip(s)" in capsys.readouterr().out
    assert main(["open", "test-study", "--db", str(db)]) == 0

    with StudyStore(db) as store:
        for n, code in enumerate(codes.values()):
            while (item := store.next_item(code)) is not None:
                a = full_answer(item, 1 + (item.position + n) % 5)
                store.submit_rating(code, item.clip_id, a["scores"], phase=a["phase"],
                                    turing="synthetic" if n else "real", confidence=2 + n)

    assert main(["status", "test-study", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "(open): 4 clip(s), 3 rater(s)" in out and out.count("finished") == 3
    # Messages name commands, not functions; a lost code has its own command; a new code file is owner-only.
    assert main(["add-rater", "test-study", "r1", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "python -m ophora study reissue-code test-study 'r1'" in err and "()" not in err
    assert main(["reissue-code", "test-study", "r1", "--db", str(db), "--codes-out", str(tmp_path / "r1.tsv")]) == 0
    assert (tmp_path / "r1.tsv").stat().st_mode & 0o777 == 0o600
    with StudyStore(db) as store:
        clip_id = store.clips_frame("test-study")["clip_id"].iloc[0]  # every clip is rated by now
    assert main(["relabel-clip", "test-study", clip_id, "--reason", "typo", "--model", "x", "--db", str(db)]) == 2
    assert "it can no longer be relabelled" in capsys.readouterr().err

    export = tmp_path / "export"
    assert main(["export", str(study), "--db", str(db), "--out", str(export)]) == 0
    # Every file that names each clip's source (the key, ratings, MRMC truth, the workbook) is owner-only.
    private = [f for f in export.iterdir() if f.suffix in (".csv", ".xlsx", ".imrmc")]
    assert (export / "clips_unblinded.csv") in private and (export / "turing.imrmc") in private
    assert {f.name: f.stat().st_mode & 0o777 for f in private} == {f.name: 0o600 for f in private}
    ratings = pd.read_csv(export / "ratings.csv")
    assert len(ratings) == 3 * 4 * 2
    assert {"rater", "clip_id", "model", "phase", "criterion", "score", "turing_answer"} <= set(ratings.columns)
    by = pd.read_csv(export / "by_model_criterion.csv")
    assert set(by["model"]) == {"ophora", "real"} and by["mean"].between(1, 5).all()
    assert by["note"].eq("too few clips to estimate: at least 3 needed (2 so far)").all() and by["ci_low"].isna().all()
    workbook = openpyxl.load_workbook(export / "test-study.xlsx")
    assert {"ratings", "by_model_criterion", "reliability", "turing_by_model"} <= set(workbook.sheetnames)
    rel = pd.read_csv(export / "reliability.csv")
    assert {"icc2_A1", "kripp_alpha_ordinal"} <= set(rel.columns) and set(rel["clip_set"]) == {"real", "gen"}
    mrmc = pd.read_csv(export / "turing_mrmc.csv")  # the Turing answers as MRMC data, and in iMRMC's format
    assert list(mrmc.columns) == ["reader", "modality", "case", "truth", "rating"] and len(mrmc) == 3 * 4
    assert "BEGIN DATA:" in (export / "turing.imrmc").read_text()
    assert main(["mrmc", str(export / "turing_mrmc.csv")]) == 0
    assert "ophora: AUC" in capsys.readouterr().out
    assert {"turing_auc", "score_differences", "intra_rater"} <= set(workbook.sheetnames)

    report = tmp_path / "report.html"
    assert main(["report", "test-study", "--db", str(db), "--out", str(report)]) == 0
    html = report.read_text()
    summary = html.index("<div class='summary'")
    assert summary < html.index("Plotly.newPlot") and summary < html.index("<table")  # it opens with the summary
    # 2 real and 2 generated clips: too few for an AUC interval or a mean-score interval, said in words
    assert "Ophora: Inconclusive: no interval for whether raters can tell Ophora clips from real ones: AUC" in html
    assert "too few clips to estimate: at least 3 real and 3 generated needed (2 and 2 so far)" in html
    assert "Real clips: Mean scores (no interval, too few clips to estimate" in html
    assert "Scores by criterion" in html and "Scores by phase" in html and "Plotly.newPlot" in html
    assert "<script src=" not in html  # self-contained: plotly.js is inlined, works offline
    assert "Real or synthetic?" in html


def test_cli_errors_are_clear_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: x\ncriteria: []\n")
    assert main(["create", str(bad), "--db", str(tmp_path / "x.db")]) == 2
    assert "criteria: List should have at least 1 item" in capsys.readouterr().err
    assert main(["create", str(write_study(tmp_path, n_real=1, n_generated=0)), "--db", str(tmp_path / "x.db")]) == 0
    capsys.readouterr()
    assert main(["status", "missing-study", "--db", str(tmp_path / "x.db")]) == 2
    assert "no study 'missing-study'" in capsys.readouterr().err


def test_status_export_report_never_create_a_database_and_formats_are_checked(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "missing.db"
    for command in (["status", "x"], ["export", "x"], ["report", "x"], ["open", "x"], ["lock", "x"]):
        assert main([*command, "--db", str(missing)]) == 2
        assert "no study database at" in capsys.readouterr().err
        assert not missing.exists() and not missing.parent.exists()
    with pytest.raises(SystemExit):
        main(["export", "x", "--db", str(missing), "--formats", "csv,pdf"])
    assert "unknown export format(s) ['pdf']" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "ophora", "study", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0
    for command in ("create", "import", "status", "export", "report"):
        assert command in result.stdout


def test_results_and_report_of_a_study_with_no_ratings_yet(tmp_path, store_and_codes):
    from ophora.study import analysis

    store, slug, _ = store_and_codes
    results = analysis.results_for_study(store, slug)
    assert results.ratings.empty and results.by_model_criterion.empty and results.reliability.empty
    html = analysis.export_html(results, tmp_path / "empty.html").read_text()
    assert "No data yet." in html
    assert analysis.export_excel(results, tmp_path / "empty.xlsx").is_file()
