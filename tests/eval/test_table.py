"""The overall and per-phase table from hand-made features: each cell checked against its closed form."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from ophora.eval.clips import ClipRecord
from ophora.eval.frechet import frechet_distance_of_features
from ophora.eval.metrics import ClipFeatures, score_table


def clip(name: str, phase: str | None, fid: np.ndarray, fvd: np.ndarray, score: float | None = None) -> ClipFeatures:
    return ClipFeatures(ClipRecord(Path(f"{name}.mp4"), prompt="p", phase=phase), (96, 64), 17, fid, fvd, score)


def test_per_phase_table_hand_made_case():
    rng = np.random.default_rng(0)
    dims = 3
    # Real: 4 incision + 4 hydrodissection clips, 3 frames each.
    real_inc = [rng.normal(size=(3, dims)) for _ in range(4)]
    real_hyd = [rng.normal(size=(3, dims)) for _ in range(4)]
    real_fvd = [rng.normal(size=dims) for _ in range(8)]
    real = [clip(f"ri{i}", "incision", real_inc[i], real_fvd[i]) for i in range(4)]
    real += [clip(f"rh{i}", "hydrodissection", real_hyd[i], real_fvd[4 + i]) for i in range(4)]
    # Generated: incision identical to real incision (distance 0); hydrodissection shifted by +2 in every
    # dimension (equal covariances -> ||dmu||^2 = 4 * dims); one unlabelled clip counted only in "all".
    shift = 2.0
    gen = [clip(f"gi{i}", "incision", real_inc[i], real_fvd[i], score=30.0 + i) for i in range(4)]
    gen += [clip(f"gh{i}", "hydrodissection", real_hyd[i] + shift, real_fvd[4 + i] + shift, score=-10.0)
            for i in range(4)]
    loose = clip("gx", None, rng.normal(size=(3, dims)), rng.normal(size=dims), score=50.0)
    table = score_table({"ophora": gen + [loose]}, real)

    assert list(table["group"]) == ["all", "incision", "hydrodissection"]  # surgical order, not alphabetical
    rows = table.set_index("group")
    assert rows.loc["all", "generated_clips"] == 9 and rows.loc["all", "real_clips"] == 8
    assert rows.loc["incision", "generated_clips"] == 4 and rows.loc["incision", "real_clips"] == 4

    assert rows.loc["incision", "FID"] == pytest.approx(0.0, abs=1e-9)
    assert rows.loc["incision", "FVD"] == pytest.approx(0.0, abs=1e-9)
    assert rows.loc["hydrodissection", "FID"] == pytest.approx(shift**2 * dims, rel=1e-9)
    assert rows.loc["hydrodissection", "FVD"] == pytest.approx(shift**2 * dims, rel=1e-9)
    # "all" pools every frame of every clip (FID) and every clip (FVD).
    all_gen_frames = np.concatenate([c.fid for c in gen + [loose]])
    all_real_frames = np.concatenate([c.fid for c in real])
    assert rows.loc["all", "FID"] == pytest.approx(frechet_distance_of_features(all_gen_frames, all_real_frames))
    assert rows.loc["all", "FVD"] == pytest.approx(frechet_distance_of_features(
        np.stack([c.fvd for c in gen + [loose]]), np.stack(real_fvd)))
    # CLIPScore: mean over clips, clamped at 0 on the mean (torchmetrics' convention).
    assert rows.loc["incision", "CLIPScore"] == pytest.approx(31.5)
    assert rows.loc["hydrodissection", "CLIPScore"] == 0.0
    assert rows.loc["all", "CLIPScore"] == pytest.approx((30 + 31 + 32 + 33 - 40 + 50) / 9)


def test_phase_missing_from_real_set_and_single_clip_groups_are_noted_not_crashing():
    rng = np.random.default_rng(1)
    real = [clip(f"r{i}", "incision", rng.normal(size=(1, 2)), rng.normal(size=2)) for i in range(3)]
    gen = [clip("g0", "incision", rng.normal(size=(1, 2)), rng.normal(size=2)),
           clip("g1", "capsulorhexis", rng.normal(size=(1, 2)), rng.normal(size=2)),
           clip("g2", "capsulorhexis", rng.normal(size=(1, 2)), rng.normal(size=2))]
    rows = score_table({"m": gen}, real).set_index("group")
    assert math.isnan(rows.loc["incision", "FVD"]) and "too few samples" in rows.loc["incision", "notes"]
    assert math.isnan(rows.loc["capsulorhexis", "FID"]) and "no real clips" in rows.loc["capsulorhexis", "notes"]
    assert np.isfinite(rows.loc["all", "FID"])


def test_several_models_share_the_real_set():
    rng = np.random.default_rng(2)
    real = [clip(f"r{i}", "incision", rng.normal(size=(2, 2)), rng.normal(size=2)) for i in range(4)]
    table = score_table({"a": real, "b": [clip(c.record.name, "incision", c.fid + 1, c.fvd + 1) for c in real]}, real)
    assert list(table["model"]) == ["a", "a", "b", "b"]
    assert table.iloc[0]["FID"] == pytest.approx(0, abs=1e-9) and table.iloc[2]["FID"] == pytest.approx(2.0)
