"""`python -m ophora curate release`: the training manifest (read by the training's own reader), no private
columns, hashed ids, videos without audio or metadata, a card that explains every row, and no PHI anywhere."""

from __future__ import annotations

import json
import re
import subprocess

import imageio_ffmpeg
import pandas as pd
import pytest

from ophora.curation.cli import main
from ophora.curation.config import load_config
from ophora.curation.inputs import read_tasks
from ophora.curation.pipeline import output_paths, run_pipeline
from ophora.curation.release import RELEASE_COLUMNS, release
from ophora.training.manifest import read_manifest

PHI_STRINGS = ("John", "Smith", "1950", "123456", "Jones", "Mercy", "555-0199")


@pytest.fixture(scope="module")
def curated(tmp_path_factory, sample_clips, lowres_video):
    folder = tmp_path_factory.mktemp("release-input")
    with_audio = folder / "narrated.mp4"  # a real clip with a spoken-narration stand-in (audio) and a title tag
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(sample_clips[1]), "-f", "lavfi",
                    "-i", "sine=frequency=440:duration=8", "-shortest", "-c:v", "copy", "-c:a", "aac",
                    "-metadata", "title=Patient John Smith MRN 123456", str(with_audio)], check=True)
    rows = [
        {"clip_id": "John-Smith-1", "video": str(sample_clips[0]), "phase": "Lens Implantation",
         "caption": "Patient John Smith, born 03/04/1950, MRN 123456. Insert the IOL into the capsular bag with "
                    "the injector."},
        {"clip_id": "hydro", "video": str(with_audio), "phase": "hydrodissection",
         "caption": "In this video the surgeon injects fluid under the capsule with a cannula to free the nucleus."},
        {"clip_id": "phi-only", "video": str(sample_clips[1]), "caption": "Mr. Jones at Mercy Hospital, call 555-0199."},
        {"clip_id": "low-res", "video": str(lowres_video), "caption": "Polish the posterior capsule."},
        {"clip_id": "missing", "video": str(folder / "John_Smith_1950.mp4"), "caption": "Polish the capsule."},
    ]
    manifest = folder / "clips.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    out = tmp_path_factory.mktemp("curated") / "curated.parquet"
    run_pipeline(read_tasks(manifest), load_config(), out, workers=1)  # every frame screened, as release demands
    return out


@pytest.fixture(scope="module")
def released(curated, tmp_path_factory):
    out = tmp_path_factory.mktemp("release")
    assert main(["release", str(curated), "--out", str(out), "--quiet"]) == 0
    return out


def test_curated_manifest_keeps_narration_private(curated):
    frame = pd.read_parquet(curated)
    assert "caption" not in frame.columns and "narration" not in frame.columns
    private = output_paths(curated)["narration"]
    assert private.stat().st_mode & 0o077 == 0 and curated.stat().st_mode & 0o077 == 0  # owner only
    assert "John Smith" in pd.read_parquet(private)["narration"].iloc[0]
    rows = frame.set_index("clip_id")
    assert rows.loc["John-Smith-1", "decision"] == "keep"
    assert rows.loc["John-Smith-1", "instruction"] == "Insert the IOL into the capsular bag with the injector."
    assert json.loads(rows.loc["John-Smith-1", "narration_redactions"]) == {
        "date": 2, "name": 1, "record_number": 1}  # "born" and 03/04/1950; the MRN (and its digits) once
    assert rows.loc["phi-only", "decision"] == "drop" and rows.loc["phi-only", "reason"].startswith(
        "privacy: PHI in every narration sentence")


def test_release_is_the_training_manifest(released, curated):
    manifest = pd.read_parquet(released / "manifest.parquet")
    assert tuple(manifest.columns) == RELEASE_COLUMNS
    assert len(manifest) == 2 and manifest["phase"].tolist() == ["lens-implantation", "hydrodissection"]
    assert all(re.fullmatch(r"[0-9a-f]{16}", value) for value in manifest["clip_id"].tolist() + manifest["source_id"].tolist())
    assert (manifest["caption"] == manifest["instruction"]).all()
    records = read_manifest(released / "manifest.parquet")  # the training's reader, unchanged
    assert [r.instruction for r in records] == manifest["instruction"].tolist()
    assert all(r.video.is_file() and r.video.parent == released / "videos" for r in records)
    assert manifest["frames"].tolist() == [49, 49] and manifest["width"].tolist() == [720, 720]


def test_released_videos_have_no_audio_or_metadata(released):
    for video in (released / "videos").iterdir():
        probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(video)],
                               capture_output=True, text=True).stderr
        assert "Audio:" not in probe and "title" not in probe and "Video: h264" in probe


def test_no_phi_or_private_path_anywhere_in_the_release(released, curated):
    private_dir = str(curated.parent)
    for path in released.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for phi in PHI_STRINGS + (private_dir, "/tmp"):
                assert phi.encode() not in data, (path.name, phi)


def test_card_explains_every_row(released, curated):
    card = json.loads((released / "card.json").read_text())
    assert card["counts"] == {"curated_clips": 5, "kept_by_curation": 2, "released_clips": 2, "released_sources": 2,
                              "withheld_at_release": 0, "released_blurred": 0, "withheld_after_blurring": 0,
                              "dropped": 3, "errors": 0}
    assert card["frame_hits"]["mode"] == "drop" and "dropped whole" in card["frame_hits"]["text"]
    assert sum(card["reasons_detail"].values()) == 3
    assert card["reasons_detail"]["probe: video file missing: <path>"] == 1
    assert card["reasons_detail"]["resolution: 640x360 below 720x480 (long x short side)"] == 1
    privacy = [reason for reason in card["reasons_detail"] if reason.startswith("privacy:")]
    assert privacy and privacy[0].startswith("privacy: PHI in every narration sentence (1 ")  # counts, in words
    assert "withheld" not in privacy[0]
    assert card["phases"] == {"lens-implantation": 1, "hydrodissection": 1}
    assert card["filters"]["probe"]["min_long_side"] == 720 and card["filters"]["dynamics"]["detector"] == "content"
    assert "Presidio analyzer" in card["deidentification"]["method"] and "pysbd" in card["deidentification"]["method"]
    assert card["deidentification"]["redactions_in_narrations"]["name"] >= 2
    assert card["models"]["refine"]["labels_in_rows"] == ["rules-v1 (offline rule-based)"]
    decisions = pd.read_parquet(released / "decisions.parquet")
    assert len(decisions) == 5 and decisions["decision"].value_counts().to_dict() == {"released": 2, "drop": 3}
    assert "## De-identification" in (released / "README.md").read_text()


def test_release_rescreens_instructions_and_fails_closed(curated, tmp_path):
    """A curated manifest edited by hand (or from an older version) is not trusted."""
    edited = tmp_path / "curated.parquet"
    frame = pd.read_parquet(curated)
    frame.loc[frame["clip_id"] == "hydro", "instruction"] = "Inject fluid for Mrs. Miller on 12 May 2021."
    frame.to_parquet(edited, index=False)
    config = output_paths(curated)["config"]
    output_paths(edited)["config"].write_text(config.read_text())
    out = tmp_path / "release"
    assert main(["release", str(edited), "--out", str(out), "--quiet"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["counts"]["released_clips"] == 1 and card["counts"]["withheld_at_release"] == 1
    assert card["reasons_detail"]["release: PHI found in the instruction on re-screening"] == 1
    assert b"Miller" not in (out / "manifest.parquet").read_bytes()


def test_release_refuses_clips_whose_frames_were_not_all_screened(curated, tmp_path):
    """A manifest from a run with a screen off (or an older version that sampled frames) is not released."""
    edited = tmp_path / "curated.parquet"
    frame = pd.read_parquet(curated)
    frame.loc[frame["clip_id"] == "hydro", "text_end_frame"] = 12  # the last frames never looked at
    frame.loc[frame["clip_id"] == "John-Smith-1", ["face_first_frame", "face_end_frame"]] = None
    frame.to_parquet(edited, index=False)
    output_paths(edited)["config"].write_text(output_paths(curated)["config"].read_text())
    card = release(edited, tmp_path / "release", progress=False)
    assert card["counts"]["released_clips"] == 0
    assert card["reasons_detail"]["release: not every frame was screened for on-screen text"] == 1
    assert card["reasons_detail"]["release: not every frame was screened for faces"] == 1


def test_release_refuses_a_manifest_without_its_settings(curated, tmp_path, capsys):
    lone = tmp_path / "lone.parquet"
    lone.write_bytes(curated.read_bytes())
    assert main(["release", str(lone), "--out", str(tmp_path / "out")]) == 2
    assert "lone.config.json is missing" in capsys.readouterr().err
