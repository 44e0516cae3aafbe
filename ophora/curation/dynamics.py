"""Dynamics-based filtering: hard-cut density (cuts per minute) measured with PySceneDetect.

Why cut density: narrated surgery videos are edited; a clip that spans edits or jumps between views has
"abnormal temporal dynamics" for a generator trained on continuous shots. Ophora-160K used PySceneDetect but
did not publish detector or threshold, so both are config settings and every clip's count is recorded.
Speed comes from PySceneDetect's own downscaling and frame skipping, not from a hand-written decoder.
"""

from __future__ import annotations

import time

from .inputs import ClipTask
from .stages import StageResult

DETECTORS = ("content", "adaptive", "histogram", "hash", "threshold")


def make_detector(name: str, threshold: float | None, min_scene_len: int):
    import scenedetect

    classes = {"content": scenedetect.ContentDetector, "adaptive": scenedetect.AdaptiveDetector,
               "histogram": scenedetect.HistogramDetector, "hash": scenedetect.HashDetector,
               "threshold": scenedetect.ThresholdDetector}
    if name not in classes:
        raise ValueError(f"dynamics.detector {name!r} unknown; choose one of {', '.join(DETECTORS)}")
    kwargs: dict = {"min_scene_len": int(min_scene_len)}
    if threshold is not None:
        kwargs["adaptive_threshold" if name == "adaptive" else "threshold"] = float(threshold)
    return classes[name](**kwargs)


def measure_cuts(video: str, cfg: dict, start_s: float | None = None, end_s: float | None = None,
                 stream=None) -> dict:
    """Run the configured detector over ``video`` (or its ``[start_s, end_s)`` window) and count cuts.

    ``stream``: an already opened PySceneDetect stream (the pipeline's tapped one, see ``decode.py``)."""
    import scenedetect

    began = time.perf_counter()
    if stream is None:
        stream = scenedetect.open_video(video, backend=cfg.get("backend", "opencv"))
    if start_s:
        stream.seek(float(start_s))
    frame_skip = int(cfg.get("frame_skip") or 0)
    # Per-frame scores cost an edge map per frame (PySceneDetect computes edges whenever a StatsManager is
    # attached, even at edge weight 0): record them only when asked for or needed by min_mean_score.
    record = frame_skip == 0 and (bool(cfg.get("record_scores")) or cfg.get("min_mean_score") is not None)
    stats = scenedetect.StatsManager() if record else None
    manager = scenedetect.SceneManager(stats_manager=stats)
    downscale = int(cfg.get("downscale") or 0)
    if downscale <= 0 and cfg.get("analysis_size"):  # PySceneDetect's own rule, to our target size
        from scenedetect.scene_manager import compute_downscale_factor

        downscale = max(1, int(compute_downscale_factor(max(stream.frame_size), int(cfg["analysis_size"]))))
    if downscale > 0:
        manager.auto_downscale = False
        manager.downscale = downscale
    detector = make_detector(cfg["detector"], cfg.get("threshold"), cfg.get("min_scene_len_frames", 8))
    manager.add_detector(detector)
    min_gap = int(cfg.get("min_scene_len_frames", 8))
    if cfg.get("gradual_detector"):  # a second detector in the same pass, for dissolves the first one misses
        manager.add_detector(make_detector(cfg["gradual_detector"], None, min_gap))
    first = stream.frame_number
    processed = manager.detect_scenes(video=stream, end_time=float(end_s) if end_s is not None else None,
                                      frame_skip=frame_skip)
    scenes = manager.get_scene_list(start_in_scene=True)
    fps = float(stream.frame_rate)
    cut_frames: list[int] = []
    for scene in scenes[1:]:  # two detectors may mark one cut a frame apart: count it once
        frame = int(scene[0].frame_num)
        if not cut_frames or frame - cut_frames[-1] >= min_gap:
            cut_frames.append(frame)
    cuts = [frame / fps for frame in cut_frames]
    span_frames = max(1, stream.frame_number - first)
    duration_s = span_frames / fps if fps > 0 else 0.0
    mean_score = None
    if stats is not None:
        key = detector.get_metrics()[0]
        values = [stats.get_metrics(n, [key])[0] for n in range(first, first + span_frames)]
        values = [float(v) for v in values if v is not None]
        mean_score = sum(values) / len(values) if values else None
    return {"cuts": len(cuts), "cut_times_s": cuts, "cut_frames": cut_frames, "frames_processed": int(processed),
            "frames_spanned": int(span_frames), "duration_s": duration_s,
            "cuts_per_minute": len(cuts) / duration_s * 60.0 if duration_s > 0 else 0.0,
            "mean_score": mean_score, "seconds": time.perf_counter() - began}


def dynamics_stage(task: ClipTask, config: dict, measured: dict | None = None) -> StageResult:
    """Judge the cut density; ``measured``: cuts already measured by the pipeline's decoding pass."""
    cfg = config["dynamics"]
    if measured is None:
        try:
            measured = measure_cuts(task.video, cfg, task.start_s, task.end_s)
        except Exception as error:  # a decoder failure mid-file is a fact about this clip
            return StageResult({}, f"dynamics: could not decode the video ({type(error).__name__}: {error})")
    rate = measured["cuts_per_minute"]
    if cfg.get("max_cuts_per_minute") is not None and rate > cfg["max_cuts_per_minute"]:
        return StageResult(measured, f"dynamics: {measured['cuts']} cuts = {rate:.1f}/min above "
                                     f"{cfg['max_cuts_per_minute']}/min")
    if cfg.get("min_cuts_per_minute") is not None and rate < cfg["min_cuts_per_minute"]:
        return StageResult(measured, f"dynamics: {rate:.1f} cuts/min below {cfg['min_cuts_per_minute']}/min")
    if cfg.get("min_mean_score") is not None and measured["mean_score"] is not None \
            and measured["mean_score"] < cfg["min_mean_score"]:
        return StageResult(measured, f"dynamics: near-static clip (mean frame score {measured['mean_score']:.2f} "
                                     f"below {cfg['min_mean_score']})")
    return StageResult(measured)
