"""The whole pipeline: one row per clip with measurements and reasons, bad clips recorded, resumable runs,
parallel workers giving the same rows, and the CLI writing the manifest and the report."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ophora.curation.cli import main
from ophora.curation.config import load_config
from ophora.curation.inputs import read_tasks
from ophora.curation.pipeline import VOLATILE_COLUMNS, output_paths, run_pipeline

from .media import make_face_video
from .openai_server import CANNED_INSTRUCTION
from .test_refine import PAPER_NARRATION


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, sample_clips, cut_video, lowres_video, joined_samples, grace_hopper_rgb):
    folder = tmp_path_factory.mktemp("manifest")
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    face = make_face_video(folder / "face.mp4", grace_hopper_rgb, frames=49)
    rows = [
        {"clip_id": "real-cortex", "video": str(sample_clips[0]), "caption": PAPER_NARRATION},
        {"clip_id": "real-hydro", "video": str(sample_clips[1]),
         "caption": "In this video the surgeon injects fluid under the capsule with a cannula to free the nucleus."},
        {"clip_id": "three-cuts", "video": str(cut_video), "caption": "Polish the posterior capsule."},
        {"clip_id": "low-res", "video": str(lowres_video), "caption": "Polish the posterior capsule."},
        {"clip_id": "missing", "video": str(folder / "missing.mp4"), "caption": "Polish the capsule."},
        {"clip_id": "empty", "video": "empty.mp4", "caption": "Polish the capsule."},  # relative to the manifest
        {"clip_id": "no-caption", "video": str(sample_clips[1]), "caption": None, "start": 0.0, "end": 3.0},
        {"clip_id": "joined", "video": str(joined_samples), "caption": "Inject fluid under the capsule with a cannula."},
        {"clip_id": "joined-first-half", "video": str(joined_samples), "caption": "Remove the cortex with the I/A tip.",
         "start": 0.0, "end": 6.125},  # frames 0-48: the first clip, up to the cut
        {"clip_id": "face", "video": str(face), "caption": "Remove the cortex with the I/A tip."},
    ]
    path = folder / "clips.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


EXPECTED = {  # clip_id: (decision, drop_stage, reason starts with)
    "real-cortex": ("keep", None, None),
    "real-hydro": ("keep", None, None),
    "three-cuts": ("drop", "dynamics", "dynamics: 3 cuts = 30.0/min above 6.0/min"),
    "low-res": ("drop", "probe", "resolution: 640x360 below 720x480"),
    "missing": ("drop", "probe", "probe: video file missing"),
    "empty": ("drop", "probe", "probe: zero-length video"),
    "no-caption": ("drop", "caption", "caption: missing caption"),
    "joined": ("keep", None, None),
    "joined-first-half": ("keep", None, None),
    "face": ("drop", "face", "privacy: face detected locally"),
}


def check_rows(frame: pd.DataFrame) -> None:
    rows = frame.set_index("clip_id")
    assert list(frame["clip_id"]) == list(EXPECTED)  # input order, one row per clip
    for clip_id, (decision, stage, reason) in EXPECTED.items():
        row = rows.loc[clip_id]
        assert row["decision"] == decision, (clip_id, row["reason"])
        assert row["keep"] == (decision == "keep")
        if stage is not None:
            assert row["drop_stage"] == stage and row["reason"].startswith(reason), (clip_id, row["reason"])
    assert rows.loc["real-cortex", "probe_width"] == 720 and rows.loc["low-res", "probe_height"] == 360
    assert rows.loc["three-cuts", "dynamics_cuts"] == 3 and rows.loc["joined", "dynamics_cuts"] == 1
    assert rows.loc["joined-first-half", "dynamics_cuts"] == 0
    # the training window of the joined clip is its longest scene (the first, frames 0-48), never across the cut
    assert rows.loc["joined", "window_frames"] == 49 and rows.loc["joined", "window_scenes"] == 2
    assert rows.loc["joined", "window_start_s"] == 0.0 and rows.loc["joined", "window_end_s"] == 48.75 / 8
    assert rows.loc["real-cortex", "decode_frames_decoded"] == rows.loc["real-cortex", "decode_frames_expected"] == 49
    assert rows.loc["joined", "probe_frames"] == 98 and rows.loc["real-hydro", "probe_codec"] == "h264"
    kept = rows[rows["keep"]]
    assert kept["instruction"].notna().all() and not kept["instruction"].str.contains("video").any()


@pytest.fixture(scope="module")
def cli_run(manifest, tmp_path_factory):
    """The CLI over the whole manifest with 2 worker processes (reused by the Ray comparison)."""
    out = tmp_path_factory.mktemp("cli") / "curated.parquet"
    assert main(["--input", str(manifest), "--out", str(out), "--workers", "2", "--quiet"]) == 0
    return out


def test_cli_end_to_end_with_workers(cli_run, capsys):
    frame = pd.read_parquet(cli_run)
    check_rows(frame)
    rows = frame.set_index("clip_id")
    assert rows.loc["real-cortex", "instruction"] == "Remove cortex to prevent zonular stress."
    assert rows.loc["real-hydro", "instruction"] == "Inject fluid under the capsule with a cannula to free the nucleus."
    assert rows.loc["real-hydro", "refine_backend"] == "rules-v1 (offline rule-based)"
    assert frame["worker"].nunique() == 2  # really spread over two processes
    paths = output_paths(cli_run)
    summary = json.loads(paths["summary"].read_text())
    assert (summary["clips"], summary["kept"], summary["dropped"], summary["errors"]) == (10, 4, 6, 0)
    assert summary["stages"]["probe"] == {"reached": 10, "passed": 7, "dropped": 3, "errors": 0}
    assert summary["stages"]["dynamics"]["dropped"] == 1 and summary["stages"]["face"]["dropped"] == 1
    html = paths["report"].read_text()
    assert "Cuts per minute" in html and "plotly" in html.lower()
    assert not paths["journal"].exists()


@pytest.mark.slow
def test_ray_backend_gives_the_same_manifest(cli_run, manifest, tmp_path):
    import ray  # a test dependency (requirements-dev.txt): this test must run, not skip

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "ray.parquet"
        assert main(["--input", str(manifest), "--out", str(out), "--backend", "ray", "--quiet"]) == 0
    finally:
        ray.shutdown()
    local, remote = pd.read_parquet(cli_run), pd.read_parquet(out)
    volatile = [c for c in VOLATILE_COLUMNS if c in local.columns]
    pd.testing.assert_frame_equal(local.drop(columns=volatile), remote.drop(columns=volatile))
    check_rows(remote)


def test_resume_skips_decided_and_retries_errors(manifest, tmp_path, chat_server):
    out = tmp_path / "llm.parquet"
    tasks = read_tasks(manifest)
    # the endpoint answers the run's preflight, then fails every request (the breaker set high: no pause)
    dead = load_config(overrides=["refine.backend=openai", f"refine.base_url={chat_server.base_url}",
                                  "refine.model=refine-ok", "refine.retries=0", "refine.breaker_failures=100",
                                  "privacy.face_prescreen.enabled=false"])
    chat_server.outage_after = 1
    first = run_pipeline(tasks, dead, out, workers=1).set_index("clip_id")
    assert (first["decision"] == "error").sum() == 5  # every clip that reached the refine stage
    assert first.loc["real-cortex", "decision"] == "error"
    assert first.loc["real-cortex", "reason"].startswith("refine: endpoint failed after 1 attempts: HTTP 503")
    assert not first.loc["real-cortex", "keep"]
    assert first.loc["low-res", "decision"] == "drop"  # decided clips are unaffected by the endpoint
    # the endpoint comes up: only the errored clips are processed again, and the ids are remembered
    chat_server.outage_after = None
    alive = load_config(overrides=["refine.backend=openai", f"refine.base_url={chat_server.base_url}",
                                   "refine.model=refine-ok", "refine.retries=0",
                                   "privacy.face_prescreen.enabled=false"])
    seen: list[str] = []
    second = run_pipeline(tasks, alive, out, workers=1, progress=lambda row, i, n: seen.append(row["clip_id"]))
    assert sorted(seen) == sorted(first.index[first["decision"] == "error"])  # only the errored clips
    assert (second["decision"] != "error").all()
    assert (second.set_index("clip_id").loc["real-cortex", "instruction"]) == CANNED_INSTRUCTION
    calls = chat_server.calls("refine-ok")
    seen.clear()  # (every request, preflight included, is recorded)
    third = run_pipeline(tasks, alive, out, workers=1, progress=lambda row, i, n: seen.append(row["clip_id"]))
    assert seen == [] and chat_server.calls("refine-ok") == calls  # a rerun costs nothing
    pd.testing.assert_frame_equal(second, third)
    # a threshold change is a new config: every clip is decided again under it
    seen.clear()
    stricter = load_config(overrides=["refine.backend=openai", f"refine.base_url={chat_server.base_url}",
                                      "refine.model=refine-ok", "privacy.face_prescreen.enabled=false",
                                      "dynamics.max_cuts_per_minute=3"])
    fourth = run_pipeline(tasks, stricter, out, workers=1, progress=lambda row, i, n: seen.append(row["clip_id"]))
    assert len(seen) == len(tasks) and fourth.set_index("clip_id").loc["joined", "drop_stage"] == "dynamics"


def test_interrupted_run_resumes_from_the_journal(manifest, tmp_path):
    out = tmp_path / "resume.parquet"
    tasks = read_tasks(manifest)
    config = load_config(overrides=["privacy.face_prescreen.enabled=false"])

    class Interrupt(Exception):
        pass

    def stop_after_three(row, count, total):
        if count == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_pipeline(tasks, config, out, workers=1, progress=stop_after_three)
    journal = output_paths(out)["journal"]
    assert len(journal.read_text().splitlines()) == 3 and not out.exists()
    seen: list[str] = []
    frame = run_pipeline(tasks, config, out, workers=1, progress=lambda row, i, n: seen.append(row["clip_id"]))
    assert len(seen) == len(tasks) - 3 and len(frame) == len(tasks)
    assert set(seen).isdisjoint([t.clip_id for t in tasks[:3]])


def test_folder_and_jsonl_inputs(tmp_path, sample_clips, manifest):
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "a.mp4").symlink_to(sample_clips[0])
    (folder / "a.txt").write_text(PAPER_NARRATION)
    (folder / "b.mp4").symlink_to(sample_clips[1])  # no caption file
    tasks = read_tasks(folder)
    assert [(t.video.endswith("a.mp4"), t.caption is not None) for t in tasks] == [(True, True), (False, False)]
    jsonl = tmp_path / "clips.jsonl"
    pd.read_csv(manifest).to_json(jsonl, orient="records", lines=True)
    assert [t.clip_id for t in read_tasks(jsonl)] == list(EXPECTED)


def test_cli_reports_bad_input_clearly(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,text\nx.mp4,hello\n")
    assert main(["--input", str(bad), "--out", str(tmp_path / "o.parquet")]) == 2
    assert "the header needs a 'video' column" in capsys.readouterr().err
    assert main(["--input", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o.parquet")]) == 2
    assert main(["--input", str(bad), "--out", str(tmp_path / "o.parquet"), "--set", "dynamics.nope=1"]) == 2


def test_measure_everything_mode_keeps_the_first_reason(manifest, tmp_path):
    tasks = [t for t in read_tasks(manifest) if t.clip_id in ("low-res", "three-cuts", "missing")]
    config = load_config(overrides=["run.stop_at_first_drop=false", "privacy.face_prescreen.enabled=false"])
    rows = run_pipeline(tasks, config, tmp_path / "all.parquet", workers=1).set_index("clip_id")
    assert rows.loc["low-res", "drop_stage"] == "probe" and rows.loc["low-res", "dynamics_cuts"] == 0
    assert rows.loc["three-cuts", "drop_stage"] == "dynamics" and rows.loc["three-cuts", "instruction"]
    assert rows.loc["missing", "stages_run"] == "probe"  # nothing to measure in a missing file


def test_a_screen_that_cannot_start_stops_a_run_with_workers_before_any_clip(tmp_path, sample_clips):
    """With worker processes the screens are built in the workers; a bad cascade is still one line up front,
    not a "worker failed" error row per clip."""
    from ophora.curation.inputs import ClipTask

    tasks = [ClipTask(clip_id=f"c{i}", video=str(clip), caption="Remove the lens.") for i, clip in enumerate(sample_clips)]
    config = load_config(overrides=[f"privacy.face_prescreen.cascade={tmp_path / 'missing.xml'}"])
    with pytest.raises(FileNotFoundError, match="missing.xml not found"):
        run_pipeline(tasks, config, tmp_path / "out.parquet", workers=2)
    assert not (tmp_path / "out.parquet").exists() and not output_paths(tmp_path / "out.parquet")["journal"].exists()
