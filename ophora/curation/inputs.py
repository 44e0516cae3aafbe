"""Read what to curate: a manifest (CSV, JSONL or parquet with ``video`` and ``caption``) or a folder of videos.

Why tolerant here and strict later: a missing caption or a missing file is a fact about one clip, recorded
in that clip's row with its reason; only a manifest that cannot be read at all (no ``video`` column) stops
the run. Optional ``start``/``end`` (seconds) cut clips out of longer narrated videos; optional ``clip_id``
keeps the researcher's own ids, otherwise a stable id is derived from path and bounds so reruns match up.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")


class InputError(ValueError):
    """The input cannot be read as a manifest; the message says what to fix."""


class DuplicateRowsWarning(UserWarning):
    """Rows of the manifest describe the same clip; only the first is curated."""


def _phase(value) -> str | None:
    text = _clean_text(value)
    if text is None:
        return None
    from ophora.vocabulary import find_phase

    found = find_phase(text)
    return found.id if found is not None else text


@dataclass(frozen=True)
class ClipTask:
    clip_id: str
    video: str
    caption: str | None
    start_s: float | None = None
    end_s: float | None = None
    phase: str | None = None  # surgical phase id (assets/phases.yaml) when the manifest gives one

    def to_dict(self) -> dict:
        return asdict(self)


def _clean_text(value) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _clean_float(value) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def is_url(text: str) -> bool:
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text) is not None


def stable_clip_id(video: str, start_s: float | None, end_s: float | None) -> str:
    key = f"{video}|{start_s if start_s is not None else ''}|{end_s if end_s is not None else ''}"
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def read_csv_table(path: Path) -> pd.DataFrame:
    """A CSV as spreadsheets save it: UTF-8 with or without a byte-order mark, comma, semicolon or tab separated.

    Anything else (another encoding, a row with too many fields) is an ``InputError`` naming the file and the
    data row (numbered from 1 under the header, as a spreadsheet shows it) and saying what to do."""
    import csv
    import io

    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # the BOM Excel writes is dropped, not read into the first column name
    except UnicodeDecodeError as error:
        row = raw[:error.start].count(b"\n")
        raise InputError(f"{path}: row {row}: byte 0x{raw[error.start]:02x} is not UTF-8 text (the file is "
                         f"probably Latin-1 or Windows-1252); save it as UTF-8 (Excel: 'CSV UTF-8')") from None
    header = text.split("\n", 1)[0]
    try:
        separator = csv.Sniffer().sniff(header, delimiters=",;\t").delimiter
    except csv.Error:
        separator = ","
    rows = csv.reader(io.StringIO(text), delimiter=separator)
    width = len(next(rows, []))
    if not width:
        raise InputError(f"{path}: the file is empty; give a header line (video,caption) and one row per clip")
    for number, fields in enumerate(rows, start=1):
        if len(fields) > width:
            raise InputError(f"{path}: row {number} has {len(fields)} fields, the header {width}; put values "
                             f"that contain '{separator}' in double quotes")
    try:
        return pd.read_csv(io.StringIO(text), sep=separator, dtype={"clip_id": str})
    except pd.errors.ParserError as error:  # e.g. a quote opened and never closed
        raise InputError(f"{path}: {str(error).strip()}; check that every double quote is closed") from None


def read_manifest_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix == ".csv":
        return read_csv_table(path)
    if suffix in (".jsonl", ".ndjson"):
        return pd.read_json(path, lines=True)
    raise InputError(f"{path}: unknown manifest format {suffix!r}; use .csv, .jsonl or .parquet, or a folder")


def tasks_from_frame(frame: pd.DataFrame, base_dir: Path, source: str = "manifest") -> list[ClipTask]:
    if "video" not in frame.columns:
        raise InputError(f"{source}: the header needs a 'video' column (and 'caption'); found {list(frame.columns)}")
    tasks: list[ClipTask] = []
    first_row: dict[str, int] = {}
    duplicates: dict[str, list[int]] = {}
    for number, row in enumerate(frame.to_dict(orient="records")):
        video = _clean_text(row.get("video")) or ""
        if video and not is_url(video) and not Path(video).is_absolute():
            video = os.path.abspath(base_dir / video)
        start, end = _clean_float(row.get("start")), _clean_float(row.get("end"))
        clip_id = _clean_text(row.get("clip_id")) or stable_clip_id(video, start, end)
        if clip_id in first_row:
            duplicates.setdefault(clip_id, [first_row[clip_id]]).append(number)
            continue
        first_row[clip_id] = number
        tasks.append(ClipTask(clip_id, video, _clean_text(row.get("caption")), start, end, _phase(row.get("phase"))))
    from .fetch import unsupported_reason

    refused = [(n, t.video, unsupported_reason(t.video)) for n, t in enumerate(tasks) if is_url(t.video)]
    refused = [item for item in refused if item[2] is not None]
    if refused:
        number, url, why = refused[0]
        raise InputError(f"{source}: {len(refused)} video URL(s) cannot be fetched here, e.g. {url}: {why}. "
                         f"Install the package, or download the files and list local paths. "
                         f"(http and https URLs are downloaded to a resumable cache beside the output.)")
    if duplicates:
        # data rows are numbered from 1, as a spreadsheet shows them under the header
        listed = "; ".join(f"clip {cid!r}: rows {', '.join(str(n + 1) for n in rows)}"
                           for cid, rows in list(duplicates.items())[:10])
        more = f" (and {len(duplicates) - 10} more clips)" if len(duplicates) > 10 else ""
        warnings.warn(f"{source}: {sum(len(r) - 1 for r in duplicates.values())} duplicate row(s) collapsed, the "
                      f"first of each kept: {listed}{more}", DuplicateRowsWarning, stacklevel=2)
    return tasks


def tasks_from_folder(folder: Path) -> list[ClipTask]:
    """Every video under ``folder``; a caption comes from a ``.txt`` beside the video with the same stem."""
    videos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if not videos:
        raise InputError(f"{folder}: no video files ({', '.join(VIDEO_SUFFIXES)}) found")
    rows = []
    for video in videos:
        caption_file = video.with_suffix(".txt")
        caption = caption_file.read_text(encoding="utf-8") if caption_file.is_file() else None
        rows.append({"video": str(video.absolute()), "caption": caption})
    return tasks_from_frame(pd.DataFrame(rows), folder, source=str(folder))


def read_tasks(path: str | Path) -> list[ClipTask]:
    path = Path(path)
    if path.is_dir():
        return tasks_from_folder(path)
    if not path.is_file():
        raise InputError(f"input {path} does not exist; give a manifest file (.csv/.jsonl/.parquet) or a folder")
    return tasks_from_frame(read_manifest_table(path), path.parent.resolve(), source=str(path))
