"""Study definition files (``studies/*.yaml``): validated against a pydantic schema up front, then
resolved into a frozen :class:`StudyDefinition`.

Why validate everything before touching the database: a typo in a scale or a clip folder found half-way
through a study would leave raters with a broken session. Every error names the file, the path of the
field (``criteria[0].scale.min``), what is wrong and, for an unknown key, the nearest valid one.
"""

from __future__ import annotations

import csv
import io
import difflib
import json
import math
import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ophora.files import read_text_file

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")
SOURCES = ("real", "generated")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def shown(value, limit: int = 40) -> str:
    """A value quoted in a message, cut short: a hostile client's 60 KB answer must not reach the log."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."

class StudyDefinitionError(ValueError):
    """A study file that cannot be used; the message says where and how to fix it."""


# ---------------------------------------------------------------------------------------------- schema
# The study file's schema, checked by pydantic at every level: unknown keys are errors (with the nearest
# valid key), types are strict (``width: "720"`` is refused, not coerced) and ranges are checked at
# ``create``, before any clip is encoded.
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Scale(_Strict):
    min: int
    max: int
    anchors: dict[int, str] = Field(default_factory=dict)

    @field_validator("anchors", mode="before")
    @classmethod
    def _anchor_keys(cls, value):
        """YAML keys ``1:`` are ints, JSON and form keys ``"1"`` are text: both name a scale point."""
        if isinstance(value, dict):
            out = {}
            for key, text in value.items():
                try:
                    point = int(key)
                except (TypeError, ValueError):
                    raise ValueError(f"anchor key {key!r} is not a scale point") from None
                out[point] = text if isinstance(text, str) else str(text)
            return out
        return value

    @model_validator(mode="after")
    def _ordered(self) -> "Scale":
        if self.min >= self.max:
            raise ValueError(f"scale min ({self.min}) must be smaller than max ({self.max})")
        for point in self.anchors:
            if not self.min <= point <= self.max:
                raise ValueError(f"anchor {point} lies outside the scale {self.min}-{self.max}")
        return self

    def check(self, value: Any, what: str) -> int:
        """Return ``value`` as an int on this scale (numpy integers too), or raise ``ValueError``."""
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, numbers.Real)):
            raise ValueError(f"{what} must be a whole number from {self.min} to {self.max}, got {shown(value)}")
        if not math.isfinite(float(value)) or int(value) != value:
            raise ValueError(f"{what} must be a whole number from {self.min} to {self.max}, got {shown(value)}")
        if not self.min <= int(value) <= self.max:
            raise ValueError(f"{what} is out of range: {value} is not between {self.min} and {self.max}")
        return int(value)

    def as_dict(self) -> dict:
        return {"min": self.min, "max": self.max, "anchors": {str(k): v for k, v in self.anchors.items()}}


class Criterion(_Strict):
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_ -]*$")
    description: str = ""
    scale: Scale = Scale(min=1, max=5)
    shows_instruction: bool = False  # phase matching needs the instruction; realism criteria must not see it

    @field_validator("name", "description", mode="before")
    @classmethod
    def _strip(cls, value):
        return value.strip() if isinstance(value, str) else value


TURING_MARGIN = 0.1  # "raters could not tell" needs the AUC interval below 0.5 + this


class TuringTest(_Strict):
    enabled: bool = True
    confidence: Scale = Scale(min=1, max=5, anchors={1: "guessing", 5: "certain"})
    # Stated before rating: the report says "could not reliably tell" only when the whole AUC interval lies
    # below 0.5 + margin, otherwise "inconclusive" (absence of evidence is not evidence of absence).
    margin: Annotated[float, Field(gt=0, lt=0.5)] = TURING_MARGIN


class ClipSetFile(_Strict):
    name: str = Field(min_length=1)
    source: Literal["real", "generated"]
    model: str | None = None
    folder: str | None = None
    manifest: str | None = None
    phase: str | None = None

    @model_validator(mode="after")
    def _one_location(self) -> "ClipSetFile":
        if self.source == "generated" and not self.model:
            raise ValueError(f"generated clip sets need 'model' (e.g. model: ophora); set {self.name!r} has none")
        if (self.folder is None) == (self.manifest is None):
            raise ValueError(f"clip set {self.name!r}: give exactly one of 'folder' or 'manifest'")
        return self


class Repeats(_Strict):
    """Clips each rater sees a second time, after a washout: ``after_days`` days or ``after_items`` other
    readings since the first one (neither: after all first readings)."""

    count: int = Field(default=0, ge=0)
    after_days: float | None = Field(default=None, gt=0)
    after_items: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_washout(self) -> "Repeats":
        if self.after_days is not None and self.after_items is not None:
            raise ValueError("give one washout for repeats: 'after_days' or 'after_items', not both")
        return self


class Blinding(_Strict):
    """Every clip, real or generated, is re-encoded with exactly these settings."""

    width: int = Field(default=720, gt=0, le=4096)  # at most the sources' size is checked at import
    height: int = Field(default=480, gt=0, le=4096)
    fps: int = Field(default=8, gt=0, le=120)
    crf: int = Field(default=20, ge=0, le=51)
    max_seconds: float | None = Field(default=None, gt=0)  # the study length: every clip is trimmed to it
    fit: Literal["crop", "letterbox"] = "crop"  # crop to the study aspect ratio (no bars), or pad every clip

    @model_validator(mode="after")
    def _even(self) -> "Blinding":
        if self.width % 2 or self.height % 2:
            raise ValueError(f"width and height must be even numbers (H.264 needs even sizes), got "
                             f"{self.width}x{self.height}")
        return self

    @property
    def frames(self) -> int | None:
        """Frames per blinded clip (study length x fps), or ``None`` when no length is set."""
        return None if self.max_seconds is None else max(1, round(self.max_seconds * self.fps))


class StudyFile(_Strict):
    """The whole study file as written."""

    slug: str | None = None
    title: str
    instructions: str = ""
    criteria: list[Criterion] = Field(min_length=1)
    phases: Literal["cataract"] | list[str] = "cataract"
    ask_phase: bool = False
    turing_test: bool | TuringTest = False
    instruction_source: Literal["phase_template", "per_clip"] = "phase_template"
    clip_sets: list[ClipSetFile] = Field(min_length=1)
    raters: list[str] = Field(default_factory=list)
    repeats: Annotated[int, Field(ge=0)] | Repeats = 0
    seed: int = 0
    blinding: Blinding = Blinding()

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("'title' is empty; add a line such as `title: Cataract video realism study`")
        return value.strip()

    @field_validator("raters")
    @classmethod
    def _unique_raters(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for name in value:
            if not name.strip():
                raise ValueError("rater names must not be empty")
            if name.strip() in seen:
                raise ValueError(f"lists rater {name.strip()!r} twice (names are compared without surrounding spaces)")
            seen.add(name.strip())
        return [n.strip() for n in value]

    @model_validator(mode="after")
    def _unique_names(self) -> "StudyFile":
        for what, names in (("criterion", [c.name for c in self.criteria]),
                            ("clip set", [c.name for c in self.clip_sets])):
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"{what} {twice[0]!r} is listed twice; {what} names must be unique")
        if isinstance(self.phases, list):
            if not self.phases or not all(p.strip() for p in self.phases):
                raise ValueError("'phases' must be `cataract` (the built-in Cataract-1K list) or a list of phase names")
            if len({p.strip() for p in self.phases}) != len(self.phases):
                raise ValueError("'phases' lists a phase twice")
        return self


def _models_in(annotation: Any) -> set[type[BaseModel]]:
    """The pydantic models an annotation can hold (through lists, dicts and unions)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {annotation}
    out: set[type[BaseModel]] = set()
    for arg in get_args(annotation):
        out |= _models_in(arg)
    return out


def _explain(error: dict) -> str:
    """One pydantic error as ``path: message``, with the nearest valid key for an unknown one."""
    models: set[type[BaseModel]] = {StudyFile}
    path: list[str] = []
    loc = list(error["loc"])
    last = loc.pop() if error["type"] == "extra_forbidden" else None
    for part in loc:
        if isinstance(part, int):
            path[-1:] = [f"{path[-1]}[{part}]"] if path else [f"[{part}]"]
            continue
        owners = [m for m in models if part in m.model_fields]
        if owners:
            path.append(part)
            models = set().union(*(_models_in(m.model_fields[part].annotation) for m in owners))
        # else: a union branch tag such as 'TuringTest' or 'bool'; not part of the user's path
    where = ".".join(path)
    if last is not None:
        valid = sorted(set().union(*(m.model_fields for m in models))) if models else []
        near = difflib.get_close_matches(str(last), valid, n=1, cutoff=0.6)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        key = f"{where}.{last}" if where else str(last)
        return f"{key}: unknown key {last!r}{hint} (valid keys{' of ' + where if where else ''}: {', '.join(valid)})"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        message = f"'{path[-1] if path else error['loc'][-1]}' is missing"
    elif "input" in error and error["type"] not in ("value_error", "assertion_error"):
        message += f" (got {error['input']!r})"
    return f"{where}: {message}" if where else message


def _validation_message(exc: ValidationError) -> str:
    # Unknown keys first (the most common typo), then the rest; a union reports each branch, keep one.
    # A union branch that rejects the input's type ("should be a valid integer") says least: last.
    errors = sorted(exc.errors(), key=lambda e: (e["type"] != "extra_forbidden", e["type"].endswith("_type"),
                                                  len(e["loc"])))
    seen: list[str] = []
    paths: set[str] = set()
    for error in errors:
        text_ = _explain(error)
        path = text_.split(": ", 1)[0]
        if path not in paths:  # one message per field (a union such as `repeats` reports every branch)
            paths.add(path)
            seen.append(text_)
    more = f" (and {len(seen) - 3} more)" if len(seen) > 3 else ""
    return "; ".join(seen[:3]) + more


# ---------------------------------------------------------------------------------------------- resolved
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
class StudyDefinition:
    """A validated study file with paths resolved and defaults filled in."""

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
    repeats: Repeats
    seed: int
    blinding: Blinding
    instruction_source: str = "phase_template"
    source_text: str = ""  # the YAML as written, stored with the study
    base_dir: Path = Path(".")
    turing_margin: float = TURING_MARGIN

    def criterion(self, name: str) -> Criterion:
        for c in self.criteria:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def shows_instruction(self) -> bool:
        return any(c.shows_instruction for c in self.criteria)

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


def _default_phases() -> tuple[str, ...]:
    from ophora.vocabulary import load_phases

    return tuple(p.id for p in load_phases())


def parse_definition(data: Any, *, where: str = "study", base_dir: Path = Path("."), source_text: str = "",
                     default_slug: str | None = None, check_paths: bool = True) -> StudyDefinition:
    """Validate a parsed YAML mapping against :class:`StudyFile`; raise :class:`StudyDefinitionError`."""
    if not isinstance(data, dict):
        raise _fail(where, "the file must be a YAML mapping with at least 'title', 'criteria' and 'clip_sets'")
    try:
        raw = StudyFile.model_validate(data)
    except ValidationError as exc:
        raise _fail(where, _validation_message(exc)) from None
    slug = str(raw.slug or default_slug or "").strip().lower().replace(" ", "-")
    if not _SLUG.match(slug):
        raise _fail(where, f"'slug' {slug!r} must be lower-case letters, digits, '-' or '_' (at most 63 characters)")
    phases = _default_phases() if raw.phases == "cataract" else tuple(p.strip() for p in raw.phases)
    if isinstance(raw.turing_test, TuringTest):
        enabled, confidence = raw.turing_test.enabled, raw.turing_test.confidence if raw.turing_test.enabled else None
    else:
        enabled, confidence = raw.turing_test, TuringTest().confidence if raw.turing_test else None
    repeats = raw.repeats if isinstance(raw.repeats, Repeats) else Repeats(count=raw.repeats)
    clip_sets: list[ClipSet] = []
    for i, cs in enumerate(raw.clip_sets):
        sw = f"{where}: clip_sets[{i}] ({cs.name})"
        folder_p = (base_dir / cs.folder).resolve() if cs.folder else None
        manifest_p = (base_dir / cs.manifest).resolve() if cs.manifest else None
        if check_paths and folder_p is not None and not folder_p.is_dir():
            raise StudyDefinitionError(f"{sw}: folder {folder_p} does not exist (paths are relative to the study file)")
        if check_paths and manifest_p is not None and not manifest_p.is_file():
            raise StudyDefinitionError(f"{sw}: manifest {manifest_p} does not exist (paths are relative to the study file)")
        model = cs.model or ("real" if cs.source == "real" else "")
        clip_sets.append(ClipSet(cs.name, cs.source, model, folder_p, manifest_p, cs.phase))
    definition = StudyDefinition(
        slug=slug, title=raw.title, instructions=raw.instructions.strip(), criteria=tuple(raw.criteria),
        phases=phases, ask_phase=raw.ask_phase, turing_test=enabled, turing_confidence=confidence,
        clip_sets=tuple(clip_sets), raters=tuple(raw.raters), repeats=repeats, seed=raw.seed,
        blinding=raw.blinding, instruction_source=raw.instruction_source, source_text=source_text,
        base_dir=base_dir,
        turing_margin=(raw.turing_test.margin if isinstance(raw.turing_test, TuringTest)
                       else TURING_MARGIN),
    )
    for clip_set in clip_sets:
        if clip_set.phase and definition.match_phase(clip_set.phase) is None:
            raise _fail(where, f"clip set {clip_set.name!r}: phase {clip_set.phase!r} is not in the phase vocabulary {list(phases)}")
    if raw.instruction_source == "phase_template" and definition.shows_instruction:
        missing = [p for p in phases if not phase_wording(p)]
        if missing:
            raise _fail(where, f"instruction_source: phase_template needs a wording for every phase in "
                               f"assets/phases.yaml; none for {missing}. Use instruction_source: per_clip or "
                               f"add templates to assets/phases.yaml")
    return definition


def phase_wording(phase: str) -> str | None:
    """The instruction shown for every clip of ``phase`` under ``instruction_source: phase_template``: the
    phase's first template in assets/phases.yaml, the same words for real and generated clips."""
    from ophora.vocabulary import load_phases

    for p in load_phases():
        if p.id == phase and p.templates:
            return p.templates[0]
    return None


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
