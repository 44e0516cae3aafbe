"""Gather the clips to evaluate (folder of MP4s with sidecars, generator manifest, or any CSV) and sample frames.

A generated clip's instruction and phase come from its JSON sidecar (written by ``python -m ophora generate``),
or from the MP4's comment tag when the clip was copied alone. Real clips usually have neither: their phase can
come from a manifest CSV (``path,phase[,prompt]``) or from the folder they sit in (``real/<phase>/clip.mp4``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ophora.generation.video import read_clip, read_provenance

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")
PATH_COLUMNS = ("path", "video", "file", "clip")
PROMPT_COLUMNS = ("prompt", "caption prompt", "caption", "instruction")
PHASE_COLUMNS = ("phase", "label", "phase prompt")


class EvalInputError(ValueError):
    """A clip set cannot be evaluated as given; the message says what to change."""


@dataclass(frozen=True)
class ClipRecord:
    path: Path
    prompt: str | None = None
    phase: str | None = None
    marked: bool = False  # provenance says a visible SYNTHETIC label is burned into the frames

    @property
    def name(self) -> str:
        return self.path.stem


def _normalise_phase(text: str | None) -> str | None:
    """Map any spelling ("Lens-Implantation", "... phase as hydrodissection") to the project's phase id."""
    if not text or not str(text).strip():
        return None
    from ophora.vocabulary import find_phase

    phase = find_phase(str(text))
    return phase.id if phase else str(text).strip()


def _from_folder(folder: Path, phase_from_folder: bool) -> list[ClipRecord]:
    """The app's history keeps ``<id>.mp4`` (with a burned-in SYNTHETIC label) beside ``<id>.study.mp4`` (the
    same frames, unlabelled): we score the unlabelled master, with the labelled clip's provenance."""
    videos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and ".partial" not in p.name)
    masters = {v.with_name(v.name[: -len(".study" + v.suffix)] + v.suffix): v for v in videos
               if v.stem.endswith(".study")}
    labelled_of = {master: labelled for labelled, master in masters.items()}
    records = []
    for video in videos:
        if video in labelled_of and labelled_of[video].is_file():
            continue  # scored through its labelled twin's record
        provenance = read_provenance(video) or {}
        phase = provenance.get("phase")
        if phase is None and phase_from_folder and video.parent != folder:
            phase = video.parent.name
        master = masters.get(video)
        records.append(ClipRecord(master or video, provenance.get("prompt"), _normalise_phase(phase),
                                  marked=master is None and provenance.get("synthetic_mark") is True))
    return records


def _pick(columns: list[str], candidates: tuple[str, ...]) -> str | None:
    lowered = {c.lower().strip(): c for c in columns}
    return next((lowered[c] for c in candidates if c in lowered), None)


def _from_csv(manifest: Path) -> list[ClipRecord]:
    with manifest.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    path_col = _pick(columns, PATH_COLUMNS)
    if path_col is None:
        raise EvalInputError(f"{manifest} needs a column naming each clip file (one of {PATH_COLUMNS}); it has "
                             f"{columns}.")
    prompt_col, phase_col = _pick(columns, PROMPT_COLUMNS), _pick(columns, PHASE_COLUMNS)
    status_col = _pick(columns, ("status",))
    records, missing = [], []
    for number, row in enumerate(rows, start=2):
        if status_col and row.get(status_col) not in (None, "", "done"):
            continue  # the generator's manifest lists failed clips too
        value = (row.get(path_col) or "").strip()
        if not value:
            raise EvalInputError(f"{manifest} row {number}: empty '{path_col}'")
        path = Path(value) if Path(value).is_absolute() else manifest.parent / value
        if not path.is_file():
            missing.append(f"row {number}: {path}")
            continue
        provenance = read_provenance(path) or {}
        prompt = (row.get(prompt_col) or "").strip() if prompt_col else ""
        phase = (row.get(phase_col) or "").strip() if phase_col else ""
        records.append(ClipRecord(path, prompt or provenance.get("prompt"),
                                  _normalise_phase(phase or provenance.get("phase")),
                                  marked=provenance.get("synthetic_mark") is True))
    if missing:
        raise EvalInputError(f"{manifest} names {len(missing)} clip(s) that do not exist: " + "; ".join(missing[:5]))
    return records


def collect_clips(source: str | Path, label: str = "clip set", phase_from_folder: bool = True) -> list[ClipRecord]:
    """Clips from a folder (recursively) or a manifest CSV; raises ``EvalInputError`` on an empty set."""
    source = Path(source)
    if source.is_dir():
        records = _from_folder(source, phase_from_folder)
    elif source.is_file() and source.suffix.lower() == ".csv":
        records = _from_csv(source)
    elif source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES:
        records = _from_folder(source.parent, phase_from_folder)
        records = [r for r in records if r.path == source]
    else:
        raise EvalInputError(f"The {label} {source} is neither a folder of clips nor a manifest CSV.")
    if not records:
        raise EvalInputError(f"The {label} {source} holds no video clips ({', '.join(VIDEO_SUFFIXES)}); point it "
                             f"at the generator's output folder, a folder of real clips, or a CSV with a path "
                             f"column.")
    return records


def evenly_spaced(num_frames: int, count: int) -> np.ndarray:
    """``count`` frame indices spread evenly over the clip by time, first and last included."""
    if count >= num_frames:
        return np.arange(num_frames)
    return np.round(np.linspace(0, num_frames - 1, count)).astype(int)


def load_frames(record: ClipRecord) -> np.ndarray:
    """Decode all frames (F, H, W, 3) uint8; an undecodable or empty clip is an ``EvalInputError``."""
    try:
        frames, _ = read_clip(record.path)
    except Exception as error:  # noqa: BLE001 - ffmpeg reports many different errors
        raise EvalInputError(f"Cannot decode {record.path}: {error}") from error
    if len(frames) == 0:
        raise EvalInputError(f"{record.path} has no frames")
    return frames


def check_frame_sizes(sizes: dict[Path, tuple[int, int]], label: str) -> tuple[int, int]:
    """All clips of one set must share a frame size: mixing sizes mixes resize artefacts into the score."""
    distinct = sorted(set(sizes.values()))
    if len(distinct) > 1:
        examples = {size: next(p.name for p, s in sizes.items() if s == size) for size in distinct}
        listing = ", ".join(f"{w}x{h} (e.g. {name})" for (w, h), name in examples.items())
        raise EvalInputError(f"The {label} mixes frame sizes: {listing}. Re-encode the clips to one size (as the "
                             f"generator writes them) or pass --allow-mixed-sizes to resize each clip as it is.")
    return distinct[0]
