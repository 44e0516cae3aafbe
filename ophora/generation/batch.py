"""Batch generation from a prompt CSV in the original Ophora sampler's format, resumable and data-parallel.

The CSV has the columns ``phase prompt`` ("Generate ... with the current surgical phase as <phase>"),
``clip id`` and ``caption prompt`` (the instruction the model sees). Each clip is written as
``<out_dir>/<clip id>.mp4`` plus its ``.json`` sidecar; a rerun skips clips whose files exist with the same
settings, so an interrupted run of hundreds of clips resumes where it stopped. Under ``accelerate launch``
(or ``torchrun``) every process takes its share of the rows on its own GPU; the main process writes
``manifest.csv`` at the end.
"""

from __future__ import annotations

import csv
import io
import json
import re
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ophora.files import read_text_file
from ophora.generation.request import GenerationRequest
from ophora.generation.video import sidecar_path
from ophora.vocabulary import find_phase

if TYPE_CHECKING:  # the CSV checks run before torch is imported
    from ophora.generation.loading import LoadedPipeline

PROMPT_COLUMN = "caption prompt"
ID_COLUMN = "clip id"
PHASE_COLUMN = "phase prompt"
# Settings that make two clips different; a finished clip is reused only if all of these match.
_IDENTITY_KEYS = ("prompt", "negative_prompt", "seed", "num_inference_steps", "guidance_scale", "use_dynamic_cfg",
                  "num_frames", "height", "width", "fps", "speed", "speed_threshold")
# Sidecars written before the speed presets existed were made with the published sampler.
_MISSING_MEANS = {"speed": "exact", "speed_threshold": None}


class BatchInputError(ValueError):
    """The prompt CSV or output folder cannot be used; the message says how to fix it."""


@dataclass
class BatchItem:
    clip_id: str
    prompt: str
    phase: str | None  # phase id from assets/phases.yaml, when the phase column names one


def read_prompt_csv(path: str | Path, prompt_column: str = PROMPT_COLUMN, id_column: str = ID_COLUMN,
                    phase_column: str = PHASE_COLUMN) -> list[BatchItem]:
    """Read and check a prompt CSV; every problem is reported with its row number."""
    path = Path(path)
    if not path.is_file():
        raise BatchInputError(f"Prompt CSV {path} does not exist.")
    reader = csv.DictReader(io.StringIO(read_text_file(path, BatchInputError), newline=""))
    columns = reader.fieldnames or []
    missing = [c for c in (prompt_column, id_column) if c not in columns]
    if missing:
        raise BatchInputError(f"{path} lacks the column(s) {missing}; it has {columns}. The sampler format is "
                              f"'{PHASE_COLUMN}','{ID_COLUMN}','{PROMPT_COLUMN}' (or pick columns with "
                              f"--prompt-column / --id-column).")
    try:
        rows = list(reader)
    except csv.Error as error:
        raise BatchInputError(f"{path}, line {reader.line_num}: not a valid CSV row ({error}).") from None
    items: list[BatchItem] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        prompt = (row.get(prompt_column) or "").strip()
        clip_id = (row.get(id_column) or "").strip()
        if not prompt:
            problems.append(f"row {line}: empty '{prompt_column}'")
        if not clip_id:
            problems.append(f"row {line}: empty '{id_column}'")
        elif not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", clip_id) or clip_id.endswith((".json", ".partial")):
            problems.append(f"row {line}: clip id {clip_id!r} is not a safe file name (letters, digits, . _ -)")
        elif clip_id in seen:
            problems.append(f"row {line}: clip id {clip_id!r} repeats row {seen[clip_id]}")
        else:
            seen[clip_id] = line
        phase_text = (row.get(phase_column) or "").strip()
        phase = find_phase(phase_text) if phase_text else None
        items.append(BatchItem(clip_id=clip_id.removesuffix(".mp4"), prompt=prompt, phase=phase.id if phase else None))
    if problems:
        raise BatchInputError(f"{path}: " + "; ".join(problems[:20]) + (" ..." if len(problems) > 20 else ""))
    if not items:
        raise BatchInputError(f"{path} has a header but no rows.")
    return items


def _clip_settings(request: GenerationRequest) -> dict:
    data = asdict(request)
    return {key: data[key] for key in _IDENTITY_KEYS}


def clip_is_done(video: Path, settings: dict) -> bool:
    """True if the clip exists with these settings; raise if it exists with others (never overwrite silently)."""
    sidecar = sidecar_path(video)
    if not (video.is_file() and sidecar.is_file()):
        return False
    try:
        made = json.loads(sidecar.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False  # a damaged sidecar: regenerate
    differing = [key for key in _IDENTITY_KEYS if made.get(key, _MISSING_MEANS.get(key)) != settings[key]]
    if differing:
        raise BatchInputError(
            f"{video} was made with different settings ({', '.join(differing)}). Use a new --out-dir, or "
            f"pass --overwrite to replace clips made with other settings.")
    return True


def run_batch(
    loaded: "LoadedPipeline",
    items: list[BatchItem],
    out_dir: str | Path,
    base: GenerationRequest,
    synthetic_mark: bool = True,
    overwrite: bool = False,
    on_clip: Callable[[BatchItem, str], None] | None = None,
    process_index: int = 0,
    num_processes: int = 1,
) -> dict[str, str]:
    """Generate this process's share of ``items``; return {clip_id: "done" | "skipped" | "failed: ..."}.

    One failing clip (a CUDA out-of-memory, say) is recorded and the batch goes on.
    """
    from ophora.generation.engine import generate, resolve_request
    from ophora.generation.video import write_clip

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    status: dict[str, str] = {}
    for item in items[process_index::num_processes]:
        request = resolve_request(loaded, replace(base, prompt=item.prompt))
        video = out_dir / f"{item.clip_id}.mp4"
        error_file = out_dir / f"{item.clip_id}.error.txt"
        if not overwrite and clip_is_done(video, _clip_settings(request)):
            status[item.clip_id] = "skipped"
        else:
            try:
                result = generate(loaded, request)
                result.provenance.update(clip_id=item.clip_id, phase=item.phase)
                write_clip(result.frames, video, fps=request.fps, provenance=result.provenance,
                           synthetic_mark=synthetic_mark)
                error_file.unlink(missing_ok=True)
                status[item.clip_id] = "done"
            except Exception as error:  # noqa: BLE001 - recorded per clip, the batch continues
                error_file.write_text(f"{type(error).__name__}: {error}\n\n{traceback.format_exc()}")
                status[item.clip_id] = f"failed: {type(error).__name__}: {error}"
        if on_clip is not None:
            on_clip(item, status[item.clip_id])
    return status


def write_manifest(items: list[BatchItem], out_dir: str | Path) -> Path:
    """Write ``manifest.csv`` from the files on disk, so it is right whichever process made which clip."""
    out_dir = Path(out_dir)
    manifest = out_dir / "manifest.csv"
    columns = ["clip_id", "status", "video", "phase", "prompt", "seed", "num_inference_steps", "guidance_scale",
               "num_frames", "height", "width", "fps", "model", "model_fingerprint", "error"]
    tmp = manifest.with_name("manifest.csv.partial")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for item in items:
            video = out_dir / f"{item.clip_id}.mp4"
            error_file = out_dir / f"{item.clip_id}.error.txt"
            row = {"clip_id": item.clip_id, "phase": item.phase, "prompt": item.prompt}
            if video.is_file() and sidecar_path(video).is_file():
                made = json.loads(sidecar_path(video).read_text(encoding="utf-8"))
                row.update({key: made.get(key) for key in columns if key in made})
                row.update(status="done", video=video.name, model=made["model"]["id"],
                           model_fingerprint=made["model"]["fingerprint"])
            elif error_file.is_file():
                row.update(status="failed", error=error_file.read_text().splitlines()[0])
            else:
                row.update(status="missing")
            writer.writerow(row)
    tmp.replace(manifest)
    return manifest
