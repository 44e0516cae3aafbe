"""Clips on disk (MP4 + provenance), batch runs from the sampler CSV, and the CLI end to end."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ophora.generation.batch import BatchInputError, read_prompt_csv, run_batch, write_manifest
from ophora.generation.engine import GenerationRequest, generate
from ophora.generation.loading import load_pipeline
from ophora.generation.video import read_clip, read_container_metadata, read_provenance, write_clip
from ophora.vocabulary import find_phase, load_phases

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_pipeline(model=str(tiny_model_dir))


def test_mp4_decodes_with_frames_size_fps_and_provenance_round_trips(loaded, tmp_path):
    result = generate(loaded, GenerationRequest(prompt="Aspirate cortex; keep = the bag # intact \\ \"now\"",
                                                seed=11, num_inference_steps=2))
    path = write_clip(result.frames, tmp_path / "clip.mp4", fps=8, provenance=result.provenance)
    frames, meta = read_clip(path)
    assert frames.shape == (9, 96, 144, 3)
    assert meta["fps"] == 8 and meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
    # Lossy H.264, but the same picture.
    assert np.abs(frames.astype(int) - result.frames.astype(int)).mean() < 12
    tags = read_container_metadata(path)
    written = {**result.provenance, "synthetic_mark": False}  # the writer records whether it burned in a label
    assert json.loads(tags["comment"]) == written
    assert tags["title"].startswith("SYNTHETIC")
    assert json.loads(path.with_suffix(".json").read_text()) == written
    path.with_suffix(".json").unlink()  # the clip travels alone: provenance still comes from the container
    assert read_provenance(path)["synthetic"] is True
    assert not list(tmp_path.glob("*.partial*"))


def test_synthetic_mark_is_visible_in_the_corner(loaded, tmp_path):
    frames = np.full((9, 96, 144, 3), 128, np.uint8)
    plain, _ = read_clip(write_clip(frames, tmp_path / "plain.mp4", fps=8))
    marked, _ = read_clip(write_clip(frames, tmp_path / "marked.mp4", fps=8, synthetic_mark=True,
                                     provenance={"synthetic": True}))
    assert read_provenance(tmp_path / "marked.mp4")["synthetic_mark"] is True
    corner = np.abs(marked[:, :20, :60].astype(int) - plain[:, :20, :60].astype(int)).mean()
    rest = np.abs(marked[:, 40:, 80:].astype(int) - plain[:, 40:, 80:].astype(int)).mean()
    assert corner > 20 and rest < 2


def test_write_clip_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="uint8 array"):
        write_clip(np.zeros((9, 96, 144, 3), np.float32), tmp_path / "x.mp4", fps=8)
    with pytest.raises(ValueError, match="even width and height"):
        write_clip(np.zeros((9, 95, 144, 3), np.uint8), tmp_path / "x.mp4", fps=8)


def _subset_csv(shared_dir, tmp_path, rows=3) -> Path:
    source = shared_dir / "reference" / "cataract1k_phase_prompts.csv"
    with source.open(newline="") as handle:
        reader = csv.DictReader(handle)
        kept = [row for _, row in zip(range(rows), reader)]
        fields = reader.fieldnames
    target = tmp_path / "prompts.csv"
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
    return target


def test_sampler_csv_reads_all_phases(shared_dir):
    items = read_prompt_csv(shared_dir / "reference" / "cataract1k_phase_prompts.csv")
    assert len(items) == 12
    assert [i.phase for i in items] == [p.id for p in load_phases()]  # typos such as 'Capsule-Pulishing' too
    assert items[3].clip_id == "hydrodissection_1" and items[3].prompt.startswith("Balanced salt solution")


def test_batch_resumes_and_never_overwrites_other_settings(loaded, shared_dir, tmp_path):
    items = read_prompt_csv(_subset_csv(shared_dir, tmp_path))
    out = tmp_path / "clips"
    base = GenerationRequest(prompt="", seed=12345, num_inference_steps=2)
    assert set(run_batch(loaded, items, out, base).values()) == {"done"}
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")}
    assert len(first) == 3
    (out / "viscoelastic_1.mp4").unlink()  # as if the run had been killed before this clip
    status = run_batch(loaded, items, out, base)
    assert status == {"incision_1": "skipped", "viscoelastic_1": "done", "capsulorhexis_1": "skipped"}
    assert (out / "incision_1.mp4").stat().st_mtime_ns == first["incision_1.mp4"]
    manifest = list(csv.DictReader((write_manifest(items, out)).open()))
    assert [r["status"] for r in manifest] == ["done"] * 3
    assert manifest[0]["phase"] == "incision" and manifest[0]["seed"] == "12345"
    assert json.loads((out / "incision_1.json").read_text())["clip_id"] == "incision_1"
    with pytest.raises(BatchInputError, match="different settings \\(seed\\)"):
        run_batch(loaded, items, out, GenerationRequest(prompt="", seed=1, num_inference_steps=2))
    assert set(run_batch(loaded, items, out, GenerationRequest(prompt="", seed=1, num_inference_steps=2),
                         overwrite=True).values()) == {"done"}


def test_batch_shares_rows_between_processes(loaded, shared_dir, tmp_path):
    items = read_prompt_csv(_subset_csv(shared_dir, tmp_path))
    base = GenerationRequest(prompt="", num_inference_steps=1)
    a = run_batch(loaded, items, tmp_path / "o", base, process_index=0, num_processes=2)
    b = run_batch(loaded, items, tmp_path / "o", base, process_index=1, num_processes=2)
    assert set(a) == {"incision_1", "capsulorhexis_1"} and set(b) == {"viscoelastic_1"}


@pytest.mark.parametrize("content, message", [
    ("clip id,caption prompt\n", "no rows"),
    ("name,text\na,b\n", "lacks the column"),
    ("clip id,caption prompt\na,\n", "row 2: empty 'caption prompt'"),
    ("clip id,caption prompt\na,x\na,y\n", "repeats row 2"),
    ("clip id,caption prompt\n../evil,x\n", "not a safe file name"),
])
def test_bad_csv_gets_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(BatchInputError, match=message):
        read_prompt_csv(path)


def test_phase_vocabulary():
    phases = load_phases()
    assert len(phases) == 12 and all(p.templates for p in phases)
    assert find_phase("Lens Implantation").id == "lens-implantation"
    assert find_phase("Anterio-Chamber-Flushing").id == "anterior-chamber-flushing"
    assert find_phase("vitrectomy") is None


def _cli(*args, cwd, env_extra=None):
    env = {**os.environ, "OPHORA_CACHE": str(cwd / "cache"), "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "ophora", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_cli_single_clip_and_batch(shared_dir, tmp_path):
    done = _cli("generate", "Inject balanced salt solution", "--model", "tiny", "--seed", "7", "--steps", "2",
                "--frames", "9", "--out", "clip.mp4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "clip.mp4").is_file() and json.loads((tmp_path / "clip.json").read_text())["seed"] == 7
    assert "random, untrained weights" in done.stderr and "denoising" in done.stderr  # tqdm progress
    csv_path = _subset_csv(shared_dir, tmp_path, rows=2)
    batch = _cli("generate", "--csv", str(csv_path), "--out-dir", "out", "--model", "tiny", "--steps", "1",
                 cwd=tmp_path)
    assert batch.returncode == 0, batch.stderr
    assert "2 generated" in batch.stdout and (tmp_path / "out" / "manifest.csv").is_file()
    again = _cli("generate", "--csv", str(csv_path), "--out-dir", "out", "--model", "tiny", "--steps", "1",
                 cwd=tmp_path)
    assert "0 generated, 2 already done" in again.stdout


def test_cli_bad_input_exits_2_with_message(tmp_path):
    bad = _cli("generate", "x", "--model", "tiny", "--frames", "10", "--out", "c.mp4", cwd=tmp_path)
    assert bad.returncode == 2 and "Frames must be 8N+1" in bad.stderr
    missing = _cli("generate", "x", "--model", str(tmp_path / "none"), "--out", "c.mp4", cwd=tmp_path)
    assert missing.returncode == 2 and "No such folder" in missing.stderr and "hf download" not in missing.stderr
    assert _cli("nonsense", cwd=tmp_path).returncode == 2


@pytest.mark.slow
def test_torchrun_splits_a_batch_across_processes(shared_dir, tmp_path):
    """Data parallel as on a multi-GPU box: two processes (CPU here), each takes its share, one manifest."""
    csv_path = _subset_csv(shared_dir, tmp_path, rows=3)
    env = {**os.environ, "OPHORA_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "ophora", "tiny", "--out", str(tmp_path / "tiny")], env=env, check=True,
                   capture_output=True)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "ophora",
                           "generate", "--csv", str(csv_path), "--out-dir", "out", "--model", str(tmp_path / "tiny"),
                           "--steps", "1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 generated" in done.stdout  # the main process made 2 of 3; the other process made the third
    rows = list(csv.DictReader((tmp_path / "out" / "manifest.csv").open()))
    assert [r["status"] for r in rows] == ["done"] * 3
