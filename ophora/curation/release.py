"""`python -m ophora curate release CURATED.parquet --out DIR`: a curated manifest -> a data set others may get.

Why a separate step: the curated manifest is a working file (measurements, local paths, drop reasons with
paths in them, the researcher's own clip ids); a release must hold only what training needs and nothing that
identifies a patient. So the release is built from an allow-list of columns, never by deleting known-bad
ones; every kept instruction is screened for PHI again (a manifest from an older run or edited by hand is not
trusted); each released video is the clip's screened training window, cut and re-encoded (no audio: the
narration is spoken there; no metadata, chapters, subtitles, data streams or SEI user data); source and clip
ids are salted hashes; and a dataset card says how it was made. Releasing again into the same folder
replaces the earlier release whole (written beside it, then swapped).

Layout of DIR (stable: `python -m ophora train encode --manifest DIR/manifest.parquet` reads it unchanged)::

    manifest.parquet    one row per released clip: clip_id, video (videos/<clip_id>.mp4, relative),
                        instruction, caption (= instruction), phase, start_s, end_s, source_id, width,
                        height, fps, frames, duration_s
    videos/             one file per released clip (videos/<clip_id>.mp4): exactly its training window, every
                        frame of which was screened, re-encoded without audio, metadata or SEI user data
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


class ReleaseError(ValueError):
    """The curated manifest cannot be released; the message says what to do."""


def salted_hash(salt: bytes, value: str, length: int = 16) -> str:
    return hashlib.sha256(salt + value.encode("utf-8")).hexdigest()[:length]


def released_id(salt: bytes, clip_id) -> str:
    """The released clip id of a curated clip id (its video is ``videos/<id>.mp4``)."""
    return salted_hash(salt, "clip|" + str(clip_id))


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
    if not re.fullmatch(r"[a-z][a-z _-]*", kind):  # our stage names only: anything else may be PHI
        kind = "reason"
    if "unexpected" in text or "worker failed" in text:  # an exception's message may quote anything
        return f"{kind}: unexpected error (details withheld)"
    # our own reason texts name stages and counts; a name, date, id... in what is left withholds it
    if deid.release_text(text.replace("<path>", "path").replace("<quoted>", "quoted")) is None:
        return f"{kind}: <reason withheld: it quotes text>"
    return text


def cut_window(source: Path, target: Path, first_frame: int, end_frame: int, fps: float,
               cover: list[tuple[int, int, int, int, int, int]] = ()) -> int:
    """Re-encode exactly frames ``first_frame .. end_frame - 1`` of ``source`` (the screened training window).

    Why re-encode, never copy: a stream copy carries the whole source (frames of neighbouring windows that were
    never screened, or dropped) and its bitstream user data (H.264 SEI, e.g. a patient id written by the
    recorder). The window is selected by decoded frame number, as the curation's decoding pass counts frames;
    the output has no audio, subtitles, data streams, metadata, chapters or SEI (``filter_units`` removes NAL
    type 6, the encoder's own included), and is shown upright (ffmpeg applies the rotation flag).
    ``cover``: (first, last, x, y, w, h) boxes filled flat black by ffmpeg's ``drawbox`` on window frames
    first..last (numbered from 0 at ``first_frame``), in the same encoding pass (see ``blur_plan``).
    Returns the frames written; raises ``RuntimeError`` when ffmpeg fails or writes another count."""
    import imageio_ffmpeg

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.stem + ".partial" + target.suffix)
    wanted = end_frame - first_frame
    boxes = "".join(f",drawbox=x={x}:y={y}:w={w}:h={h}:color=black:t=fill:enable='between(n,{low},{high})'"
                    for low, high, x, y, w, h in cover)
    # the filter graph is read from a file: thousands of boxes would not fit in one command-line argument
    graph = target.with_name(target.stem + ".filters")
    graph.write_text(f"trim=start_frame={first_frame}:end_frame={end_frame},setpts=PTS-STARTPTS{boxes}")
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(source), "-map", "0:v:0",
               "-/vf", str(graph),
               "-frames:v", str(wanted), "-r", f"{fps:.6g}", "-c:v", "libx264", "-preset", "veryfast",
               "-crf", "16", "-pix_fmt", "yuv420p", "-bsf:v", "filter_units=remove_types=6",
               "-an", "-sn", "-dn", "-map_metadata", "-1", "-map_chapters", "-1", "-fflags", "+bitexact",
               "-flags:v", "+bitexact", "-movflags", "+faststart", str(partial)]
    try:
        result = subprocess.run(command, capture_output=True, text=True)
    finally:
        graph.unlink(missing_ok=True)
    if result.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"ffmpeg could not cut the window: {result.stderr.strip()[-300:]}")
    written = imageio_ffmpeg.count_frames_and_secs(str(partial))[0]
    if written != wanted:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"the cut window has {written} frames, not {wanted}")
    partial.replace(target)
    return written


SCREENS = {"face": "faces", "text": "on-screen text"}
FRAME_MEASURED_PATH = Path(__file__).with_name("frame_screen_measured.json")  # the benches below, --write


def frame_screening(mode: str = "drop") -> dict:
    """What the card says about the video screens: the method, the figures measured on corpora the screens were
    not tuned on (faces: bench/bench_face_screen.py --write, text: bench/bench_text_screen.py --write; the face
    figures are re-measured by tests/curation/test_privacy.py), and their limits."""
    measured = json.loads(FRAME_MEASURED_PATH.read_text(encoding="utf-8")) if FRAME_MEASURED_PATH.is_file() else {}
    face, text = measured.get("face"), measured.get("text")
    figures = []
    if face:
        sizes = ", ".join(f"{found} of {total} at {height} of the frame height"
                          for height, (found, total) in face["found"].items())
        figures.append(f"faces: pasted on real surgical frames (faces never used to tune the screen, "
                       f"JPEG-compressed), the screen finds {sizes}; it flagged {face['clean_confirmed']} of "
                       f"{face['clean_frames']} frames of real surgery without a face")
    else:
        figures.append("faces: the face screen's recall has not been measured for this version")
    if text:
        figures.append(f"burned-in text (one line of identifying text drawn at random on real surgical frames, "
                       f"corpora not used to tune the screen): of the frames where Tesseract reading every whole "
                       f"frame finds a word, the screen flags {text['both']} of {text['ocr_frames']}; it flags "
                       f"{text['cascade_frames']} of {text['frames']} frames with a line of identifying text")
    else:
        figures.append("burned-in text: the text screen's recall has not been measured for this version")
    return {
        "method": "every frame of every released window screened on this machine: a face detector (OpenCV's LBP "
                  "face cascade on the frame shrunk to 192 px, confirmed by a Haar cascade at full resolution) and "
                  "a text-line detector (several letters side by side) whose regions are read by Tesseract OCR; "
                  + ("a window with any hit is not released" if mode == "drop" else
                     "what they find is covered with a black box and the written video is screened again"),
        "measured": "; ".join(figures),
        "limits": "not every burned-in line is read: light letters straight on bright tissue without a band, dark "
                  "letters without a band, thin or small fonts and text shorter than about five letters can pass; "
                  "faces smaller than about a fifth of the frame height, turned away, in profile or partly covered "
                  "(a surgical mask) can pass",
    }


def unscreened(row: dict) -> str | None:
    """Why the row's training window cannot be released, if it cannot: every frame of it must have been
    screened for faces and for burned-in text (a manifest from an older run, or made with a screen off, fails)."""
    first, end = row.get("window_first_frame"), row.get("window_end_frame")
    if first is None or end is None or pd.isna(first) or pd.isna(end):
        return "release: the training window's frames are not recorded (rerun the curation)"
    missing = []
    for screen, words in SCREENS.items():
        low, high = row.get(f"{screen}_first_frame"), row.get(f"{screen}_end_frame")
        if low is None or high is None or pd.isna(low) or pd.isna(high) or low > first or high < end:
            missing.append(words)
    if missing:
        return f"release: not every frame was screened for {' and '.join(missing)}"
    return None


BLUR_PAD = 0.1  # a recorded box grows by this fraction of its shorter side (a text line's height) on every side
BLUR_FRAMES = 2  # face boxes are covered from this many frames before the first face found to as many after it


class BlurPlanError(ValueError):
    """A row's recorded blur regions cannot be trusted; the message is the row's public withholding reason."""


def blur_plan(row: dict, mode: str) -> list[tuple[int, int, int, int, int, int]]:
    """The boxes the release covers in a kept row's window, for ``cut_window(cover=...)``: each recorded hit box
    (``blur_regions``, written by the curation with ``privacy.frame_hits: blur``) padded by ``BLUR_PAD`` (a
    text box also by its height left and right); a text box on every frame of the window, every face box from
    ``BLUR_FRAMES`` frames before the first frame with a face to as many after the last. Why so wide: a screen
    finds a face or a line on most of the frames that show it, not all (bench/bench_blur.py), and burned-in
    text stays where the recorder put it. Empty: nothing to cover (the plain cut).

    Fails closed (``BlurPlanError``): regions that cannot be read, regions under settings that drop hits, or
    regions that do not account for every frame the screens flagged (a hand-edited or partial row)."""
    raw = row.get("blur_regions")
    if raw is None or (isinstance(raw, float) and pd.isna(raw)):
        regions = []
    else:
        try:
            regions = [(int(r["frame"]), str(r["kind"]), tuple(int(v) for v in r["box"])) for r in json.loads(raw)]
        except (TypeError, ValueError, KeyError):
            raise BlurPlanError("release: the recorded blur regions cannot be read (rerun the curation)") from None
        if any(kind not in SCREENS or len(box) != 4 or min(box) < 0 or box[2] < 1 or box[3] < 1
               for _, kind, box in regions):
            raise BlurPlanError("release: the recorded blur regions cannot be read (rerun the curation)")
    if regions and mode != "blur":
        raise BlurPlanError("release: blur regions recorded under settings that drop hits (rerun the curation)")
    if mode == "blur":
        for kind in SCREENS:
            flagged = row.get(f"{kind}_{kind}_frames")
            flagged = 0 if flagged is None or pd.isna(flagged) else int(flagged)
            if flagged != len({frame for frame, found, _ in regions if found == kind}):
                raise BlurPlanError(f"release: the blur regions do not cover every frame where the screens found "
                                    f"{SCREENS[kind]} (rerun the curation)")
    first, end = int(row["window_first_frame"]), int(row["window_end_frame"])
    faces = [frame for frame, kind, _ in regions if kind == "face"]
    spans = {"text": (first, end - 1),
             "face": (min(faces) - BLUR_FRAMES, max(faces) + BLUR_FRAMES) if faces else (0, -1)}
    cover = []
    for kind, (start, stop) in spans.items():
        low, high = max(first, start) - first, min(end - 1, stop) - first
        if low > high:
            continue  # no text, or faces found only outside the released window
        boxes = []
        for _, found, (x, y, w, h) in regions:
            if found == kind:
                pad = max(2, round(BLUR_PAD * min(w, h)))
                # a line goes on sideways: a short word after a wider gap (the "3" of "Moorfields OR 3") is not
                # part of the region the text screen found, so a text box also grows by its height left and right
                side = max(pad, h) if kind == "text" else pad
                boxes.append((max(0, x - side), max(0, y - pad), x + w + side, y + h + pad))
        cover += [(low, high, x0, y0, x1 - x0, y1 - y0) for x0, y0, x1, y1 in _merged(boxes)]
    return sorted(cover)


def _merged(boxes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Overlapping boxes (x0, y0, x1, y1) replaced by the box around them, until none overlap. Why: the boxes of
    one overlay found on many frames differ by a few pixels; drawn one over another they leave a staircase of
    edges that the text screen reads as lines (and spends OCR on), where one rectangle leaves four edges."""
    boxes = list(boxes)
    merged = True
    while merged:
        merged = False
        for i, a in enumerate(boxes):
            for j in range(i + 1, len(boxes)):
                b = boxes[j]
                if a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]:
                    boxes[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return boxes


def rescreen(video: Path, screens: tuple, frames: int) -> str | None:
    """Screen every frame of a written (blurred) video with the curation's own face and text screens; the reason
    to withhold it when any frame still shows a face or text, or when it has another frame count."""
    from .inputs import ClipTask
    from .privacy import decode_window

    task = ClipTask(clip_id=video.stem, video=str(video), caption=None)
    decoded = decode_window(task)
    if len(decoded) != frames:
        return "release: the blurred video could not be screened again (it does not decode whole)"
    face, text = screens
    if face(task, decoded).measurements.get("face_frames", 1):
        return "release: a blurred region still shows a face"
    if text(task, decoded).measurements.get("text_frames", 1):
        return "release: a blurred region still shows on-screen text"
    return None


def rescreens(config: dict) -> tuple | str:
    """The face and text screens the release screens blurred videos with (the run's own settings), or the
    reason every blurred clip is withheld when they cannot run here (fail closed: nothing unverified goes out)."""
    from .privacy import FaceScreen, TextScreen

    privacy = config["privacy"]
    if not (privacy["face_prescreen"]["enabled"] and privacy["text_prescreen"]["enabled"]):
        return "release: a blurred clip is released only when both frame screens are on"
    try:
        return FaceScreen(privacy["face_prescreen"]), TextScreen(privacy["text_prescreen"])
    except (FileNotFoundError, ValueError):  # no tesseract, an unreadable cascade: said once by the card
        return "release: the blurred clips cannot be screened again on this machine (install the project's " \
               "system packages: scripts/install_system_deps.sh)"


def screen_released_text(record: dict, deid) -> str | None:
    """The one place every free-text field of a released row is screened for PHI before it is written.

    Returns the reason to withhold the row, or None. ``instruction`` (and ``caption``, the same text) must pass
    the text screen (``Deidentifier.release_text``); ``phase`` is released only when it passes too (else the
    clip is released unlabelled). Ids and file names are salted hashes and need no screen."""
    if not record["instruction"]:
        return "release: no instruction"
    if deid.release_text(record["instruction"]) is None:
        return "release: PHI found in the instruction on re-screening"
    phase = record.get("phase")
    phase = phase.strip() if isinstance(phase, str) and phase.strip() else None
    record["phase"] = phase if phase is not None and deid.release_text(phase) is not None else None
    return None


def replace_folder(built: Path, out: Path) -> None:
    """Put the release written in ``built`` at ``out``: the earlier release (if any) is moved aside first and
    deleted after, so ``out`` holds one whole release at every moment a reader could look, never a mix."""
    import shutil

    if out.exists():
        old = out.with_name(f".{out.name}.old-{secrets.token_hex(4)}")
        out.replace(old)
        try:
            built.replace(out)
        except BaseException:
            old.replace(out)  # the earlier release stays whole where it was
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        built.replace(out)


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
            "frame_hits": privacy.get("frame_hits", "drop"), "deid": privacy["deid"],
            "stop_at_first_drop": config["run"]["stop_at_first_drop"]}


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
        try:  # the curation ran the screen; the release machine may lack the package (the card still says what ran)
            import tesserocr

            engine = tesserocr.tesseract_version().splitlines()[0].title()
        except ImportError:
            engine = "Tesseract"
        models["text_prescreen"] = f"{engine} OCR in process (tesserocr), English model (tesseract-ocr-eng)"
    return models


def release(curated: str | Path, out: str | Path, salt_file: str | Path | None = None,
            progress: bool = True) -> dict:
    """Write the release of ``curated`` into ``out`` (replacing an earlier release there) and return the card."""
    from .config import ConfigError
    from .deid import shared_deidentifier
    from .pipeline import output_paths
    from .privacy import frame_hits

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
    try:
        frame_hits(config)
    except ConfigError as error:
        raise ReleaseError(f"{config_path}: {error}") from None
    if set(frame["config_hash"].dropna()) - {saved["config_hash"]}:
        raise ReleaseError(f"{curated} holds rows decided under other settings than {config_path}; rerun the "
                           f"curate command to finish the run before releasing")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReleaseError(f"{out} is a file; give a folder for the release (empty, new, or an earlier release)")
    if out.exists() and any(out.iterdir()) and not _is_release(out):
        raise ReleaseError(f"{out} holds files that are not an earlier release; give an empty or new folder "
                           f"(an earlier release there is replaced as a whole)")
    salt = load_salt(Path(salt_file) if salt_file else curated.with_suffix(".release-salt"))
    deid = shared_deidentifier(config["privacy"]["deid"])
    out.parent.mkdir(parents=True, exist_ok=True)
    built = out.with_name(f".{out.name}.partial-{secrets.token_hex(4)}")  # beside out: the swap is a rename
    built.mkdir()
    try:
        card = _write_release(frame, config, saved["config_hash"], built, salt, deid, progress)
        replace_folder(built, out)
    except BaseException:
        import shutil

        shutil.rmtree(built, ignore_errors=True)
        raise
    return card


def _is_release(folder: Path) -> bool:
    try:
        return json.loads((folder / "card.json").read_text(encoding="utf-8")).get("format") == RELEASE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _write_release(frame: pd.DataFrame, config: dict, run_hash: str, out: Path, salt: bytes, deid,
                   progress: bool) -> dict:
    """Write every file of the release into ``out`` (a fresh folder) and return the card."""
    from tqdm import tqdm

    from .privacy import frame_hits
    from .report import summarize

    withheld: Counter = Counter()
    released, decisions, phases_withheld = [], [], 0
    mode = frame_hits(config)
    blurred, unblurrable, screens = 0, 0, None  # screens: built on the first blurred clip
    kept = frame[frame["decision"] == "keep"]
    for row in tqdm(kept.to_dict(orient="records"), desc="release", unit="clip", disable=not progress):
        clip_id = released_id(salt, row["clip_id"])
        source = Path(str(row["video"]))
        record = {"clip_id": clip_id, "video": f"videos/{clip_id}.mp4",
                  "instruction": str(row.get("instruction") or "").strip(), "phase": row.get("phase"),
                  "start_s": None, "end_s": None, "source_id": salted_hash(salt, str(source.resolve()))}
        record["caption"] = record["instruction"]
        reason = screen_released_text(record, deid) or unscreened(row)
        if reason is None and not source.is_file():
            reason = "release: video file missing"
        cover = []
        if reason is None:
            try:
                cover = blur_plan(row, mode)
            except BlurPlanError as error:
                reason = str(error)
        if reason is None and cover:
            screens = rescreens(config) if screens is None else screens
            reason = screens if isinstance(screens, str) else None
        if reason is None:
            first, end = int(row["window_first_frame"]), int(row["window_end_frame"])
            try:
                record["frames"] = cut_window(source, out / record["video"], first, end, float(row["probe_fps"]),
                                              cover)
            except RuntimeError:
                reason = "release: the training window could not be cut from the video"
        if reason is None and cover:  # fail closed: the written file is screened again, every frame
            reason = rescreen(out / record["video"], screens, end - first)
            if reason is not None:
                (out / record["video"]).unlink()
                unblurrable += 1
            else:
                blurred += 1
        if reason is not None:
            withheld[reason] += 1
            decisions.append((row, "withheld", "release", reason))
            continue
        fps = float(row["probe_fps"])
        record.update(width=row.get("probe_width"), height=row.get("probe_height"), fps=fps,
                      duration_s=record["frames"] / fps)
        if record["phase"] is None and isinstance(row.get("phase"), str) and row["phase"].strip():
            phases_withheld += 1  # the clip is released, unlabelled
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
        "clip_id": released_id(salt, row["clip_id"]),
        "source_id": salted_hash(salt, str(Path(str(row["video"])).resolve())) if row.get("video") else None,
        "decision": decision, "stage": stage, "reason": reason} for row, decision, stage, reason in decisions])
    decision_frame.to_parquet(out / "decisions.parquet", index=False)

    summary = summarize(frame)
    card = {
        "format": RELEASE_FORMAT,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config_hash": run_hash,
        "counts": {"curated_clips": int(len(frame)), "kept_by_curation": int(len(kept)),
                   "released_clips": int(len(manifest)), "released_sources": int(manifest["source_id"].nunique()),
                   "withheld_at_release": int(sum(withheld.values())), "released_blurred": blurred,
                   "withheld_after_blurring": unblurrable, "dropped": summary["dropped"],
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
            "videos": "each video is its clip's training window only (every frame of it screened for faces and "
                      "on-screen text), cut and re-encoded with ffmpeg (libx264); audio, subtitles, data streams, "
                      "metadata, chapters and H.264 SEI user data removed",
            "columns": list(RELEASE_COLUMNS)},
        "frame_screening": frame_screening(mode),
        "frame_hits": frame_hits_text(mode, blurred, unblurrable),
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


def frame_hits_text(mode: str, blurred: int, unblurrable: int) -> dict:
    """What the card says a face or text hit did to its clip, with the counts and the limit, in plain words."""
    if mode != "blur":
        return {"mode": "drop", "text": "A clip with a face or on-screen text found on any frame of its window was "
                                        "dropped whole; no video was blurred."}
    return {"mode": "blur", "released_blurred": blurred, "withheld_after_blurring": unblurrable,
            "text": f"Where the screens found a face or on-screen text, the clip was kept and the region covered "
                    f"with a flat black box, somewhat larger than what was found: text on every frame of the "
                    f"clip, faces from 2 frames before the first frame with a face to 2 after the last. Each "
                    f"blurred video was screened again, every frame, with the same face and text screens before "
                    f"release: {blurred} clips were released blurred, {unblurrable} were withheld because "
                    f"something was still found. Blurring hides only what the screens found: a face or a name "
                    f"they missed is not covered (see the limits above)."}


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
              "", "## Frame screening", "", card["frame_screening"]["method"] + ".", "",
              "Measured: " + card["frame_screening"]["measured"] + ".", "",
              "Limits: " + card["frame_screening"]["limits"] + ".", "",
              "Faces and on-screen text found: " + card["frame_hits"]["text"],
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
    blurred = f", {counts['released_blurred']} of them blurred" if card["frame_hits"]["mode"] == "blur" else ""
    print(f"released {counts['released_clips']} clips from {counts['released_sources']} videos{blurred} "
          f"({counts['withheld_at_release']} withheld at release) into {args.out}")
    for reason, count in card["reasons_detail"].items():
        print(f"  {count:>6}  {reason}")
    print("PHI items removed per kind: narrations " + json.dumps(card["deidentification"]["redactions_in_narrations"])
          + ", instructions " + json.dumps(card["deidentification"]["redactions_in_instructions"]))
    return 0
