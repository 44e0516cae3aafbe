"""The generation history: every clip made in the studio, kept on disk with its provenance.

Why a folder of MP4 + JSON sidecars and no database: the files are the record (``write_clip`` writes them
atomically), they survive restarts and copying, and the history is rebuilt by reading the sidecars. The
history holds unblinded clips and full provenance, so only the studio (operator) mode ever reads it.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ophora.generation.video import read_provenance, write_clip

_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")


class HistoryError(ValueError):
    """Unknown or unreadable history entry; the message says what to do."""


@dataclass(frozen=True)
class HistoryEntry:
    id: str
    path: Path
    provenance: dict

    @property
    def study_master(self) -> Path:
        """The unlabelled copy used for blinded studies (falls back to the labelled clip for old entries)."""
        master = self.path.with_name(self.id + ".study.mp4")
        return master if master.is_file() else self.path

    @property
    def prompt(self) -> str:
        return str(self.provenance.get("prompt", ""))

    @property
    def created(self) -> str:
        return str(self.provenance.get("created_utc", ""))

    @property
    def model_id(self) -> str:
        model = self.provenance.get("model") or {}
        return str(model.get("id", "unknown")) if isinstance(model, dict) else str(model)

    def row(self) -> list:
        p = self.provenance
        return [self.id, self.created, self.prompt[:80], str(p.get("seed", "")), p.get("num_inference_steps"),
                p.get("guidance_scale"), p.get("num_frames"), self.model_id]


ROW_HEADERS = ["id", "created (UTC)", "instruction", "seed", "steps", "guidance", "frames", "model"]


def new_entry_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


class History:
    """Clips under ``root`` as ``<id>.mp4`` + ``<id>.json``; newest first."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def add(self, frames, provenance: dict, fps: int, extra: dict | None = None) -> HistoryEntry:
        entry_id = new_entry_id()
        provenance = {**provenance, **(extra or {}), "history_id": entry_id}
        # The study master carries no visible SYNTHETIC label (it would unblind a real-or-synthetic question),
        # but its metadata and sidecar say synthetic like every clip we write; blinding re-encodes it and strips
        # both. The clip users see and download keeps the label.
        write_clip(frames, self.root / f"{entry_id}.study.mp4", fps=fps, provenance=provenance, synthetic_mark=False)
        path = write_clip(frames, self.root / f"{entry_id}.mp4", fps=fps, provenance=provenance, synthetic_mark=True)
        return HistoryEntry(entry_id, path, provenance)

    def get(self, entry_id: str) -> HistoryEntry:
        entry_id = (entry_id or "").strip()
        if not _ID.match(entry_id):  # also keeps '../' and absolute paths out of the file lookup
            raise HistoryError(f"{entry_id!r} is not a history id; pick one from the history table.")
        path = self.root / f"{entry_id}.mp4"
        if not path.is_file():
            raise HistoryError(f"History clip {entry_id} is not on disk (deleted or moved?). Refresh the history.")
        provenance = read_provenance(path) or {}
        return HistoryEntry(entry_id, path, provenance)

    def entries(self, limit: int | None = None) -> list[HistoryEntry]:
        out: list[HistoryEntry] = []
        for path in sorted(self.root.glob("*.mp4"), reverse=True):
            if not _ID.match(path.stem):
                continue  # .partial files and anything copied in by hand
            try:
                out.append(HistoryEntry(path.stem, path, read_provenance(path) or {}))
            except (OSError, ValueError):
                continue  # a corrupt sidecar must not take the whole history down
            if limit and len(out) >= limit:
                break
        return out
