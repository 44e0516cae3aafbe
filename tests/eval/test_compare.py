"""`eval compare`: the paired bootstrap of A - B, its sentences, and the written report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ophora.eval.clips import ClipRecord
from ophora.eval.compare import compare_features, describe
from ophora.eval.metrics import ClipFeatures, Protocol


def _set(prefix: str, phases: list[str], fvd: np.ndarray, scores: np.ndarray | None = None) -> list[ClipFeatures]:
    return [ClipFeatures(ClipRecord(Path(f"{prefix}/clip{i}.mp4"), "p", phase), (96, 64), 17, fvd=fvd[i],
                         clip_score=None if scores is None else float(scores[i])) for i, phase in enumerate(phases)]


def test_closer_model_is_named_with_a_paired_interval_and_equal_models_are_not_told_apart():
    rng = np.random.default_rng(5)
    n, dims = 60, 4
    phases = ["incision"] * 30 + ["capsulorhexis"] * 30
    real = _set("real", phases, rng.normal(size=(n, dims)))
    prompts = rng.normal(size=(n, dims))  # what each prompt makes, shared by A and B (paired by clip id)
    a = _set("a", phases, prompts + rng.normal(0, 0.1, (n, dims)), scores=30 + rng.normal(0, 1, n))
    b = _set("b", phases, prompts + 1.0 + rng.normal(0, 0.1, (n, dims)), scores=28 + rng.normal(0, 1, n))
    protocol = Protocol(bootstrap_resamples=200)
    rows, paired = compare_features(a, b[::-1], real, ("Ophora", "CogVideoX"), protocol, ("fvd", "clipscore"))
    assert paired  # B given in another order: matched by clip id
    by = {(r["group"], r["metric"]): r for r in rows}
    fvd = by[("all", "FVD")]
    assert fvd["difference"] < 0 and fvd["high"] < 0  # A is the closer one, and the interval says so
    assert fvd["sentence"].startswith("Ophora is closer to real clips than CogVideoX on FVD: difference -")
    assert "(95% CI " in fvd["sentence"]
    clip = by[("all", "CLIPScore")]
    assert clip["low"] > 0 and clip["sentence"].startswith("Ophora matches its instructions better than CogVideoX")
    assert {g for g, _ in by} == {"all", "incision", "capsulorhexis"}
    assert by[("incision", "FVD")]["clips_A"] == 30 and by[("incision", "FVD")]["real_clips"] == 30

    same, _ = compare_features(a, a, real, ("A", "A again"), protocol, ("fvd",), per_phase=False)
    assert same[0]["difference"] == pytest.approx(0.0, abs=1e-12)
    assert "cannot be told apart" in same[0]["sentence"]


def test_sentences_read_without_raw_floats():
    text = describe("cdfvd", "A", "B", -23.4, -41.2, -6.3, 0.95)
    assert text == "A is closer to real clips than B on CD-FVD: difference -23 (95% CI -41 to -6)."
    assert describe("fid", "A", "B", 0.5123, 0.1, 0.9, 0.95).startswith("B is closer to real clips than A on FID")
    assert "could not be computed" in describe("jedi", "A", "B", float("nan"), float("nan"), float("nan"), 0.95)


@pytest.mark.slow
def test_compare_cli_writes_html_and_json_with_extractors_loaded_once(tmp_path, capsys, monkeypatch):
    from ophora.eval import videomae
    from ophora.eval.cli import main
    from ophora.eval.tiny import save_random_videomae, save_random_vjepa
    from tests.eval.helpers import make_clips

    phases = ["incision", "incision", "hydrodissection", "hydrodissection"]
    specs = [(f"c{i}", p, f"Perform the {p} step") for i, p in enumerate(phases)]
    make_clips(tmp_path / "a", specs, seed=1)
    make_clips(tmp_path / "b", specs, seed=3)
    make_clips(tmp_path / "real", specs, seed=2)
    loads = []
    original = videomae.load_videomae
    monkeypatch.setattr(videomae, "load_videomae", lambda *a, **k: loads.append(1) or original(*a, **k))
    vm, vj = save_random_videomae(tmp_path / "vm"), save_random_vjepa(tmp_path / "vj")
    out = tmp_path / "cmp"
    code = main(["compare", f"ophora={tmp_path / 'a'}", f"base={tmp_path / 'b'}", "--real", str(tmp_path / "real"),
                 "--out", str(out), "--metrics", "cd-fvd,jedi", "--videomae-weights", str(vm), "--vjepa-model",
                 str(vj), "--bootstrap", "40", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert loads == [1]  # one load for the three sets
    report = json.loads((out / "compare.json").read_text())
    assert report["models"] == ["ophora", "base"] and report["paired"] is True
    assert report["protocol"]["bootstrap_resamples"] == 40
    overall = {r["metric"]: r for r in report["rows"] if r["group"] == "all"}
    assert set(overall) == {"CD-FVD", "JEDi"}
    assert all(r["low"] <= r["high"] for r in overall.values())
    page = (out / "compare.html").read_text()
    assert overall["CD-FVD"]["sentence"].replace("'", "&#x27;") in page and "Plotly" in page
    assert "## hydrodissection" in (out / "compare.md").read_text()
