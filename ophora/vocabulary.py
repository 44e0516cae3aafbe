"""Surgical vocabulary shipped in ``assets/``: phases, their instruction templates, instruments.

Why a module: the CLI, the app's phase picker and study definitions must agree on one phase list, and
phase names arrive in several spellings ("irrigation-aspiration", "Irrigation Aspiration", "lens implantation").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"


@dataclass(frozen=True)
class Phase:
    id: str
    name: str
    templates: tuple[str, ...]
    instruments: tuple[str, ...] = field(default_factory=tuple)


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


@lru_cache(maxsize=4)
def load_phases(path: str | Path | None = None) -> tuple[Phase, ...]:
    """Read the phase list (default ``assets/phases.yaml``)."""
    path = Path(path) if path is not None else ASSETS_DIR / "phases.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    phases = tuple(
        Phase(id=p["id"], name=p["name"], templates=tuple(p["templates"]), instruments=tuple(p.get("instruments", [])))
        for p in data["phases"]
    )
    if len({p.id for p in phases}) != len(phases):
        raise ValueError(f"{path}: phase ids must be unique")
    return phases


def find_phase(text: str, phases: tuple[Phase, ...] | None = None) -> Phase | None:
    """Match a phase by id or name in any spelling, tolerating typos ("Capsule-Pulishing"), and the
    original sampler's "... with the current surgical phase as <phase>" prompts. ``None`` if nothing fits."""
    import difflib

    phases = phases or load_phases()
    match = re.search(r"phase as (.+)$", text.strip(), flags=re.IGNORECASE)
    wanted = _key(match.group(1) if match else text)
    aliases = {"tonifyingantibiotics": "tonifyingantibiotics", "tonifying": "tonifyingantibiotics"}
    wanted = aliases.get(wanted, wanted)
    by_key = {}
    for phase in phases:
        by_key[_key(phase.id)] = phase
        by_key[_key(phase.name)] = phase
    if wanted in by_key:
        return by_key[wanted]
    close = difflib.get_close_matches(wanted, list(by_key), n=1, cutoff=0.85)
    return by_key[close[0]] if close else None


def load_instruments(path: str | Path | None = None) -> list[dict]:
    path = Path(path) if path is not None else ASSETS_DIR / "instruments.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))["instruments"]
