"""Read a curation manifest (parquet, CSV or JSONL) into the clips to encode.

Why defensive: the curation pipeline writes a parquet with a keep/drop flag, refined instructions and, for
clips cut from longer recordings, ``start_s``/``end_s``; researchers also bring their own CSV or JSONL. We
accept ``video`` plus ``instruction`` (or ``caption``), keep only rows flagged kept when a ``keep`` column
exists, read optional ``clip_id``/``start_s``/``end_s``, resolve relative video paths against the manifest's
folder, and stop before any GPU time is spent when paths or instructions are missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ophora.curation.inputs import InputError, read_manifest_table

TEXT_COLUMNS = ("instruction", "caption")
KEEP_COLUMNS = ("keep", "kept")


class ManifestError(ValueError):
    """The manifest cannot be used for training; the message says what to fix."""


@dataclass(frozen=True)
class ClipRecord:
    key: str  # stable id of the clip within this data set (clip_id column, else the row number)
    video: Path
    instruction: str
    start_s: float | None = None  # segment of ``video`` to use; None: from the start / to the end
    end_s: float | None = None


def _kept(frame: pd.DataFrame) -> pd.DataFrame:
    column = next((c for c in KEEP_COLUMNS if c in frame.columns), None)
    if column is None:
        return frame
    values = frame[column]
    if values.dtype == object:
        values = values.astype(str).str.strip().str.lower().isin({"true", "1", "yes", "keep", "kept"})
    return frame[values.astype(bool)]


def _seconds(value) -> float | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    return float(value)


def read_manifest(path: str | Path, check_files: bool = True) -> list[ClipRecord]:
    """Return the kept clips with their instructions; raise ``ManifestError`` for unusable manifests."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"Manifest {path} does not exist. Run `python -m ophora curate ...` first, or give a "
                            f"CSV/JSONL/parquet with columns video and instruction.")
    try:
        frame = read_manifest_table(path)  # the curation's reader: the same formats on both sides
    except InputError as error:
        raise ManifestError(str(error)) from None
    if "video" not in frame.columns:
        raise ManifestError(f"{path} has no 'video' column (columns: {', '.join(map(str, frame.columns))}). "
                            f"Each row needs the path of one clip.")
    text_column = next((c for c in TEXT_COLUMNS if c in frame.columns), None)
    if text_column is None:
        raise ManifestError(f"{path} has no 'instruction' (or 'caption') column: training needs the refined "
                            f"instruction of every clip. Run the curation's narrative-refining step first.")
    frame = _kept(frame)
    if frame.empty:
        raise ManifestError(f"{path} has no kept clips to train on.")
    records: list[ClipRecord] = []
    empty_text, missing = [], []
    for row_number, row in frame.reset_index(drop=True).iterrows():
        text = row[text_column]
        text = "" if text is None or (isinstance(text, float) and pd.isna(text)) else str(text).strip()
        video = Path(str(row["video"])).expanduser()
        if not video.is_absolute():
            video = path.parent / video
        key = str(row["clip_id"]) if "clip_id" in frame.columns else f"{row_number:08d}"
        if not text:
            empty_text.append(str(video))  # (the curation leaves it empty when its refine stage did not run)
        if check_files and not video.is_file():
            missing.append(str(video))
        records.append(ClipRecord(key=key, video=video, instruction=text, start_s=_seconds(row.get("start_s")),
                                  end_s=_seconds(row.get("end_s"))))
    if empty_text:
        raise ManifestError(f"{path}: {len(empty_text)} kept clip(s) have an empty {text_column}, e.g. "
                            f"{empty_text[0]}. Fill the instructions or drop those rows.")
    if missing:
        raise ManifestError(f"{path}: {len(missing)} video file(s) do not exist, e.g. {missing[0]}. "
                            f"Relative paths are read from the manifest's folder.")
    keys = [r.key for r in records]
    if len(set(keys)) != len(keys):
        raise ManifestError(f"{path}: clip_id values are not unique.")
    return records
