"""Helpers for study tests: small real video files (ffmpeg test patterns) and study files around them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from ophora.study.blinding import ffmpeg_exe


def make_video(path: Path, index: int, *, size: str = "64x48", seconds: float = 1.0, title: str | None = None,
               fps: float = 8) -> Path:
    """A real H.264 MP4 whose pixels differ per ``index`` (so content hashes differ)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={seconds}",
           "-vf", f"hue=h={index * 37 % 360},drawbox=x={index % 40}:y=4:w=6:h=6:color=white:t=fill",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if title:
        cmd += ["-metadata", f"title={title}", "-metadata", f"comment={title}"]
    subprocess.run(cmd + [str(path)], check=True)
    return path


def write_study(root: Path, *, n_real: int = 3, n_generated: int = 3, raters=("r1", "r2", "r3"), repeats: int = 0,
                ask_phase: bool = True, turing: bool = True, slug: str = "test-study", **extra) -> Path:
    """A complete study: a real set from a manifest, a generated set from a folder with provenance sidecars."""
    real_dir, gen_dir = root / "clips" / "real", root / "clips" / "gen"
    rows = ["path,phase,instruction"]
    for i in range(n_real):
        make_video(real_dir / f"real_case{i:02d}.mp4", i)
        rows.append(f"real_case{i:02d}.mp4,hydrodissection,Inject fluid under the capsule rim {i}")
    if n_real:
        (real_dir / "manifest.csv").write_text("\n".join(rows) + "\n")
    for i in range(n_generated):
        clip = make_video(gen_dir / f"ophora_gen_{i:02d}.mp4", 100 + i, title="Ophora synthetic clip")
        clip.with_suffix(".json").write_text(json.dumps({
            "model": "ophora", "prompt": f"Remove the lens nucleus with phacoemulsification {i}", "seed": 1234 + i,
            "synthetic": True, "phase": "phacoemulsification"}))
    clip_sets = []
    if n_real:
        clip_sets.append({"name": "real", "source": "real", "manifest": "clips/real/manifest.csv"})
    if n_generated:
        clip_sets.append({"name": "gen", "source": "generated", "model": "ophora", "folder": "clips/gen"})
    data = {
        "slug": slug, "title": "Test study", "instructions": "Rate each clip.", "seed": 7,
        "criteria": [
            {"name": "phase_matching", "description": "matches the instruction", "shows_instruction": True,
             "scale": {"min": 1, "max": 5, "anchors": {1: "no", 5: "yes"}}},
            {"name": "realism", "description": "looks real", "scale": {"min": 1, "max": 5}},
        ],
        "phases": "cataract", "ask_phase": ask_phase, "turing_test": turing, "clip_sets": clip_sets,
        "raters": list(raters), "repeats": repeats, "blinding": {"width": 64, "height": 48, "fps": 8, "crf": 30},
        **extra,
    }
    path = root / f"{slug}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def full_answer(item, score: int = 3, **overrides) -> dict:
    """A complete, valid answer for a BlindItem."""
    answer = {"scores": {c["name"]: score for c in item.criteria}}
    if item.ask_phase:
        answer["phase"] = item.phases[0]
    if item.turing_test:
        answer["turing"], answer["confidence"] = "real", 3
    answer.update(overrides)
    return answer


def tamper_with_record(store, slug: str, codes: dict, execute, truncate: bool = False) -> None:
    """The attacks of issue 20 on a study's record, through ``execute(sql)`` (a client outside the study
    engine: an external SQLite connection with foreign keys off, or a PostgreSQL session). Each one must be
    refused by the database or detected by ``verify_record``."""
    import pytest

    def refused(sql: str) -> None:
        with pytest.raises(Exception, match="fixed|append-only|TRUNCATE|only forward|cannot be deleted"):
            execute(sql)
        assert store.verify_record(slug).ok, sql

    def found(expected: str) -> None:
        check = store.verify_record(slug)
        assert not check.ok and any(expected in p for p in check.problems), check.problems

    code = codes["r1"]
    for _ in range(2):
        item = store.next_item(code)
        store.submit_rating(code, item.clip_id, **full_answer(item))
    rated = store.ratings_frame(slug)["clip_id"].iloc[0]
    unrated = next(c for c in store.clips_frame(slug)["clip_id"] if c not in set(store.ratings_frame(slug)["clip_id"]))
    head = store.verify_record(slug).head
    # While open: an unrated clip can still be relabelled by the engine, so the database lets an UPDATE through,
    # but the record notices it, and notices when it is put back.
    flip = "UPDATE clips SET source = CASE source WHEN 'real' THEN 'generated' ELSE 'real' END"
    execute(f"{flip} WHERE blind_id = '{unrated}'")
    found("clips row")
    execute(f"{flip} WHERE blind_id = '{unrated}'")
    assert store.verify_record(slug).ok and store.verify_record(slug).head == head
    refused(f"{flip} WHERE blind_id = '{rated}'")
    refused("DELETE FROM assignments WHERE completed_at IS NOT NULL")
    refused("UPDATE assignments SET clip_id = clip_id + 1 WHERE completed_at IS NOT NULL")
    refused("UPDATE assignments SET completed_at = NULL WHERE completed_at IS NOT NULL")
    refused("DELETE FROM raters")
    store.lock_study(slug, reason="analysis")
    refused(flip)  # flips the Turing test's ground truth
    refused("DELETE FROM clips")
    refused("DELETE FROM assignments")  # with foreign keys off on SQLite too
    refused("UPDATE record_chain SET row_hash = link_hash")
    refused("DELETE FROM record_chain")
    if truncate:
        for sql in ("TRUNCATE ratings, answers, audit_log", "TRUNCATE studies CASCADE", "TRUNCATE record_chain",
                    "TRUNCATE assignments CASCADE"):
            refused(sql)
    # What the database lets in on a locked study, the record catches: a forged newer version of a score
    execute("INSERT INTO ratings (assignment_id, criterion, score, version, rated_at) "
            "SELECT assignment_id, criterion, 1, version + 1, rated_at FROM ratings ORDER BY id LIMIT 1")
    found("ratings row")
    execute("INSERT INTO audit_log (study_id, at, actor, action, is_admin) "
            "SELECT study_id, at, 'admin', 'lock_study', is_admin FROM audit_log ORDER BY id LIMIT 1")
    found("audit_log row")
