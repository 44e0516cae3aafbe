"""`python -m ophora curate release CURATED.parquet --out DIR`: a curated manifest -> a data set others may get.

Why a separate step: the curated manifest is a working file (measurements, local paths, drop reasons with
paths in them, the researcher's own clip ids); a release must hold only what training needs and nothing that
identifies a patient. So the release is built from an allow-list of columns, never by deleting known-bad
ones; every kept instruction is screened for PHI again (a manifest from an older run or edited by hand is not
trusted); source videos are copied without audio (the narration is spoken there), metadata, chapters,
subtitles or data streams; source and clip ids are salted hashes; and a dataset card says how it was made.

Layout of DIR (stable: `python -m ophora train encode --manifest DIR/manifest.parquet` reads it unchanged)::

    manifest.parquet    one row per released clip: clip_id, video (videos/<source_id>.<ext>, relative),
                        instruction, caption (= instruction), phase, start_s, end_s, source_id, width,
                        height, fps, frames, duration_s
    videos/             the source videos, stream-copied without audio and metadata
    decisions.parquet   one row per curated clip (hashed ids): decision, stage and a path-free reason
    card.json           the dataset card as data; README.md the same card as text
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd

RELEASE_COLUMNS = ("clip_id", "video", "instruction", "caption", "phase", "start_s", "end_s", "source_id",
                   "width", "height", "fps", "frames", "duration_s")
RELEASE_FORMAT = "ophora-release-v1"
PROBE_COLUMNS = {"width": "probe_width", "height": "probe_height", "fps": "probe_fps", "frames": "probe_clip_frames",
                 "duration_s": "probe_clip_duration_s"}


class ReleaseError(ValueError):
    """The curated manifest cannot be released; the message says what to do."""


def salted_hash(salt: bytes, value: str, length: int = 16) -> str:
    return hashlib.sha256(salt + value.encode("utf-8")).hexdigest()[:length]


def load_salt(path: Path) -> bytes:
    """The private salt that makes hashed ids unguessable from paths; created once (owner-only), reused so
    that two releases of the same sources give the same ids."""
    if not path.is_file():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
    salt = path.read_text(encoding="utf-8").strip()
    if len(salt) < 32:
        raise ReleaseError(f"salt file {path} holds fewer than 32 characters; delete it to make a new one")
    return salt.encode("utf-8")


def public_reason(reason: str | None, deid) -> str | None:
    """A drop reason without local paths and without PHI (a reason quoting a caption is withheld)."""
    if reason is None or (isinstance(reason, float) and pd.isna(reason)):
        return None
    text = re.sub(r"(?<!\S)(?:[A-Za-z]:[\\/]|\.{0,2}/|~/|[a-z]+://)[^\s,;)]*", "<path>", str(reason))
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "<quoted>", text)
    kind = text.split(":", 1)[0]
    if "unexpected" in text or "worker failed" in text:  # an exception's message may quote anything
        return f"{kind}: unexpected error (details withheld)"
    # our own reason texts name stages and counts; a name, date, id... in what is left withholds it
    if deid.release_text(text.replace("<path>", "path").replace("<quoted>", "quoted")) is None:
        return f"{kind}: <reason withheld: it quotes text>"
    return text


def strip_video(source: Path, target: Path) -> None:
    """Stream-copy the video track only: no audio (spoken narration), metadata, chapters, subtitles, data."""
    import imageio_ffmpeg

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.stem + ".partial" + target.suffix)
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(source), "-map", "0:v:0", "-c", "copy",
               "-an", "-sn", "-dn", "-map_metadata", "-1", "-map_chapters", "-1", "-fflags", "+bitexact",
               "-flags:v", "+bitexact", str(partial)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"ffmpeg could not copy the video stream: {result.stderr.strip()[-300:]}")
    partial.replace(target)


def _window(row: dict, bound: str) -> float | None:
    """The training window's bound (the longest scene, see the curation's window stage), else the clip's."""
    column = "window_" + bound if "window_frames" in row and pd.notna(row.get("window_frames")) else bound
    value = row.get(column)
    return None if value is None or pd.isna(value) else float(value)


def _redaction_totals(frame: pd.DataFrame, columns: tuple[str, ...]) -> dict[str, int]:
    totals: Counter = Counter()
    for column in columns:
        if column not in frame.columns:
            continue
        for value in frame[column].dropna():
            totals.update(json.loads(value) if isinstance(value, str) else {})
    return dict(sorted(totals.items()))


def _settings(config: dict) -> dict:
    """Filters and thresholds for the card (endpoints appear under models, keys never: only env var names)."""
    privacy = config["privacy"]
    return {"probe": config["probe"], "caption": config["caption"], "dynamics": config["dynamics"],
            "face_prescreen": privacy["face_prescreen"], "text_prescreen": privacy["text_prescreen"],
            "vlm": {k: privacy["vlm"][k] for k in ("enabled", "frames", "max_side")},
            "refine": {k: config["refine"][k] for k in ("backend", "min_words", "max_words", "max_chars",
                                                        "temperature", "max_tokens")},
            "deid": privacy["deid"], "stop_at_first_drop": config["run"]["stop_at_first_drop"]}


def _models(config: dict, frame: pd.DataFrame) -> dict:
    import cv2
    import scenedetect

    refine = config["refine"]
    used = sorted(frame["refine_backend"].dropna().unique().tolist()) if "refine_backend" in frame.columns else []
    versions = sorted(frame["refine_prompt_version"].dropna().unique().tolist()) \
        if "refine_prompt_version" in frame.columns else []
    models = {"refine": {"backend": refine["backend"], "labels_in_rows": used, "prompt_versions": versions},
              "dynamics": f"PySceneDetect {scenedetect.__version__} {config['dynamics']['detector']} detector",
              "decoder": f"OpenCV {cv2.__version__}"}
    if refine["backend"] == "openai":
        models["refine"].update(model=refine["model"], endpoint=refine["base_url"])
    elif refine["backend"] == "transformers":
        models["refine"].update(model=refine["model_path"])
    if config["privacy"]["face_prescreen"]["enabled"]:
        models["face_prescreen"] = "OpenCV Haar cascade " + str(config["privacy"]["face_prescreen"]["cascade"]
                                                                 or "haarcascade_frontalface_default.xml")
    vlm = config["privacy"]["vlm"]
    if vlm["enabled"]:
        models["vlm"] = {"backend": vlm["backend"], "model": vlm["model"] if vlm["backend"] == "openai"
                         else vlm["model_path"], **({"endpoint": vlm["base_url"]} if vlm["backend"] == "openai" else {})}
    if config["privacy"]["text_prescreen"]["enabled"]:
        models["text_prescreen"] = "Tesseract OCR (tesseract-ocr)"
    return models


def release(curated: str | Path, out: str | Path, salt_file: str | Path | None = None,
            progress: bool = True) -> dict:
    """Write the release of ``curated`` into ``out`` and return the card."""
    from tqdm import tqdm

    from .deid import shared_deidentifier
    from .pipeline import output_paths
    from .report import summarize

    curated = Path(curated)
    if not curated.is_file():
        raise ReleaseError(f"{curated} does not exist; run `python -m ophora curate --input ... --out {curated}` first")
    frame = pd.read_parquet(curated)
    needed = {"clip_id", "video", "decision", "instruction", "config_hash"}
    if not needed <= set(frame.columns):
        raise ReleaseError(f"{curated} is not a curated manifest (missing {', '.join(sorted(needed - set(frame.columns)))})")
    config_path = output_paths(curated)["config"]
    if not config_path.is_file():
        raise ReleaseError(f"{config_path} is missing: the card needs the run's settings. Rerun the same "
                           f"`python -m ophora curate` command (decided clips are not redone) to write it.")
    saved = json.loads(config_path.read_text(encoding="utf-8"))
    config = saved["config"]
    if set(frame["config_hash"].dropna()) - {saved["config_hash"]}:
        raise ReleaseError(f"{curated} holds rows decided under other settings than {config_path}; rerun the "
                           f"curate command to finish the run before releasing")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    salt = load_salt(Path(salt_file) if salt_file else curated.with_suffix(".release-salt"))
    deid = shared_deidentifier(config["privacy"]["deid"])

    withheld: Counter = Counter()
    released, decisions, phases_withheld = [], [], 0
    kept = frame[frame["decision"] == "keep"]
    sources = {}
    for row in tqdm(kept.to_dict(orient="records"), desc="release", unit="clip", disable=not progress):
        instruction = str(row.get("instruction") or "").strip()
        reason = None
        if not instruction:
            reason = "release: no instruction"
        elif deid.release_text(instruction) is None:
            reason = "release: PHI found in the instruction on re-screening"
        elif not Path(str(row["video"])).is_file():
            reason = "release: video file missing"
        if reason is None:
            source = str(Path(str(row["video"])).resolve())
            if source not in sources:
                source_id = salted_hash(salt, source)
                target = out / "videos" / f"{source_id}{Path(source).suffix.lower() or '.mp4'}"
                try:
                    strip_video(Path(source), target)
                    sources[source] = (source_id, target)
                except RuntimeError:
                    sources[source] = None
            if sources[source] is None:
                reason = "release: the video stream could not be copied"
        if reason is not None:
            withheld[reason] += 1
            decisions.append((row, "withheld", "release", reason))
            continue
        source_id, target = sources[source]
        phase = row.get("phase") if isinstance(row.get("phase"), str) and row.get("phase").strip() else None
        if phase is not None and deid.release_text(phase) is None:
            phase, phases_withheld = None, phases_withheld + 1  # the clip is released, unlabelled
        record = {"clip_id": salted_hash(salt, "clip|" + str(row["clip_id"])),
                  "video": target.relative_to(out).as_posix(), "instruction": instruction, "caption": instruction,
                  "phase": phase, "start_s": _window(row, "start_s"), "end_s": _window(row, "end_s"),
                  "source_id": source_id}
        record.update({name: row.get(column) for name, column in PROBE_COLUMNS.items()})
        released.append(record)
        decisions.append((row, "released", None, None))
    for row in frame[frame["decision"] != "keep"].to_dict(orient="records"):
        decisions.append((row, str(row["decision"]), row.get("drop_stage"), public_reason(row.get("reason"), deid)))

    manifest = pd.DataFrame(released, columns=list(RELEASE_COLUMNS))
    for column in ("start_s", "end_s", "fps", "duration_s"):
        manifest[column] = pd.to_numeric(manifest[column], errors="coerce").astype(float)
    for column in ("width", "height", "frames"):
        manifest[column] = pd.to_numeric(manifest[column], errors="coerce").astype("Int64")
    manifest["phase"] = manifest["phase"].astype(object).where(manifest["phase"].notna(), None)
    manifest.to_parquet(out / "manifest.parquet", index=False)
    decision_frame = pd.DataFrame([{
        "clip_id": salted_hash(salt, "clip|" + str(row["clip_id"])),
        "source_id": salted_hash(salt, str(Path(str(row["video"])).resolve())) if row.get("video") else None,
        "decision": decision, "stage": stage, "reason": reason} for row, decision, stage, reason in decisions])
    decision_frame.to_parquet(out / "decisions.parquet", index=False)

    summary = summarize(frame)
    card = {
        "format": RELEASE_FORMAT,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config_hash": saved["config_hash"],
        "counts": {"curated_clips": int(len(frame)), "kept_by_curation": int(len(kept)),
                   "released_clips": int(len(manifest)), "released_sources": int(manifest["source_id"].nunique()),
                   "withheld_at_release": int(sum(withheld.values())), "dropped": summary["dropped"],
                   "errors": summary["errors"]},
        "stages": summary["stages"],
        "reasons": dict(Counter(str(r).split(":", 1)[0] for _, d, _, r in decisions if r is not None)),
        "reasons_detail": dict(Counter(r for _, d, _, r in decisions if r is not None).most_common()),
        "phases": {str(k): int(v) for k, v in manifest["phase"].fillna("unlabelled").value_counts().items()},
        "filters": _settings(config),
        "models": _models(config, frame),
        "deidentification": {
            "method": deid.method,
            "redactions_in_narrations": _redaction_totals(frame, ("narration_redactions",)),
            "redactions_in_instructions": _redaction_totals(frame, ("deid_redactions",)),
            "narration": "raw narration is never released; the refiner was given only the narration sentences "
                         "the text screen passed (the screen's measured recall is below, and it is not 100%)",
            "text_fields": "instruction, caption, phase and drop reasons are screened again at release; a field "
                           "with any finding is withheld whole (an instruction with its clip, a phase as unlabelled)",
            "phases_withheld": phases_withheld,
            "measured": _measured_screen(),
            "limitations": TEXT_SCREEN_LIMITS,
            "ids": "clip_id and source_id are sha256(private salt + id or absolute path), 16 hex digits; the "
                   "salt stays with the curator",
            "videos": "video stream copied with ffmpeg; audio, subtitles, data streams, container metadata and "
                      "chapters removed; data inside the video bitstream (such as H.264 SEI user data) is not "
                      "removed by a stream copy",
            "columns": list(RELEASE_COLUMNS)},
    }
    (out / "card.json").write_text(json.dumps(card, indent=2, default=str), encoding="utf-8")
    (out / "README.md").write_text(card_markdown(card), encoding="utf-8")
    return card


TEXT_SCREEN_LIMITS = [
    "A name made only of common English words passes when it is written in lower case without a title "
    "(\"rose baker\") or stands first in a sentence (\"Grace had her second eye done\").",
    "A lower-case place or event that is also a frequent English word or phrase passes (\"london\", "
    "\"boxing day\": the held-out corpus missed the latter).",
    "Indirect identifiers (a relative, an occupation, a rare history) are not recognised unless the optional "
    "local language-model check is on.",
    "The dictionary is English: words of other languages and misspelt surgical words are removed as unknown, "
    "which costs clean sentences, not privacy.",
    "Recall was measured on synthetic narrations the team wrote; real narrations may carry forms the corpus "
    "lacks, and the held-out part is small, hence its wide 95% interval.",
    "Text and faces inside video frames are not part of this text screen (see the video screening).",
]


def _measured_screen() -> dict | None:
    """The text screen's figures on the team's corpus (bench/bench_deid.py --write; the tests keep them true)."""
    from .deid import MEASURED_PATH

    return json.loads(MEASURED_PATH.read_text(encoding="utf-8")) if MEASURED_PATH.is_file() else None


def _share(caught: int, items: int) -> str:
    return f"{caught} of {items} ({100 * caught / items:.1f}%)"


def measured_text(measured: dict | None) -> str:
    """The measured recall in words for the card."""
    if not measured:
        return "The text screen's recall has not been measured for this version."
    total, held = measured["total"], measured["heldout"]
    low, high = (100 * x for x in held["recall_ci95"])
    return (f"Measured on {total['phi_narrations']} synthetic narrations with personal information and "
            f"{total['clean_narrations']} without, written by the Ophora team: the screen removed "
            f"{_share(total['phi_caught'], total['phi_items'])} pieces of personal information; on the held-out "
            f"part, written after the screen was finished, {_share(held['phi_caught'], held['phi_items'])} "
            f"(95% interval {low:.1f}% to {high:.1f}%). Narrations without personal information passed unchanged: "
            f"{_share(total['clean_kept'], total['clean_narrations'])} (held-out part "
            f"{_share(held['clean_kept'], held['clean_narrations'])}).")


def _table(mapping: dict, key: str, value: str) -> list[str]:
    lines = [f"| {key} | {value} |", "| --- | ---: |"]
    return lines + [f"| {k} | {v} |" for k, v in mapping.items()] + [""]


def card_markdown(card: dict) -> str:
    """The dataset card as Markdown (what a reader of the release sees first)."""
    counts = card["counts"]
    lines = ["# Ophora curated surgical video data set", "",
             f"Format `{card['format']}`, created {card['created_utc']}, curation settings `{card['config_hash']}`.", "",
             f"{counts['released_clips']} clips from {counts['released_sources']} source videos released out of "
             f"{counts['curated_clips']} curated ({counts['kept_by_curation']} kept by the curation, "
             f"{counts['withheld_at_release']} withheld at release, {counts['dropped']} dropped, {counts['errors']} "
             f"errors).", "", "## Files", "",
             "`manifest.parquet` (columns: " + ", ".join(card["deidentification"]["columns"]) + "), `videos/`, "
             "`decisions.parquet` (every curated clip's decision and reason), `card.json` (this card as data).", "",
             "## Stages", "", "| stage | reached | passed | dropped | errors |", "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {name} | {s['reached']} | {s['passed']} | {s['dropped']} | {s['errors']} |"
              for name, s in card["stages"].items()]
    lines += ["", "## Reasons", ""] + _table(card["reasons_detail"], "reason", "clips")
    lines += ["## Phases", ""] + _table(card["phases"], "phase", "clips")
    deid = card["deidentification"]
    lines += ["## De-identification", "", deid["method"] + ".", "", measured_text(deid.get("measured")), "",
              f"- narration: {deid['narration']}", f"- text fields: {deid['text_fields']} ("
              f"{deid['phases_withheld']} phase labels withheld)", f"- ids: {deid['ids']}",
              f"- videos: {deid['videos']}", "", "### What the text screen cannot see", ""]
    lines += [f"- {limit}" for limit in deid["limitations"]]
    lines += ["",
              "PHI items found per kind in narrations (their sentences removed): " + json.dumps(deid["redactions_in_narrations"]),
              "", "PHI items found per kind in refined instructions (their sentences removed): " + json.dumps(deid["redactions_in_instructions"]),
              "", "## Models and endpoints", "", "```json", json.dumps(card["models"], indent=2), "```", "",
              "## Filters and thresholds", "", "```json", json.dumps(card["filters"], indent=2), "```", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ophora curate release",
        description="Write a releasable data set from a curated manifest: the training manifest (readable by "
                    "`python -m ophora train encode`), the videos without audio or metadata, hashed ids, and a "
                    "dataset card. Raw narration and working columns are never copied.")
    parser.add_argument("curated", help="the curated manifest written by `python -m ophora curate` (OUT.parquet)")
    parser.add_argument("--out", required=True, help="release folder")
    parser.add_argument("--salt-file", default=None,
                        help="private salt for the hashed ids (default CURATED.release-salt, created if missing)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        card = release(args.curated, args.out, args.salt_file, progress=not args.quiet)
    except ReleaseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    counts = card["counts"]
    print(f"released {counts['released_clips']} clips from {counts['released_sources']} videos "
          f"({counts['withheld_at_release']} withheld at release) into {args.out}")
    for reason, count in card["reasons_detail"].items():
        print(f"  {count:>6}  {reason}")
    print("PHI items removed per kind: narrations " + json.dumps(card["deidentification"]["redactions_in_narrations"])
          + ", instructions " + json.dumps(card["deidentification"]["redactions_in_instructions"]))
    return 0
