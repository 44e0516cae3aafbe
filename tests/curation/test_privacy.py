"""Privacy: the local Haar face pre-screen (real photo, real surgery clips) and the VLM rubric over HTTP."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest

from ophora.curation.chat_client import MalformedAnswer
from ophora.curation.config import load_config
from ophora.curation.inputs import ClipTask
from ophora.curation.privacy import FaceScreen, VlmScreen, parse_rubric, sample_frames

from .media import make_face_video


def clip(video) -> ClipTask:
    return ClipTask(clip_id="p", video=str(video), caption="Remove the cortex with the I/A tip.")


@pytest.fixture(scope="module")
def face_video(tmp_path_factory, grace_hopper_rgb):
    return make_face_video(tmp_path_factory.mktemp("face") / "face.mp4", grace_hopper_rgb)


def test_haar_cascade_finds_the_face_in_a_photo(grace_hopper_rgb):
    screen = FaceScreen({**load_config()["privacy"]["face_prescreen"], "scale_factor": 1.15, "min_neighbors": 5,
                         "min_face_fraction": 48 / 512})
    faces = screen.faces(grace_hopper_rgb)
    assert len(faces) == 1
    x, y, w, h = faces[0]
    # the face sits in the upper middle of the 512x600 portrait
    assert 100 < x + w / 2 < 400 and 100 < y + h / 2 < 350 and 120 < w < 350
    assert screen.faces(np.full_like(grace_hopper_rgb, 128)) == []  # a flat image has no face


def test_face_prescreen_drops_a_face_and_keeps_surgery(face_video, sample_clips):
    screen = FaceScreen(load_config()["privacy"]["face_prescreen"])
    flagged = screen(clip(face_video))
    assert flagged.drop_reason and flagged.drop_reason.startswith("privacy: face detected locally")
    assert flagged.measurements["face_frames"] == flagged.measurements["frames_checked"] > 0
    for sample in sample_clips:
        result = screen(clip(sample))
        assert result.drop_reason is None and result.measurements["face_frames"] == 0


def test_pipeline_counts_faces_during_decoding_as_the_screen_does(face_video, sample_clips):
    """The pipeline counts faces on a side thread while the clip decodes: same frames, same verdict."""
    from ophora.curation.pipeline import Curator

    config = load_config(overrides=["dynamics.enabled=false", "probe.window_frames=null"])  # an 8-frame face clip
    curator, screen = Curator(config), FaceScreen(config["privacy"]["face_prescreen"])
    for video in (face_video, *sample_clips):
        row, alone = curator.process(clip(video)), screen(clip(video))
        assert (row["face_frames_checked"], row["face_face_frames"]) == \
            (alone.measurements["frames_checked"], alone.measurements["face_frames"])
        assert (row["drop_stage"] == "face") == (alone.drop_reason is not None)
    assert row["decision"] == "keep" and curator.process(clip(face_video))["reason"].startswith("privacy: face")


def test_sample_frames_spread_over_the_window(cut_video):
    frames = sample_frames(str(cut_video), 4, start_s=0.0, end_s=3.0, max_side=360)
    assert len(frames) == 4 and frames[0].shape == (240, 360, 3)


def test_parse_rubric():
    assert parse_rubric('{"face": "no", "identifiable_person": false, "on_screen_text": "Yes", '
                        '"non_surgical": "no"}') == {"face": False, "identifiable_person": False,
                                                     "on_screen_text": True, "non_surgical": False}
    with pytest.raises(MalformedAnswer, match="no JSON"):
        parse_rubric("looks fine to me")
    with pytest.raises(MalformedAnswer, match="non_surgical"):
        parse_rubric('{"face": "no", "identifiable_person": "no", "on_screen_text": "no"}')


def vlm_cfg(server, model: str) -> dict:
    cfg = load_config()["privacy"]["vlm"]
    cfg.update(enabled=True, base_url=server.base_url, model=model, retries=0, timeout_s=5, frames=3)
    return cfg


def test_vlm_rubric_over_http(chat_server, sample_clips):
    clean = VlmScreen(vlm_cfg(chat_server, "vlm-clean"))(clip(sample_clips[0]))
    assert clean.drop_reason is None and clean.measurements["on_screen_text"] is False
    content = chat_server.requests[-1]["messages"][0]["content"]
    images = [part for part in content if part["type"] == "image_url"]
    assert len(images) == 3
    jpeg = base64.b64decode(images[0]["image_url"]["url"].split(",", 1)[1])
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (299, 448, 3)  # 720x480 downscaled to max_side 448 (480 * 448 / 720 = 298.7)
    flagged = VlmScreen(vlm_cfg(chat_server, "vlm-text"))(clip(sample_clips[0]))
    assert flagged.drop_reason == "privacy: VLM flagged on_screen_text"
    with pytest.raises(MalformedAnswer):
        VlmScreen(vlm_cfg(chat_server, "vlm-garbled"))(clip(sample_clips[0]))
    assert chat_server.calls("vlm-garbled") == 2


def subtitled_video(source, out):
    """The real clip with a burned-in patient line and subtitle (dark boxes, as overlays usually are)."""
    from ophora.generation.video import read_clip, write_clip

    frames = read_clip(source)[0][:16].copy()
    for frame in frames:
        for text, y in (("PATIENT: JOHN DOE  ID 48213", 50), ("Surgeon: Dr Mary Smith 2021-03-14", 450)):
            cv2.rectangle(frame, (10, y - 34), (700, y + 12), (0, 0, 0), -1)
            cv2.putText(frame, text, (20, y), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2, cv2.LINE_AA)
    return write_clip(frames, out, fps=8)


def test_text_prescreen_reads_burned_in_text(tmp_path, sample_clips):
    import shutil

    if shutil.which("tesseract") is None:
        pytest.skip("optional: needs Debian's tesseract-ocr (privacy.text_prescreen is off by default)")
    from ophora.curation.privacy import TextScreen

    screen = TextScreen(load_config(overrides=["privacy.text_prescreen.enabled=true"])["privacy"]["text_prescreen"])
    flagged = screen(clip(subtitled_video(sample_clips[0], tmp_path / "subtitled.mp4")))
    assert flagged.drop_reason and flagged.drop_reason.startswith("privacy: on-screen text read locally")
    assert flagged.measurements["text_frames"] == 3 and "PATIENT" in flagged.measurements["sample"]
    for sample in sample_clips:
        result = screen(clip(sample))
        assert result.drop_reason is None and result.measurements["text_frames"] == 0
