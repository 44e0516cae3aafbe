"""Release only what was screened: each released video is exactly its clip's training window, cut and
re-encoded; every frame is screened (a name burned into 20 of 49 frames, a face on 9 of 49 frames drop their
window); frames of a dropped neighbouring window never appear; SEI user data does not survive; releasing again
replaces the earlier release whole. Sources are made from the real Ophora clips."""

from __future__ import annotations

import json
import shutil
import subprocess

import cv2
import imageio_ffmpeg
import numpy as np
import pandas as pd
import pytest

from ophora.curation.config import load_config
from ophora.curation.inputs import read_tasks
from ophora.curation.pipeline import run_pipeline
from ophora.curation.release import release
from ophora.generation.video import read_clip, write_clip

from .test_privacy import needs_tesseract

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
SEI_SECRET = "OKAFOR_NGOZI_MRN48213"
pytestmark = [pytest.mark.slow, needs_tesseract]


def burn_name(frame: np.ndarray) -> np.ndarray:
    frame = frame.copy()  # on a dark band, as recorders burn it in (white on bright tissue: see docs' limits)
    cv2.rectangle(frame, (30, 410), (520, 452), (0, 0, 0), -1)
    cv2.putText(frame, "NGOZI OKAFOR 03/04/1950", (40, 440), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2,
                cv2.LINE_AA)
    return frame


def paste_face(frame: np.ndarray, face: np.ndarray) -> np.ndarray:
    frame = frame.copy()
    photo = cv2.resize(face, (round(face.shape[1] * 440 / face.shape[0]), 440))
    frame[20:460, 280:280 + photo.shape[1]] = photo
    return frame


@pytest.fixture(scope="module")
def sources(tmp_path_factory, sample_clips, grace_hopper_rgb):
    """One 98-frame source: window A (frames 0-48) has a name on frames 10-29, window B (49-97) is clean;
    a second source shows a face on frames 20-28 of 49; the clean real clip carries SEI user data."""
    folder = tmp_path_factory.mktemp("windows")
    first, second = (read_clip(path)[0] for path in sample_clips)
    named = np.stack([burn_name(f) if 10 <= i < 30 else f for i, f in enumerate(first)])
    write_clip(np.concatenate([named, second]), folder / "two_windows.mp4", fps=8)
    faced = np.stack([paste_face(f, grace_hopper_rgb) if 20 <= i < 29 else f for i, f in enumerate(second)])
    write_clip(faced, folder / "face.mp4", fps=8)
    subprocess.run([FFMPEG, "-v", "error", "-y", "-i", str(sample_clips[0]), "-c", "copy", "-bsf:v",
                    f"h264_metadata=sei_user_data=086f3693-b7b3-4f2c-9653-21492feee5b8+{SEI_SECRET}",
                    str(folder / "sei.mp4")], check=True)
    assert SEI_SECRET.encode() in (folder / "sei.mp4").read_bytes()
    caption = "Inject fluid under the capsule with a cannula to free the nucleus."
    rows = [{"clip_id": "A-named", "video": "two_windows.mp4", "start": 0.0, "end": 6.125, "caption": caption},
            {"clip_id": "B-clean", "video": "two_windows.mp4", "start": 6.125, "end": 12.25, "caption": caption},
            {"clip_id": "face", "video": "face.mp4", "caption": caption},
            {"clip_id": "sei", "video": "sei.mp4", "caption": caption}]
    pd.DataFrame(rows).to_csv(folder / "clips.csv", index=False)
    out = folder / "curated.parquet"
    # dynamics off: the pasted photo would read as two cuts and drop its clip before the face screen
    config = load_config(overrides=["dynamics.enabled=false"])
    frame = run_pipeline(read_tasks(folder / "clips.csv"), config, out, workers=1).set_index("clip_id")
    return folder, out, frame, np.concatenate([named, second])


def test_every_frame_is_screened_and_hits_drop_their_window(sources):
    _, _, frame, _ = sources
    assert frame.loc["A-named", "decision"] == "drop" and frame.loc["A-named", "drop_stage"] == "text"
    assert frame.loc["A-named", "reason"].startswith("privacy: on-screen text read locally in ")
    hits = json.loads(frame.loc["A-named", "text_hit_frames"])
    assert hits and all(10 <= i < 30 for i in hits)  # the frame numbers of the hits, not the text
    assert frame.loc["face", "decision"] == "drop" and frame.loc["face", "drop_stage"] == "face"
    assert frame.loc["face", "reason"].startswith("privacy: face detected locally in ")
    hits = json.loads(frame.loc["face", "face_hit_frames"])
    assert set(range(21, 28)) <= set(hits)
    for clip in ("B-clean", "sei"):
        row = frame.loc[clip]
        assert row["decision"] == "keep", row["reason"]
        assert row["face_frames_checked"] == row["text_frames_checked"] == 49  # every frame, not a sample


@pytest.fixture(scope="module")
def released(sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("released") / "release"
    return out, release(sources[1], out, progress=False)


def test_release_holds_exactly_the_screened_windows(sources, released):
    _, _, _, source_frames = sources
    out, card = released
    assert card["counts"]["released_clips"] == 2
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert manifest["frames"].tolist() == [49, 49] and manifest["start_s"].isna().all()
    videos = sorted((out / "videos").iterdir())
    assert [v.name for v in videos] == sorted(manifest["video"].str.removeprefix("videos/"))
    for video in videos:
        frames = read_clip(video)[0]
        assert len(frames) == 49
    window_b = read_clip(out / manifest["video"].iloc[0])[0].astype(np.int16)
    # the released B is frames 49-97 of the source (re-encoded), never a frame of the dropped window A
    assert np.abs(window_b - source_frames[49:].astype(np.int16)).mean() < 4
    assert min(np.abs(window_b[0] - f.astype(np.int16)).mean() for f in source_frames[:49]) > 8
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SEI_SECRET.encode() not in data and b"OKAFOR" not in data, path.name
            assert path.suffix != ".mp4" or b"x264 - core" not in data  # no SEI at all, the encoder's included


def test_releasing_again_replaces_the_earlier_release(sources, released, tmp_path):
    _, curated, _, _ = sources
    out, _ = released
    stale = out / "videos" / "stale-from-an-earlier-run.mp4"
    stale.write_bytes(b"old")
    release(curated, out, progress=False)
    assert not stale.exists() and len(list((out / "videos").iterdir())) == 2
    assert [p.name for p in out.parent.iterdir()] == ["release"]  # nothing left beside it
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    from ophora.curation.release import ReleaseError

    with pytest.raises(ReleaseError, match="not an earlier release"):
        release(curated, tmp_path / "other", progress=False)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


# --- privacy.frame_hits: blur -----------------------------------------------------------------------------------
def test_frame_hits_is_checked_before_any_clip_and_changes_the_settings_hash(sources, tmp_path):
    from ophora.curation.config import ConfigError
    from ophora.curation.pipeline import config_hash

    folder = sources[0]
    with pytest.raises(ConfigError, match="privacy.frame_hits is 'smudge'; use drop .* or blur"):
        run_pipeline(read_tasks(folder / "clips.csv"), load_config(overrides=["privacy.frame_hits=smudge"]),
                     tmp_path / "curated.parquet", workers=1)
    assert not (tmp_path / "curated.parquet").exists()
    assert config_hash(load_config(overrides=["privacy.frame_hits=blur"])) != config_hash(load_config())


@pytest.fixture(scope="module")
def blurred(sources, tmp_path_factory):
    """The named window and the face clip curated with privacy.frame_hits=blur, and released."""
    folder = tmp_path_factory.mktemp("blur")
    config = load_config(overrides=["dynamics.enabled=false", "privacy.frame_hits=blur"])
    tasks = [task for task in read_tasks(sources[0] / "clips.csv") if task.clip_id in ("A-named", "face")]
    frame = run_pipeline(tasks, config, folder / "curated.parquet", workers=1).set_index("clip_id")
    return folder / "curated.parquet", frame, folder / "release", release(folder / "curated.parquet",
                                                                          folder / "release", progress=False)


def _released_video(curated, out, clip_id: str):
    from ophora.curation.release import load_salt, released_id

    return out / "videos" / f"{released_id(load_salt(curated.with_suffix('.release-salt')), clip_id)}.mp4"


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def test_blur_releases_hit_clips_covered_and_screened_again(sources, blurred, tmp_path):
    """Default settings drop both clips (test above); with blur they are kept, their rows say where (never what),
    and the released videos pass both screens on every frame, unchanged away from the hits, covered at them."""
    from ophora.curation.inputs import ClipTask
    from ophora.curation.privacy import FaceScreen, TextScreen, decode_window
    from ophora.curation.release import blur_plan, cut_window

    folder, _, dropped, _ = sources
    curated, frame, out, card = blurred
    assert dropped.loc["A-named", "decision"] == dropped.loc["face", "decision"] == "drop"
    assert card["counts"]["released_clips"] == card["counts"]["released_blurred"] == 2
    assert card["counts"]["withheld_after_blurring"] == 0 and card["frame_hits"]["mode"] == "blur"
    readme = (out / "README.md").read_text()
    assert "2 clips were released blurred, 0 were withheld" in readme and "a name they missed" in readme
    cfg = load_config()["privacy"]
    face, text = FaceScreen(cfg["face_prescreen"]), TextScreen(cfg["text_prescreen"])
    for clip_id, kind, source in (("A-named", "text", "two_windows.mp4"), ("face", "face", "face.mp4")):
        row = frame.loc[clip_id]
        assert row["decision"] == "keep", row["reason"]
        regions = json.loads(row["blur_regions"])
        assert {r["kind"] for r in regions} == {kind}
        hit_frames = sorted({r["frame"] for r in regions})
        if kind == "face":  # the frames the default run found (its text reading stops at the first hit)
            assert hit_frames == json.loads(dropped.loc[clip_id, "face_hit_frames"])
        else:  # the name is on frames 10-29
            assert set(hit_frames) <= set(range(10, 30)) and len(hit_frames) >= 15
        assert all(set(r) == {"frame", "kind", "box"} and len(r["box"]) == 4 for r in regions)  # no text read
        video = _released_video(curated, out, clip_id)
        task = ClipTask(clip_id=clip_id, video=str(video), caption=None)
        frames = decode_window(task)
        assert len(frames) == 49
        assert face(task, frames).measurements["face_frames"] == 0  # every released frame passes both screens
        assert text(task, frames).measurements["text_frames"] == 0
        plain = tmp_path / f"{clip_id}-plain.mp4"
        cut_window(folder / source, plain, int(row["window_first_frame"]), int(row["window_end_frame"]), 8.0)
        plain_frames = decode_window(ClipTask(clip_id=clip_id, video=str(plain), caption=None))
        covers = blur_plan(row.to_dict(), "blur")  # text: every frame; faces: from 2 before the first to 2 after
        covered = {i for low, high, *_ in covers for i in range(low, high + 1)}
        assert covered == (set(range(49)) if kind == "text" else set(range(hit_frames[0] - 2, hit_frames[-1] + 3)))
        untouched = 0
        for i in range(49):  # away from the boxes (and one macroblock around them) the frames are the plain cut's
            outside = np.ones(frames[i].shape[:2], bool)
            for low, high, x, y, w, h in covers:
                if low <= i <= high:
                    outside[max(0, y - 16):y + h + 16, max(0, x - 16):x + w + 16] = False
            untouched += outside.all()
            assert outside.mean() > 0.1 and _psnr(frames[i][outside], plain_frames[i][outside]) > 40, i
        assert untouched == 49 - len(covered) and (kind == "text" or untouched >= 20)
        hit = regions[len(regions) // 2]
        x, y, w, h = hit["box"]
        before, after = plain_frames[hit["frame"]], frames[hit["frame"]]
        if kind == "face":  # the plain cut shows the face the blurred one hides
            assert face.hit(cv2.cvtColor(before, cv2.COLOR_RGB2GRAY))
        assert np.abs(before[y:y + h, x:x + w].astype(int) - after[y:y + h, x:x + w]).mean() > 30
        assert after[y:y + h, x:x + w].max() < 40  # a flat black box: nothing of the region survives


def test_blur_fails_closed(blurred, tmp_path):
    """A box that misses the face is found again on the written video and withheld; a row whose regions do not
    account for its hit frames, or cannot be read, is refused before any video work."""
    from ophora.curation.pipeline import output_paths

    curated, frame, _, _ = blurred
    rows = pd.read_parquet(curated)
    face = rows["clip_id"] == "face"
    rows.loc[face, "blur_regions"] = json.dumps([{**r, "box": [0, 0, 60, 60]}  # the corner, not the face
                                                 for r in json.loads(rows.loc[face, "blur_regions"].iloc[0])])
    rows.loc[rows["clip_id"] == "A-named", "blur_regions"] = None  # hits without their regions
    extra = rows[face].assign(clip_id="unreadable", blur_regions="[{\"frame\": 3}]")
    edited = tmp_path / "edited.parquet"
    pd.concat([rows, extra]).to_parquet(edited)
    shutil.copy(output_paths(curated)["config"], output_paths(edited)["config"])
    card = release(edited, tmp_path / "release", progress=False)
    assert card["counts"]["released_clips"] == 0 and card["counts"]["withheld_after_blurring"] == 1
    assert not list((tmp_path / "release").rglob("*.mp4"))  # the withheld blurred video is not left behind
    reasons = card["reasons_detail"]
    assert reasons == {"release: a blurred region still shows a face": 1,
                       "release: the blur regions do not cover every frame where the screens found on-screen text "
                       "(rerun the curation)": 1,
                       "release: the recorded blur regions cannot be read (rerun the curation)": 1}
    saved = json.loads(output_paths(edited)["config"].read_text())
    saved["config"]["privacy"]["frame_hits"] = "smudge"  # a hand-edited settings file: refused in one line
    output_paths(edited)["config"].write_text(json.dumps(saved))
    from ophora.curation.release import ReleaseError

    with pytest.raises(ReleaseError, match="edited.config.json: privacy.frame_hits is 'smudge'"):
        release(edited, tmp_path / "release", progress=False)


def test_cut_window_takes_more_boxes_than_one_command_line_argument_holds(sample_clips, tmp_path):
    from ophora.curation.release import cut_window

    cover = [(i % 49, i % 49, (i * 7) % 700, (i * 13) % 460, 8, 8) for i in range(1500)]  # ~140 KB of filters
    assert cut_window(sample_clips[0], tmp_path / "boxes.mp4", 0, 49, 8.0, cover) == 49
    first = read_clip(tmp_path / "boxes.mp4")[0][0]
    assert first[1:7, 1:7].max() < 40 and first[100:140, 100:140].mean() > 40  # box 0 on frame 0; elsewhere not
