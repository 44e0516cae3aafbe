"""Study definition files (``studies/*.yaml``): parsed into frozen dataclasses and validated up front.

Why validate everything before touching the database: a typo in a scale or a clip folder found half-way
through a study would leave raters with a broken session. Every error names the file, the field and what to do.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ophora.files import read_text_file

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")
SOURCES = ("real", "generated")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class StudyDefinitionError(ValueError):
    """A study file that cannot be used; the message says where and how to fix it."""


@dataclass(frozen=True)
class Scale:
    min: int
    max: int
    anchors: dict[int, str] = field(default_factory=dict)

    def check(self, value: Any, what: str) -> int:
        """Return ``value`` as an int on this scale, or raise ``ValueError`` saying the allowed range."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ValueError(f"{what} must be a whole number from {self.min} to {self.max}, got {value!r}")
        if not self.min <= int(value) <= self.max:
            raise ValueError(f"{what} is out of range: {value} is not between {self.min} and {self.max}")
        return int(value)

    def as_dict(self) -> dict:
        return {"min": self.min, "max": self.max, "anchors": {str(k): v for k, v in self.anchors.items()}}


@dataclass(frozen=True)
class Criterion:
    name: str
    description: str
    scale: Scale
    shows_instruction: bool = False  # phase matching needs the instruction; realism criteria must not see it


@dataclass(frozen=True)
class ClipSpec:
    """One clip to import: where it is and its provenance (stored, never shown to raters)."""

    path: Path
    source: str
    model: str
    phase: str | None
    instruction: str | None
    clip_set: str


@dataclass(frozen=True)
class ClipSet:
    name: str
    source: str  # "real" or "generated"
    model: str  # "real" for real clips
    folder: Path | None = None
    manifest: Path | None = None
    phase: str | None = None


@dataclass(frozen=True)
class Blinding:
    """Every clip, real or generated, is re-encoded with exactly these settings."""

    width: int = 720
    height: int = 480
    fps: int = 8
    crf: int = 20
    max_seconds: float | None = None


@dataclass(frozen=True)
class StudyDefinition:
    slug: str
    title: str
    instructions: str
    criteria: tuple[Criterion, ...]
    phases: tuple[str, ...]
    ask_phase: bool
    turing_test: bool
    turing_confidence: Scale | None
    clip_sets: tuple[ClipSet, ...]
    raters: tuple[str, ...]
    repeats: int
    seed: int
    blinding: Blinding
    source_text: str = ""  # the YAML as written, stored with the study
    base_dir: Path = Path(".")

    def criterion(self, name: str) -> Criterion:
        for c in self.criteria:
            if c.name == name:
                return c
        raise KeyError(name)

    def match_phase(self, text: str | None) -> str | None:
        """The vocabulary phase that ``text`` names in any spelling, or ``None``."""
        if not text:
            return None
        from ophora.vocabulary import Phase, find_phase

        phases = tuple(Phase(id=p, name=p, templates=()) for p in self.phases)
        found = find_phase(str(text), phases)
        return found.id if found else None

    def clips(self) -> list[ClipSpec]:
        """Every clip of every clip set, with provenance from manifests, sidecars or file names."""
        out: list[ClipSpec] = []
        for clip_set in self.clip_sets:
            out.extend(_clips_of(self, clip_set))
        return out


def _fail(where: str, message: str) -> StudyDefinitionError:
    return StudyDefinitionError(f"{where}: {message}")


def _scale(raw: Any, where: str) -> Scale:
    if not isinstance(raw, dict) or "min" not in raw or "max" not in raw:
        raise _fail(where, "a scale needs 'min' and 'max', e.g. scale: {min: 1, max: 5, anchors: {1: poor, 5: excellent}}")
    lo, hi = raw["min"], raw["max"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)):
        raise _fail(where, f"scale min and max must be whole numbers, got min={lo!r} max={hi!r}")
    if lo >= hi:
        raise _fail(where, f"scale min ({lo}) must be smaller than max ({hi})")
    anchors_raw = raw.get("anchors") or {}
    if not isinstance(anchors_raw, dict):
        raise _fail(where, "anchors must be a mapping from scale point to wording, e.g. {1: poor, 5: excellent}")
    anchors: dict[int, str] = {}
    for key, text in anchors_raw.items():
        try:
            point = int(key)
        except (TypeError, ValueError):
            raise _fail(where, f"anchor key {key!r} is not a scale point") from None
        if not lo <= point <= hi:
            raise _fail(where, f"anchor {point} lies outside the scale {lo}-{hi}")
        anchors[point] = str(text)
    return Scale(lo, hi, anchors)


def _default_phases() -> tuple[str, ...]:
    from ophora.vocabulary import load_phases

    return tuple(p.id for p in load_phases())


def parse_definition(data: Any, *, where: str = "study", base_dir: Path = Path("."), source_text: str = "",
                     default_slug: str | None = None, check_paths: bool = True) -> StudyDefinition:
    """Validate a parsed YAML mapping; raise :class:`StudyDefinitionError` on the first problem."""
    if not isinstance(data, dict):
        raise _fail(where, "the file must be a YAML mapping with at least 'title', 'criteria' and 'clip_sets'")
    known = {"slug", "title", "instructions", "criteria", "phases", "ask_phase", "turing_test", "clip_sets",
             "raters", "repeats", "seed", "blinding"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise _fail(where, f"unknown field(s) {unknown}; allowed fields are {sorted(known)}")
    title = data.get("title")
    if not isinstance(title, str) or not title.strip():
        raise _fail(where, "'title' is missing; add a line such as `title: Cataract video realism study`")
    slug = str(data.get("slug") or default_slug or "").strip().lower().replace(" ", "-")
    if not _SLUG.match(slug):
        raise _fail(where, f"'slug' {slug!r} must be lower-case letters, digits, '-' or '_' (at most 63 characters)")

    raw_criteria = data.get("criteria")
    if not isinstance(raw_criteria, list) or not raw_criteria:
        raise _fail(where, "'criteria' must be a non-empty list of {name, description, scale}")
    criteria: list[Criterion] = []
    for i, raw in enumerate(raw_criteria):
        cw = f"{where}: criteria[{i}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"].strip():
            raise StudyDefinitionError(f"{cw}: each criterion needs a 'name'")
        name = raw["name"].strip()
        if not re.match(r"^[A-Za-z][A-Za-z0-9_ -]*$", name):
            raise StudyDefinitionError(f"{cw}: criterion name {name!r} must start with a letter (letters, digits, _ - space)")
        if any(c.name == name for c in criteria):
            raise StudyDefinitionError(f"{cw}: criterion {name!r} is listed twice; criterion names must be unique")
        criteria.append(Criterion(
            name=name,
            description=str(raw.get("description", "")).strip(),
            scale=_scale(raw.get("scale", {"min": 1, "max": 5}), f"{cw} ({name}) scale"),
            shows_instruction=bool(raw.get("shows_instruction", False)),
        ))

    raw_phases = data.get("phases", "cataract")
    if raw_phases == "cataract":
        phases = _default_phases()
    elif isinstance(raw_phases, list) and raw_phases and all(isinstance(p, str) and p.strip() for p in raw_phases):
        phases = tuple(p.strip() for p in raw_phases)
        if len(set(phases)) != len(phases):
            raise _fail(where, "'phases' lists a phase twice")
    else:
        raise _fail(where, "'phases' must be `cataract` (the built-in Cataract-1K list) or a list of phase names")

    turing = data.get("turing_test", False)
    confidence: Scale | None = None
    if isinstance(turing, dict):
        enabled = bool(turing.get("enabled", True))
        if enabled:
            confidence = _scale(turing.get("confidence", {"min": 1, "max": 5}), f"{where}: turing_test.confidence")
    elif isinstance(turing, bool):
        enabled = turing
        confidence = Scale(1, 5, {1: "guessing", 5: "certain"}) if enabled else None
    else:
        raise _fail(where, "'turing_test' must be true/false or {enabled: true, confidence: {min: 1, max: 5}}")

    raw_sets = data.get("clip_sets")
    if not isinstance(raw_sets, list) or not raw_sets:
        raise _fail(where, "'clip_sets' must list at least one set: {name, source: real|generated, folder or manifest}")
    clip_sets: list[ClipSet] = []
    for i, raw in enumerate(raw_sets):
        sw = f"{where}: clip_sets[{i}]"
        if not isinstance(raw, dict) or not raw.get("name"):
            raise StudyDefinitionError(f"{sw}: each clip set needs a 'name'")
        name = str(raw["name"])
        if any(s.name == name for s in clip_sets):
            raise StudyDefinitionError(f"{sw}: clip set name {name!r} is used twice")
        source = raw.get("source")
        if source not in SOURCES:
            raise StudyDefinitionError(f"{sw} ({name}): 'source' must be 'real' or 'generated', got {source!r}")
        model = str(raw.get("model") or ("real" if source == "real" else ""))
        if source == "generated" and not model:
            raise StudyDefinitionError(f"{sw} ({name}): generated clip sets need 'model' (e.g. model: ophora)")
        folder = raw.get("folder")
        manifest = raw.get("manifest")
        if (folder is None) == (manifest is None):
            raise StudyDefinitionError(f"{sw} ({name}): give exactly one of 'folder' or 'manifest'")
        folder_p = (base_dir / folder).resolve() if folder else None
        manifest_p = (base_dir / manifest).resolve() if manifest else None
        if check_paths and folder_p is not None and not folder_p.is_dir():
            raise StudyDefinitionError(f"{sw} ({name}): folder {folder_p} does not exist (paths are relative to the study file)")
        if check_paths and manifest_p is not None and not manifest_p.is_file():
            raise StudyDefinitionError(f"{sw} ({name}): manifest {manifest_p} does not exist (paths are relative to the study file)")
        phase = raw.get("phase")
        clip_sets.append(ClipSet(name, source, model, folder_p, manifest_p, str(phase) if phase else None))

    raters = data.get("raters", [])
    if not isinstance(raters, list) or not all(isinstance(r, str) and r.strip() for r in raters):
        raise _fail(where, "'raters' must be a list of rater names (access codes are issued by `study create`)")
    if len(set(raters)) != len(raters):
        raise _fail(where, "'raters' lists a rater twice")
    repeats = data.get("repeats", 0)
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 0:
        raise _fail(where, f"'repeats' (clips each rater sees a second time) must be a whole number >= 0, got {repeats!r}")
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise _fail(where, f"'seed' must be a whole number, got {seed!r}")
    raw_blind = data.get("blinding", {}) or {}
    if not isinstance(raw_blind, dict):
        raise _fail(where, "'blinding' must be a mapping such as {width: 720, height: 480, fps: 8, crf: 20}")
    try:
        blinding = Blinding(**raw_blind)
    except TypeError as exc:
        raise _fail(where, f"'blinding' accepts width, height, fps, crf, max_seconds ({exc})") from None
    if blinding.width % 2 or blinding.height % 2 or blinding.width <= 0 or blinding.height <= 0 or blinding.fps <= 0:
        raise _fail(where, "blinding width and height must be positive even numbers and fps positive (H.264 needs even sizes)")

    definition = StudyDefinition(
        slug=slug, title=title.strip(), instructions=str(data.get("instructions", "")).strip(),
        criteria=tuple(criteria), phases=phases, ask_phase=bool(data.get("ask_phase", False)),
        turing_test=enabled, turing_confidence=confidence, clip_sets=tuple(clip_sets), raters=tuple(raters),
        repeats=repeats, seed=seed, blinding=blinding, source_text=source_text, base_dir=base_dir,
    )
    for clip_set in clip_sets:
        if clip_set.phase and definition.match_phase(clip_set.phase) is None:
            raise _fail(where, f"clip set {clip_set.name!r}: phase {clip_set.phase!r} is not in the phase vocabulary {list(phases)}")
    return definition


def load_definition(path: str | Path, *, check_paths: bool = True) -> StudyDefinition:
    """Read and validate ``studies/<name>.yaml``."""
    path = Path(path)
    if not path.is_file():
        raise StudyDefinitionError(f"{path}: no such study file")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StudyDefinitionError(f"{path}: not valid YAML ({exc})") from None
    return parse_definition(data, where=str(path), base_dir=path.resolve().parent, source_text=text,
                            default_slug=path.stem.replace("_", "-"), check_paths=check_paths)


def _read_sidecar(video: Path) -> dict:
    """The generator's provenance sidecar ``<clip>.json`` (model, prompt, seed, phase), if present."""
    sidecar = video.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise StudyDefinitionError(f"{sidecar}: sidecar is not valid JSON ({exc})") from None
    return data if isinstance(data, dict) else {}


def _clips_of(definition: StudyDefinition, clip_set: ClipSet) -> list[ClipSpec]:
    rows: list[tuple[Path, str | None, str | None]] = []
    if clip_set.folder is not None:
        for video in sorted(clip_set.folder.iterdir()):
            if video.suffix.lower() in VIDEO_SUFFIXES and video.is_file():
                side = _read_sidecar(video)
                phase = side.get("phase") or clip_set.phase or video.stem
                instruction = side.get("prompt") or side.get("instruction")
                rows.append((video, phase, instruction))
    else:
        assert clip_set.manifest is not None
        with io.StringIO(read_text_file(clip_set.manifest, StudyDefinitionError), newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "path" not in reader.fieldnames:
                raise StudyDefinitionError(f"{clip_set.manifest}: a manifest is a CSV with columns path[,phase,instruction]")
            for line, row in enumerate(reader, start=2):
                video = (clip_set.manifest.parent / row["path"]).resolve()
                if not video.is_file():
                    raise StudyDefinitionError(f"{clip_set.manifest}:{line}: clip {video} does not exist")
                side = _read_sidecar(video)
                rows.append((video, row.get("phase") or side.get("phase") or clip_set.phase or video.stem,
                             row.get("instruction") or side.get("prompt") or side.get("instruction")))
    if not rows:
        raise StudyDefinitionError(f"clip set {clip_set.name!r}: no video files ({', '.join(VIDEO_SUFFIXES)}) found")
    specs = []
    for video, phase_text, instruction in rows:
        phase = definition.match_phase(phase_text)
        if phase is None:
            raise StudyDefinitionError(
                f"clip set {clip_set.name!r}: cannot tell the phase of {video.name} ({phase_text!r}); give a 'phase' "
                f"column in the manifest, a 'phase' in its sidecar or on the clip set; phases are {list(definition.phases)}")
        specs.append(ClipSpec(video, clip_set.source, clip_set.model, phase, instruction, clip_set.name))
    return specs
