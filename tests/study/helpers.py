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
