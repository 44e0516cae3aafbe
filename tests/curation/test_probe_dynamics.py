"""Probe facts, the resolution filter and PySceneDetect cut counts on videos with known facts."""

from __future__ import annotations

import pytest

from ophora.curation.config import ConfigError, load_config
from ophora.curation.dynamics import dynamics_stage, measure_cuts
from ophora.curation.inputs import ClipTask
from ophora.curation.probe import probe_clip, probe_video


def task(video, **kwargs) -> ClipTask:
    return ClipTask(clip_id="t", video=str(video), caption="Remove the cortex with the I/A tip.", **kwargs)


def test_probe_facts_of_made_video(cut_video):
    facts = probe_video(cut_video)
    assert (facts["width"], facts["height"], facts["frames"], facts["codec"]) == (720, 480, 48, "h264")
    assert facts["fps"] == pytest.approx(8.0)
    assert facts["duration_s"] == pytest.approx(6.0)


def test_probe_facts_of_real_clips(sample_clips):
    for clip in sample_clips:
        facts = probe_video(clip)
        assert (facts["width"], facts["height"], facts["frames"]) == (720, 480, 49)
        assert facts["duration_s"] == pytest.approx(6.125)


def test_resolution_filter(lowres_video, cut_video):
    config = load_config()
    result = probe_clip(task(lowres_video), config)
    assert result.drop_reason == "resolution: 640x360 below 720x480 (long x short side)"
    assert (result.measurements["width"], result.measurements["height"]) == (640, 360)
    assert probe_clip(task(cut_video), config).drop_reason is None
    relaxed = load_config(overrides=["probe.min_long_side=640", "probe.min_short_side=360"])
    assert probe_clip(task(lowres_video), relaxed).drop_reason is None


def test_bad_files_are_reasons_not_crashes(tmp_path):
    config = load_config()
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 100)
    assert "video file missing" in probe_clip(task(tmp_path / "nope.mp4"), config).drop_reason
    assert "zero-length video" in probe_clip(task(empty), config).drop_reason
    reason = probe_clip(task(garbage), config).drop_reason
    assert reason.startswith("probe: ") and ("unreadable" in reason or "zero-length" in reason)


def test_clip_window_and_empty_bounds(cut_video):
    config = load_config()
    result = probe_clip(task(cut_video, start_s=1.0, end_s=4.0), config)
    assert result.measurements["clip_frames"] == 24 and result.drop_reason is None
    assert "clip bounds empty" in probe_clip(task(cut_video, start_s=3.0, end_s=3.0), config).drop_reason


@pytest.mark.parametrize("detector", ["content", "adaptive", "histogram"])
def test_detectors_count_the_known_cuts(cut_video, detector):
    cfg = load_config(overrides=[f"dynamics.detector={detector}"])["dynamics"]
    measured = measure_cuts(str(cut_video), cfg)
    assert measured["cuts"] == 3
    assert measured["cut_times_s"] == pytest.approx([1.5, 3.0, 4.5], abs=0.13)
    assert measured["cuts_per_minute"] == pytest.approx(30.0, rel=0.02)


def test_downscale_and_frame_skip_keep_the_count(cut_video):
    cfg = load_config(overrides=["dynamics.downscale=4", "dynamics.frame_skip=1"])["dynamics"]
    measured = measure_cuts(str(cut_video), cfg)
    assert measured["cuts"] == 3 and measured["mean_score"] is None  # no per-frame stats when skipping


def test_smaller_analysis_size_finds_the_same_cuts(cut_video, joined_samples):
    """The default 180 px analysis size marks the very frames PySceneDetect's own ~256 px choice marks."""
    own = load_config(overrides=["dynamics.analysis_size=null"])["dynamics"]
    for video in (cut_video, joined_samples):
        assert measure_cuts(str(video), load_config()["dynamics"])["cut_frames"] == \
            measure_cuts(str(video), own)["cut_frames"]


def test_window_counts_only_its_cuts(cut_video):
    cfg = load_config()["dynamics"]
    assert measure_cuts(str(cut_video), cfg, start_s=0.0, end_s=2.0)["cuts"] == 1
    assert measure_cuts(str(cut_video), cfg, start_s=3.5, end_s=6.0)["cuts"] == 1


def test_real_clips_have_no_cut_and_their_join_has_one(sample_clips, joined_samples):
    cfg = load_config()["dynamics"]
    scored = load_config(overrides=["dynamics.record_scores=true"])["dynamics"]
    for clip in sample_clips:
        measured = measure_cuts(str(clip), cfg)
        assert measured["cuts"] == 0 and measured["frames_processed"] == 49
        assert measured["mean_score"] is None  # per-frame scores cost an edge map: off unless asked for
        with_scores = measure_cuts(str(clip), scored)
        assert with_scores["cuts"] == 0 and with_scores["mean_score"] > 0  # real motion inside the clip
    joined = measure_cuts(str(joined_samples), cfg)
    assert joined["cuts"] == 1
    assert joined["cut_times_s"][0] == pytest.approx(49 / 8, abs=0.13)


def test_dynamics_stage_threshold(cut_video, sample_clips):
    config = load_config()  # max 6 cuts/min
    assert "cuts = 30.0/min above 6.0/min" in dynamics_stage(task(cut_video), config).drop_reason
    assert dynamics_stage(task(sample_clips[0]), config).drop_reason is None
    lenient = load_config(overrides=["dynamics.max_cuts_per_minute=40"])
    assert dynamics_stage(task(cut_video), lenient).drop_reason is None


def test_unknown_config_key_is_an_error():
    with pytest.raises(ConfigError, match="max_cut_per_minute"):
        load_config(overrides=["dynamics.max_cut_per_minute=3"])
