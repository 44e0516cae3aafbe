"""FID / FVD / CD-FVD / JEDi / CLIPScore end to end on CPU: real MP4 files, the real Inception and I3D with random
weights, tiny random CLIP, VideoMAE and V-JEPA 2 folders saved to disk and loaded the way real ones are, through
the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ophora.eval.cli import main
from tests.eval.helpers import make_clips, save_tiny_clip

PHASES = ["incision", "incision", "hydrodissection"]  # 3 + 3 clips: I3D at 224 is the slow part on CPU


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture(scope="module")
def tiny_video_models(tmp_path_factory):
    from ophora.eval.tiny import save_random_videomae, save_random_vjepa

    root = tmp_path_factory.mktemp("video-models")
    return save_random_videomae(root / "videomae"), save_random_vjepa(root / "vjepa")


@pytest.fixture(scope="module")
def clip_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    specs = [(f"{phase}_{i}", phase, f"Perform the {phase} step carefully") for i, phase in enumerate(PHASES)]
    make_clips(root / "generated", specs, seed=1)
    make_clips(root / "real", [(f"real_{n}", p, t) for n, p, t in specs], seed=2)
    return root


@pytest.mark.slow
def test_metrics_end_to_end_random_extractors(clip_sets, tiny_clip_dir, tiny_video_models, tmp_path, capsys):
    out = tmp_path / "report"
    videomae, vjepa = tiny_video_models
    code = main(["metrics", "--generated", f"ophora={clip_sets / 'generated'}",
                 "--real", str(clip_sets / "real"), "--out", str(out),
                 "--random-init", "--clip-model", str(tiny_clip_dir), "--videomae-weights", str(videomae),
                 "--vjepa-model", str(vjepa), "--fid-frames-per-clip", "2", "--bootstrap", "50",
                 "--clip-frames-per-clip", "2", "--device", "cpu", "--batch-size", "2"])
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(out / "metrics.csv")
    assert list(zip(table["model"], table["group"])) == [
        ("ophora", "all"), ("ophora", "incision"), ("ophora", "hydrodissection")]
    rows = table.set_index(["model", "group"])
    assert rows.loc[("ophora", "all"), "FID"] > 0 and rows.loc[("ophora", "all"), "FVD"] > 0
    assert rows.loc[("ophora", "incision"), "real_clips"] == 2
    assert np.isfinite(rows.loc[("ophora", "all"), "CLIPScore"])
    for metric in ("FID", "FVD", "CD-FVD", "JEDi", "CLIPScore"):  # every metric with its interval
        value, low, high = (rows.loc[("ophora", "all"), f"{metric}{s}"] for s in ("", "_low", "_high"))
        assert np.isfinite(value) and low <= high, metric
    # 3 clips per set is too few for the 1/N fit (4+ needed); the column is there, empty.
    assert np.isnan(rows.loc[("ophora", "all"), "FVD_inf"])
    # One hydrodissection clip per set: FID pools its 2 frames, FVD has a single sample and says so.
    assert np.isfinite(rows.loc[("ophora", "hydrodissection"), "FID"])
    assert np.isnan(rows.loc[("ophora", "hydrodissection"), "FVD"])
    assert "FVD: too few samples" in rows.loc[("ophora", "hydrodissection"), "notes"]

    # The table is recomputable from the saved features: the report is what the features say.
    from ophora.eval.frechet import frechet_distance_of_features

    gen, real = np.load(out / "features-ophora.npz"), np.load(out / "features-real.npz")
    assert gen["fid"].shape == (6, 2048) and gen["fvd"].shape == (3, 400)
    assert gen["cdfvd"].shape == (3, 32) and gen["jedi"].shape == (3, 32)  # clips batched 2 + 1
    from ophora.eval.mmd import jedi_distance

    assert rows.loc[("ophora", "all"), "CD-FVD"] == pytest.approx(frechet_distance_of_features(
        gen["cdfvd"].astype(np.float64), real["cdfvd"].astype(np.float64)), rel=1e-4)
    assert rows.loc[("ophora", "all"), "JEDi"] == pytest.approx(jedi_distance(gen["jedi"], real["jedi"]), rel=1e-4)
    assert rows.loc[("ophora", "all"), "FVD"] == pytest.approx(
        frechet_distance_of_features(gen["fvd"].astype(np.float64), real["fvd"].astype(np.float64)), rel=1e-4)
    gen_mask = np.repeat(gen["phases"], gen["fid_counts"]) == "incision"
    real_mask = np.repeat(real["phases"], real["fid_counts"]) == "incision"
    assert gen_mask.sum() == 4 and real_mask.sum() == 4
    assert rows.loc[("ophora", "incision"), "FID"] == pytest.approx(frechet_distance_of_features(
        gen["fid"][gen_mask].astype(np.float64), real["fid"][real_mask].astype(np.float64)), rel=1e-3)

    report = json.loads((out / "report.json").read_text())
    assert report["random_weights"] is True
    roles = {w["role"]: w for w in report["weights"]}
    assert set(roles) == {"fid", "fvd", "cdfvd", "jedi", "clipscore"}
    assert roles["fid"]["random_init"] and roles["fid"]["sha256"] is None
    assert len(roles["clipscore"]["sha256"]) == 64
    assert report["protocol"]["fvd_num_frames"] == 16 and report["protocol"]["fid_frames_per_clip"] == 2
    assert report["protocol"]["bootstrap_resamples"] == 50 and "basic bootstrap" in report["protocol"]["intervals"]
    markdown = (out / "metrics.md").read_text()
    assert "RANDOM-WEIGHT" in markdown and "| ophora | hydrodissection |" in markdown
    assert "Plotly" in (out / "metrics.html").read_text()[:100000]


def test_clipscore_only_needs_no_real_set(clip_sets, tiny_clip_dir, tmp_path):
    out = tmp_path / "r"
    assert main(["metrics", "--generated", str(clip_sets / "generated"), "--metrics", "clipscore", "--out", str(out),
                 "--clip-model", str(tiny_clip_dir), "--clip-frames-per-clip", "2", "--device", "cpu"]) == 0
    table = pd.read_csv(out / "metrics.csv")
    assert table["FID"].isna().all() and table["CLIPScore"].notna().all()
    overall = table.iloc[0]
    assert overall["CLIPScore_low"] <= overall["CLIPScore_high"]  # an interval without any real clips
    # Scores depend on the text: the same frames with another instruction score differently.
    from ophora.eval.clip_score import load_clip_scorer
    from ophora.eval.clips import load_frames, collect_clips

    scorer, _ = load_clip_scorer(str(tiny_clip_dir), offline=True)
    frames = load_frames(collect_clips(clip_sets / "generated")[0])[:2]
    assert scorer.score(frames, "Incise the cornea") != pytest.approx(scorer.score(frames, "Polish the capsule"))


@pytest.mark.slow
def test_real_features_are_reused_only_with_the_same_weights_and_protocol(clip_sets, tmp_path, capsys):
    common = ["--generated", str(clip_sets / "generated"), "--metrics", "fid", "--random-init", "--device", "cpu"]
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["metrics", *common, "--real", str(clip_sets / "real"), "--out", str(first),
                 "--fid-frames-per-clip", "1"]) == 0
    saved = first / "features-real.npz"
    assert main(["metrics", *common, "--real", str(saved), "--out", str(second), "--fid-frames-per-clip", "1"]) == 0
    a, b = pd.read_csv(first / "metrics.csv"), pd.read_csv(second / "metrics.csv")
    assert list(a["real_clips"]) == list(b["real_clips"])
    np.testing.assert_allclose(a["FID"], b["FID"], rtol=1e-4)
    capsys.readouterr()
    assert main(["metrics", *common, "--real", str(saved), "--out", str(tmp_path / "x"),
                 "--fid-frames-per-clip", "2"]) == 2
    assert "different protocol (fid_frames_per_clip)" in capsys.readouterr().err
