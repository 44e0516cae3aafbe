"""``StudyStore``: the one API to a study database, for the CLI, the app and scripts.

Admin functions take a study slug; rater-facing functions take the rater's access code and return only
blinded data (:class:`BlindItem`: opaque clip id, blinded video path, the instruction only where a
criterion needs it). Every write is one short transaction, so a crash loses at most the rating being typed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import shutil
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import yaml
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ophora.study import blinding
from ophora.study.db import READ_ONLY, database_exists, make_engine, upgrade
from ophora.study.definition import ClipSpec, StudyDefinition, parse_definition, phase_wording
from ophora.study.models import Answer, Assignment, AuditEntry, Clip, Rater, Rating, Study

TURING_ANSWERS = ("real", "synthetic")


class StudyError(ValueError):
    """Base class: every message says what went wrong and what to do."""


class UnknownStudyError(StudyError):
    pass


class UnknownRaterError(StudyError):
    pass


class UnknownClipError(StudyError):
    pass


class InvalidRatingError(StudyError):
    pass


class ParityError(StudyError):
    """Clip sets raters could tell apart after blinding; ``report`` (a ParityReport) has the table."""

    def __init__(self, report) -> None:
        super().__init__(report.message)
        self.report = report


class AlreadyRatedError(StudyError):
    pass


class NotRatedError(StudyError):
    pass


@dataclass(frozen=True)
class BlindItem:
    """What a rater may see for one reading. Nothing here reveals source, model or original name."""

    clip_id: str
    video_path: str
    position: int
    total: int
    instruction: str | None
    criteria: tuple[dict, ...]
    ask_phase: bool
    phases: tuple[str, ...]
    turing_test: bool
    turing_confidence: dict | None
    study_title: str
    study_instructions: str


@dataclass(frozen=True)
class Progress:
    """A rater's place in their queue. ``waiting`` readings (repeats in their washout) are not offered yet:
    ``unlocks_at`` (after_days) or ``unlocks_after_items`` (more readings to rate first) say when the next
    one is; ``next_item`` returns ``None`` while only waiting readings are left."""

    rater: str
    done: int
    total: int
    next_position: int | None
    waiting: int = 0
    unlocks_at: datetime | None = None
    unlocks_after_items: int | None = None

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    @property
    def available(self) -> int:
        """Readings the rater can rate now."""
        return self.total - self.done - self.waiting

    @property
    def message(self) -> str:
        """What to tell the rater about their queue."""
        if self.finished:
            return "You have rated every clip. Thank you!"
        if self.available or not self.waiting:
            return f"{self.done} of {self.total} rated."
        if self.unlocks_at is not None:
            return (f"{self.done} of {self.total} rated. The remaining {self.waiting} clip(s) unlock on "
                    f"{self.unlocks_at:%Y-%m-%d %H:%M} UTC; please come back then.")
        return f"{self.done} of {self.total} rated; {self.waiting} clip(s) unlock later."


def hash_code(code: str) -> str:
    """Access codes are random (64+ bits), so a plain SHA-256 is enough; the code itself is never stored."""
    return hashlib.sha256(code.strip().encode("utf-8")).hexdigest()


def new_access_code() -> str:
    return "-".join(secrets.token_hex(3) for _ in range(4))


def _now() -> datetime:
    return datetime.now(timezone.utc)


class StudyStore:
    """A study database (SQLite path/URL or PostgreSQL URL), migrated to the current schema on open."""

    def __init__(self, url: str | Path, *, migrate: bool = True, create: bool = True,
                 clock: Callable[[], datetime] | None = None, **engine_kwargs) -> None:
        """``create=False`` (for status, export, report) refuses a database that does not exist yet instead
        of making an empty one. ``clock`` (UTC now) decides when repeat washouts end; tests pass their own."""
        self._clock = clock or _now
        if not create and not database_exists(url):
            raise StudyError(f"no study database at {url}; check --db, or create the study first with "
                             f"`python -m ophora study create STUDY.yaml`")
        self.engine = make_engine(url, **engine_kwargs)
        if migrate:
            upgrade(self.engine)
        self._write = sessionmaker(self.engine, expire_on_commit=False)
        self._read = sessionmaker(self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)
        self._definitions: dict[int, StudyDefinition] = {}
        self._lock = threading.Lock()
        # SQLite has one writer at a time anyway; queueing this process's writers on a lock is fair and fast,
        # where SQLite's busy handler polls with growing sleeps and lets unlucky raters wait seconds.
        # Other processes are still serialised by BEGIN IMMEDIATE + busy_timeout.
        self._write_lock = threading.Lock() if self.engine.dialect.name == "sqlite" else None

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        """One write transaction (committed on exit, rolled back on error)."""
        if self._write_lock is None:
            with self._write.begin() as s:
                yield s
            return
        with self._write_lock:
            with self._write.begin() as s:
                yield s

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "StudyStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- admin: studies, raters, clips
    def create_study(self, definition: StudyDefinition, *, blind_dir: str | Path | None = None,
                     actor: str = "admin") -> dict[str, str]:
        """Store the study (as a draft) and its raters; return ``{rater: access code}`` (shown once, stored
        only hashed). Raters can rate once :meth:`open_study` has been called."""
        _check_unique_raters(definition.raters)
        created: list[Path] = []
        try:
            with self._writing() as s:
                if s.scalar(select(Study.id).where(Study.slug == definition.slug)) is not None:
                    raise StudyError(f"a study {definition.slug!r} already exists in this database; "
                                     f"choose another 'slug' or use `study import` to add clips to it")
                text = definition.source_text or yaml.safe_dump(_definition_to_dict(definition), sort_keys=False)
                study = Study(slug=definition.slug, title=definition.title, definition_yaml=text,
                              seed=definition.seed, status="draft",
                              blind_dir=str(Path(blind_dir).resolve()) if blind_dir else None)
                s.add(study)
                s.flush()
                self._audit(s, study.id, actor, "create_study", new={"slug": definition.slug}, admin=True)
                codes = {name.strip(): self._add_rater(s, study, name, actor, created) for name in definition.raters}
        except BaseException:
            _remove(created)
            raise
        return codes

    def add_rater(self, slug: str, name: str, *, actor: str = "admin") -> str:
        """Add a rater (with a seeded random order over the clips imported so far); return the access code."""
        return self.add_raters(slug, [name], actor=actor)[name.strip()]

    def add_raters(self, slug: str, names: Iterable[str], *, actor: str = "admin") -> dict[str, str]:
        """Add several raters in one transaction; return ``{name: access code}`` for exactly these raters
        (the codes issued by this call, e.g. for a CSV download next to the button)."""
        names = [str(n).strip() for n in names]
        _check_unique_raters(names)
        created: list[Path] = []
        try:
            with self._writing() as s:
                study = self._study(s, slug)
                _check_not_locked(study, "add a rater")
                codes = {}
                for name in names:
                    if s.scalar(select(Rater.id).where(Rater.study_id == study.id, Rater.name == name)) is not None:
                        raise StudyError(f"rater {name!r} already exists in study {slug!r}; "
                                         f"use reissue_code() for a new code")
                    codes[name] = self._add_rater(s, study, name, actor, created)
        except BaseException:
            _remove(created)
            raise
        return codes

    def reissue_code(self, slug: str, name: str, *, actor: str = "admin") -> str:
        """A new access code for a rater who lost theirs (the old one stops working). Ratings are kept."""
        return self.reissue_codes(slug, [name], actor=actor)[name.strip()]

    def reissue_codes(self, slug: str, names: Iterable[str], *, actor: str = "admin") -> dict[str, str]:
        """New access codes for these raters (their old codes stop working); returns ``{name: new code}``
        for exactly the codes issued by this call."""
        names = [str(n).strip() for n in names]
        with self._writing() as s:
            study = self._study(s, slug)
            codes = {}
            for name in names:
                rater = s.scalar(select(Rater).where(Rater.study_id == study.id, Rater.name == name))
                if rater is None:
                    raise UnknownRaterError(f"no rater {name!r} in study {slug!r}")
                code = new_access_code()
                rater.code_hash = hash_code(code)
                self._audit(s, study.id, actor, "reissue_code", new={"rater": name}, admin=True)
                codes[name] = code
            return codes

    def check_parity(self, slug: str, clips: Iterable[ClipSpec], *, accept: Iterable[str] = ()):
        """Would raters be able to tell the clip sets apart after blinding? Compares ``clips`` together with
        the study's clips imported so far (differences accepted at earlier imports stay accepted); returns a :class:`ophora.study.parity.ParityReport` (``.ok``,
        ``.table`` per clip set with what to change, ``.message``). Nothing is written."""
        from ophora.study import parity

        definition = self.definition(slug)
        clips = list(clips)
        for spec in clips:
            _check_spec(definition, spec)
        with self._read.begin() as s:
            study = self._study(s, slug)
            # Differences accepted at an earlier import stay accepted (they are already in every report).
            accept = set(accept) | {w["property"] for w in json.loads(study.accepted_differences or "[]")}
            earlier = [ClipSpec(Path(c.original_path), c.source, c.model, c.phase, c.instruction, c.clip_set)
                       for c in s.scalars(select(Clip).where(Clip.study_id == study.id))
                       if Path(c.original_path).is_file()]
        new_paths = {Path(c.path).resolve() for c in clips}
        earlier = [c for c in earlier if c.path.resolve() not in new_paths]
        try:
            return parity.check_parity(definition, earlier + clips, accept=accept)
        except ValueError as exc:
            raise StudyError(str(exc)) from None

    def accepted_differences(self, slug: str) -> list[dict]:
        """Parity differences the lead accepted at import (``{property, detail, at, actor}``), for reports."""
        with self._read.begin() as s:
            study = self._study(s, slug)
            return json.loads(study.accepted_differences or "[]")

    def import_clips(self, slug: str, clips: Iterable[ClipSpec], *, blind_dir: str | Path | None = None,
                     actor: str = "admin", accept_differences: Iterable[str] = (),
                     progress: Callable[[int, int], None] | None = None) -> int:
        """Blind and store clips (skipping ones already imported, by content hash); extend every rater's
        order with the new clips. Returns how many were added.

        All or nothing: every clip is checked first, then encoded into a staging folder; the blinded files
        are written (in a random order, repeats as their own copies) inside the database transaction, and
        any failure removes every file of this call and stores no row. ``progress(done, total)`` is called
        after each encoded clip.

        Before anything is encoded the clip sets are compared (:meth:`check_parity`): a difference raters
        could perceive after blinding raises :class:`ParityError` (its ``report.table`` says per clip set what
        differs and what to change) unless it is named in ``accept_differences`` (``fps``, ``size``,
        ``aspect``); an accepted one is recorded with the study and in the audit log."""
        definition = self.definition(slug)
        clips = list(clips)
        report = self.check_parity(slug, clips, accept=accept_differences)
        if not report.ok:
            raise ParityError(report)
        with self._read.begin() as s:
            study = self._study(s, slug)
            _check_not_locked(study, "import clips")
            study_id = study.id
            known = set(s.scalars(select(Clip.sha256).where(Clip.study_id == study_id)))
            target = Path(blind_dir or study.blind_dir or "")
        if not str(target) or str(target) == ".":
            raise StudyError(f"study {slug!r} has no folder for blinded clips; pass blind_dir=")
        todo: list[tuple[ClipSpec, str]] = []
        for spec in clips:
            digest = blinding.sha256_of(spec.path)
            if digest not in known:
                known.add(digest)
                todo.append((spec, digest))
        if not todo:
            return 0
        target = target.resolve()
        staging = target.parent / f".{target.name}-staging-{secrets.token_hex(4)}"
        created: list[Path] = []
        try:
            staging.mkdir(parents=True)
            target.mkdir(parents=True, exist_ok=True)
            staged: dict[Path, Path] = {}  # final blinded path -> encoded file in the staging folder
            rows: list[Clip] = []
            for i, (spec, digest) in enumerate(todo):
                blind_id = blinding.new_blind_id()
                final = target / f"{blind_id}.mp4"
                staged[final] = blinding.blind_copy(spec.path, staging / f"{blind_id}.mp4", definition.blinding)
                rows.append(Clip(study_id=study_id, blind_id=blind_id, clip_set=spec.clip_set, source=spec.source,
                                 model=spec.model, phase=spec.phase, instruction=spec.instruction,
                                 original_path=str(spec.path), sha256=digest, blinded_path=str(final)))
                if progress is not None:
                    progress(i + 1, len(todo))
            with self._writing() as s:
                study = self._study(s, slug)
                _check_not_locked(study, "import clips")
                if blind_dir and not study.blind_dir:
                    study.blind_dir = str(target)
                s.add_all(rows)
                s.flush()
                if report.waived:
                    self._record_waivers(s, study, report.waived, actor)
                for clip in rows:
                    self._audit(s, study_id, actor, "import_clip",
                                new={"clip_id": clip.blind_id, "clip_set": clip.clip_set}, admin=True)
                copies = [(final, final) for final in staged]
                for rater in s.scalars(select(Rater).where(Rater.study_id == study_id)).all():
                    copies += self._extend_order(s, study, rater, definition)
                _write_blinded(copies, staged, created)
        except BaseException:
            _remove(created)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return len(rows)

    def _record_waivers(self, s: Session, study: Study, waived: list[str], actor: str) -> None:
        known = json.loads(study.accepted_differences or "[]")
        for text_ in waived:
            prop = text_.split(":", 1)[0]
            if any(w["detail"] == text_ for w in known):
                continue
            known.append({"property": prop, "detail": text_, "at": _now().isoformat(timespec="seconds"),
                          "actor": actor})
            self._audit(s, study.id, actor, "accept_difference", new={"property": prop, "detail": text_}, admin=True)
        study.accepted_differences = json.dumps(known)

    # ---------------------------------------------------------------- admin: life cycle
    def status(self, slug: str) -> str:
        """``draft`` (set up; no ratings yet), ``open`` (raters rate) or ``locked`` (frozen for analysis)."""
        with self._read.begin() as s:
            return self._study(s, slug).status

    def open_study(self, slug: str, *, actor: str = "admin") -> None:
        """draft -> open: raters can start. Needs at least one clip and one rater."""
        with self._writing() as s:
            study = self._study(s, slug)
            if study.status != "draft":
                raise StudyError(f"study {slug!r} is {study.status}, not a draft; only a draft can be opened")
            if s.scalar(select(func.count()).select_from(Clip).where(Clip.study_id == study.id)) == 0:
                raise StudyError(f"study {slug!r} has no clips yet; import clips before opening it")
            if s.scalar(select(func.count()).select_from(Rater).where(Rater.study_id == study.id)) == 0:
                raise StudyError(f"study {slug!r} has no raters yet; add raters before opening it")
            study.status = "open"
            self._audit(s, study.id, actor, "open_study", old={"status": "draft"}, new={"status": "open"},
                        admin=True)

    def lock_study(self, slug: str, *, actor: str = "admin", reason: str | None = None) -> None:
        """open (or draft) -> locked, before analysis: every later rating, change or import is refused, and
        the lock is in the audit log. A lock cannot be undone (the database refuses it)."""
        with self._writing() as s:
            study = self._study(s, slug)
            if study.status == "locked":
                raise StudyError(f"study {slug!r} is already locked")
            old = study.status
            study.status = "locked"
            self._audit(s, study.id, actor, "lock_study", old={"status": old}, new={"status": "locked"},
                        reason=reason, admin=True)

    def delete_study(self, slug: str, *, actor: str = "admin") -> int:
        """Delete a draft study (it has no ratings) with its raters, clips, audit rows and blinded files.
        Open or locked studies cannot be deleted (the database refuses too). Returns the files removed."""
        with self._writing() as s:
            study = self._study(s, slug)
            if study.status != "draft":
                raise StudyError(f"study {slug!r} is {study.status}: only a draft (before any rating) can be "
                                 f"deleted; lock it instead to stop rating")
            clips = list(s.scalars(select(Clip).where(Clip.study_id == study.id)))
            rater_ids = select(Rater.id).where(Rater.study_id == study.id)
            files = [Path(c.blinded_path) for c in clips]
            files += [Path(p) for p in s.scalars(select(Assignment.alias_path)
                                                 .where(Assignment.rater_id.in_(rater_ids),
                                                        Assignment.alias_path.is_not(None)))]
            s.execute(delete(AuditEntry).where(AuditEntry.study_id == study.id))
            s.execute(delete(Assignment).where(Assignment.rater_id.in_(rater_ids)))
            s.execute(delete(Rater).where(Rater.study_id == study.id))
            s.execute(delete(Clip).where(Clip.study_id == study.id))
            s.execute(delete(Study).where(Study.id == study.id))
            blind_dir = study.blind_dir
        with self._lock:
            self._definitions.pop(study.id, None)
        removed = _remove_files(files)
        if blind_dir and Path(blind_dir).is_dir() and not any(Path(blind_dir).iterdir()):
            Path(blind_dir).rmdir()
        return removed

    def remove_clip(self, slug: str, clip_id: str, *, reason: str, actor: str = "admin") -> None:
        """Remove a clip nobody has rated yet (wrong file, wrong set): its readings leave every rater's order
        (later positions move up), its blinded files are deleted, and the audit log keeps its provenance."""
        _need_reason(reason)
        with self._writing() as s:
            study, clip = self._unrated_clip(s, slug, clip_id, "remove")
            readings = list(s.scalars(select(Assignment).where(Assignment.clip_id == clip.id)))
            files = [Path(clip.blinded_path)] + [Path(a.alias_path) for a in readings if a.alias_path]
            raters = {a.rater_id for a in readings}
            s.execute(delete(Assignment).where(Assignment.clip_id == clip.id))
            for rater_id in raters:  # close the gap: positions stay 1..n (ascending, so never a clash)
                rows = s.scalars(select(Assignment).where(Assignment.rater_id == rater_id).order_by(Assignment.position))
                for i, a in enumerate(list(rows), start=1):
                    if a.position != i:
                        s.execute(update(Assignment).where(Assignment.id == a.id).values(position=i))
            self._audit(s, study.id, actor, "remove_clip", old=_clip_record(clip), reason=reason.strip(), admin=True)
            s.execute(delete(Clip).where(Clip.id == clip.id))
        _remove_files(files)

    def relabel_clip(self, slug: str, clip_id: str, *, reason: str, clip_set: str | None = None,
                     source: str | None = None, model: str | None = None, phase: str | None = None,
                     instruction: str | None = None, actor: str = "admin") -> dict:
        """Correct a clip's provenance (set, source, model, phase, instruction) while nobody has rated it;
        old and new values go to the audit log. Returns the new record."""
        _need_reason(reason)
        definition = self.definition(slug)
        with self._writing() as s:
            study, clip = self._unrated_clip(s, slug, clip_id, "relabel")
            old = _clip_record(clip)
            changes = {k: v for k, v in (("clip_set", clip_set), ("source", source), ("model", model),
                                         ("phase", phase), ("instruction", instruction)) if v is not None}
            if not changes:
                raise StudyError("relabel_clip() was given nothing to change")
            if "phase" in changes:
                matched = definition.match_phase(changes["phase"])
                if matched is None:
                    raise StudyError(f"phase {changes['phase']!r} is not one of {list(definition.phases)}")
                changes["phase"] = matched
            spec = ClipSpec(Path(clip.blinded_path), changes.get("source", clip.source),
                            changes.get("model", clip.model), changes.get("phase", clip.phase),
                            changes.get("instruction", clip.instruction), changes.get("clip_set", clip.clip_set))
            _check_spec(definition, spec)
            if (definition.shows_instruction and definition.instruction_source == "per_clip"
                    and not (spec.instruction or "").strip()):
                raise StudyError("this study shows each clip's own instruction: a clip cannot lose it")
            for key, value in changes.items():
                setattr(clip, key, value)
            self._audit(s, study.id, actor, "relabel_clip", old=old, new=_clip_record(clip), reason=reason.strip(),
                        admin=True)
            return _clip_record(clip)

    def _unrated_clip(self, s: Session, slug: str, clip_id: str, what: str) -> tuple[Study, Clip]:
        study = self._study(s, slug)
        _check_not_locked(study, f"{what} a clip")
        clip = s.scalar(select(Clip).where(Clip.study_id == study.id, Clip.blind_id == clip_id))
        if clip is None:
            raise UnknownClipError(f"no clip {clip_id!r} in study {slug!r} (clip ids are in the clip key)")
        rated = s.scalar(select(func.count()).select_from(Assignment)
                         .where(Assignment.clip_id == clip.id, Assignment.completed_at.is_not(None)))
        if rated:
            raise StudyError(f"clip {clip_id} already has {rated} rating(s): it can no longer be {what}d "
                             f"(ratings are kept; exclude it in the analysis instead)")
        return study, clip

    def definition(self, slug: str) -> StudyDefinition:
        with self._read.begin() as s:
            study = self._study(s, slug)
            return self._definition(study)

    def studies(self) -> list[str]:
        with self._read.begin() as s:
            return list(s.scalars(select(Study.slug).order_by(Study.id)))

    # ---------------------------------------------------------------- rater-facing (blinded)
    def rater_name(self, code: str) -> str:
        """Check an access code (for a login form); the rater's name, or :class:`UnknownRaterError`."""
        with self._read.begin() as s:
            return self._rater(s, code).name

    def next_item(self, code: str) -> BlindItem | None:
        """The rater's first unrated reading (so a returning rater resumes there); ``None`` when finished."""
        with self._read.begin() as s:
            rater = self._rater(s, code)
            study = s.get(Study, rater.study_id)
            _check_open(study)
            total = s.scalar(select(func.count()).where(Assignment.rater_id == rater.id))
            available, _ = self._queue(s, rater, self._definition(study))
            if not available:
                return None  # finished, or only repeats in their washout left: see rater_progress()
            return self._blind_item(s, rater, available[0], total)

    def item_at(self, code: str, position: int) -> BlindItem:
        """A reading by position (for going back to change an answer)."""
        with self._read.begin() as s:
            rater = self._rater(s, code)
            _check_open(s.get(Study, rater.study_id))
            total = s.scalar(select(func.count()).where(Assignment.rater_id == rater.id))
            assignment = s.scalar(select(Assignment).where(Assignment.rater_id == rater.id,
                                                           Assignment.position == position))
            if assignment is None:
                raise UnknownClipError(f"there is no item {position}; positions run from 1 to {total}")
            return self._blind_item(s, rater, assignment, total)

    def rater_progress(self, code: str) -> Progress:
        with self._read.begin() as s:
            return self._progress(s, self._rater(s, code))

    def submit_rating(self, code: str, clip_id: str, scores: dict[str, int], *, phase: str | None = None,
                      turing: str | None = None, confidence: int | None = None, comment: str | None = None,
                      seconds: float | None = None, position: int | None = None) -> None:
        """Record a complete answer for the rater's next unrated reading of ``clip_id`` (or ``position``).

        A second submission for the same reading raises :class:`AlreadyRatedError`: use :meth:`change_rating`,
        which keeps the old answer in the audit log."""
        comment = _check_comment(comment)
        seconds = _check_seconds(seconds)
        # Resolve and validate in a read transaction, so the write lock is held only for the writes.
        with self._read.begin() as s:
            rater = self._rater(s, code)
            study = s.get(Study, rater.study_id)
            _check_open(study)
            definition = self._definition(study)
            assignment_id = self._assignment(s, rater, clip_id, position, want_open=True).id
            available, waiting = self._queue(s, rater, definition)
            if assignment_id not in {a.id for a in available}:
                if s.scalar(select(Assignment.completed_at).where(Assignment.id == assignment_id)) is not None:
                    # answered between the two reads above (read-committed isolation): the same answer sent
                    # twice at once (a double click, two tabs) is a duplicate, as it is one moment later
                    raise AlreadyRatedError(f"clip {clip_id} was already rated by this rater; use change_rating() "
                                            f"with a reason to change the answer")
                raise UnknownClipError(f"clip {clip_id} is not open for rating yet (a repeat reading unlocks after "
                                       f"its washout); rate the clip that next_item() offers")
            clean = _validate(definition, scores, phase, turing, confidence, complete=True)
            study_id, rater_name = study.id, rater.name
        already = AlreadyRatedError(f"clip {clip_id} was already rated by this rater; use change_rating() "
                                    f"with a reason to change the answer")
        now = self._clock()
        try:
            with self._writing() as s:
                _check_open(s.get(Study, study_id))  # the lead may have locked it a moment ago
                claimed = s.execute(update(Assignment)
                                    .where(Assignment.id == assignment_id, Assignment.completed_at.is_(None))
                                    .values(completed_at=now)
                                    .execution_options(synchronize_session=False)).rowcount
                if claimed != 1:  # a concurrent submission of the same reading got there first
                    raise already
                s.execute(insert(Rating), [{"assignment_id": assignment_id, "criterion": name, "score": score,
                                            "version": 1, "rated_at": now} for name, score in clean["scores"].items()])
                s.execute(insert(Answer), [{"assignment_id": assignment_id, "phase_answer": clean.get("phase"),
                                            "turing_answer": clean.get("turing"),
                                            "turing_confidence": clean.get("confidence"), "comment": comment,
                                            "seconds_spent": seconds, "version": 1, "answered_at": now}])
                self._audit(s, study_id, rater_name, "submit", assignment_id=assignment_id,
                            new={**clean, "comment": comment, "seconds": seconds})
        except IntegrityError:
            # Unique constraints are the last line of defence against a duplicate reading.
            raise already from None

    def change_rating(self, code: str, clip_id: str, *, reason: str, scores: dict[str, int] | None = None,
                      phase: str | None = None, turing: str | None = None, confidence: int | None = None,
                      comment: str | None = None, position: int | None = None) -> int:
        """Change a submitted answer: a new version row (the old rows stay; the database refuses to change
        them), with old and new values and the reason in the audit log. Returns the new version number."""
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidRatingError("a changed rating needs a reason (it is kept in the audit log)")
        comment = _check_comment(comment)
        try:
            return self._change_rating(code, clip_id, reason=reason, scores=scores, phase=phase, turing=turing,
                                       confidence=confidence, comment=comment, position=position)
        except IntegrityError:
            # Two changes of one reading at the same moment (PostgreSQL, two sites): one wins, one retries.
            raise StudyError("this answer was changed at the same moment from elsewhere; reload it and "
                             "change it again") from None

    def _change_rating(self, code: str, clip_id: str, *, reason: str, scores, phase, turing, confidence,
                       comment, position) -> int:
        with self._writing() as s:
            rater = self._rater(s, code)
            study = s.get(Study, rater.study_id)
            _check_open(study)
            definition = self._definition(study)
            assignment = self._assignment(s, rater, clip_id, position, want_open=False)
            clean = _validate(definition, scores or {}, phase, turing, confidence, complete=False)
            ratings = _latest_ratings(s, assignment.id)
            answer = _latest_answer_row(s, assignment.id)
            old: dict = {"scores": {}}
            new: dict = {"scores": {}}
            now = self._clock()
            version = max([r.version for r in ratings.values()] + [answer.version]) + 1
            changed_scores = []
            for name, score in clean["scores"].items():
                old["scores"][name] = ratings[name].score
                new["scores"][name] = score
                changed_scores.append({"assignment_id": assignment.id, "criterion": name, "score": score,
                                       "version": version, "rated_at": now})
            row = {"assignment_id": assignment.id, "phase_answer": answer.phase_answer,
                   "turing_answer": answer.turing_answer, "turing_confidence": answer.turing_confidence,
                   "comment": answer.comment, "seconds_spent": answer.seconds_spent, "version": version,
                   "answered_at": now}
            for key, attr in (("phase", "phase_answer"), ("turing", "turing_answer"),
                              ("confidence", "turing_confidence")):
                if key in clean:
                    old[key], new[key] = getattr(answer, attr), clean[key]
                    row[attr] = clean[key]
            if comment is not None:
                old["comment"], new["comment"] = answer.comment, comment
                row["comment"] = comment
            if not new["scores"] and len(new) == 1:
                raise InvalidRatingError("change_rating() was given nothing to change")
            if changed_scores:
                s.execute(insert(Rating), changed_scores)
            s.execute(insert(Answer), [row])
            self._audit(s, study.id, rater.name, "change", assignment_id=assignment.id, old=old, new=new,
                        reason=reason.strip())
            return version

    def latest_answer(self, code: str, clip_id: str, *, position: int | None = None) -> dict | None:
        """The rater's latest answers for one reading (to fill in the form when they go back), or ``None``
        when it is not rated yet.

        ``clip_id`` is the id the rater was shown (``BlindItem.clip_id``; a repeat has its own) and
        ``position`` picks the reading where a clip appears twice. Returns ``{"scores": {criterion: score},
        "phase": ..., "turing": ..., "confidence": ..., "comment": ..., "seconds": ..., "version": n}``
        with the newest version of every value (ratings are append-only: older versions stay stored)."""
        with self._read.begin() as s:
            rater = self._rater(s, code)
            try:
                assignment = self._assignment(s, rater, clip_id, position, want_open=False)
            except NotRatedError:
                return None
            ratings = _latest_ratings(s, assignment.id)
            answer = _latest_answer_row(s, assignment.id)
            return {"scores": {name: r.score for name, r in ratings.items()},
                    "phase": answer.phase_answer if answer else None,
                    "turing": answer.turing_answer if answer else None,
                    "confidence": answer.turing_confidence if answer else None,
                    "comment": answer.comment if answer else None,
                    "seconds": answer.seconds_spent if answer else None,
                    "version": max([r.version for r in ratings.values()] + ([answer.version] if answer else []))}

    # ---------------------------------------------------------------- admin: progress and data
    def progress(self, slug: str) -> list[Progress]:
        with self._read.begin() as s:
            study = self._study(s, slug)
            raters = s.scalars(select(Rater).where(Rater.study_id == study.id).order_by(Rater.name))
            return [self._progress(s, r) for r in raters]

    def audit_log(self, slug: str):
        """The full history as a DataFrame (admin only: it names raters)."""
        import pandas as pd

        with self._read.begin() as s:
            study = self._study(s, slug)
            rows = s.execute(select(AuditEntry).where(AuditEntry.study_id == study.id).order_by(AuditEntry.id))
            return pd.DataFrame([{
                "id": e.id, "at": e.at, "actor": e.actor, "action": e.action, "assignment_id": e.assignment_id,
                "old_value": e.old_value, "new_value": e.new_value, "reason": e.reason, "is_admin": e.is_admin,
            } for (e,) in rows], columns=["id", "at", "actor", "action", "assignment_id", "old_value",
                                           "new_value", "reason", "is_admin"])

    def ratings_frame(self, slug: str):
        """All ratings, unblinded, as a tidy DataFrame: one row per rater x clip reading x criterion."""
        import pandas as pd

        columns = ["study", "rater", "clip_id", "clip_set", "source", "model", "phase", "instruction", "reading",
                   "position", "criterion", "score", "version", "phase_answer", "phase_correct", "turing_answer",
                   "turing_confidence", "turing_correct", "comment", "seconds_spent", "rated_at"]
        with self._read.begin() as s:
            study = self._study(s, slug)
            # Ratings and answers are append-only: take each one's newest version.
            newest_rating = (select(Rating.assignment_id, Rating.criterion, func.max(Rating.version).label("v"))
                             .group_by(Rating.assignment_id, Rating.criterion).subquery())
            newest_answer = (select(Answer.assignment_id, func.max(Answer.version).label("v"))
                             .group_by(Answer.assignment_id).subquery())
            query = (select(Rater.name, Clip, Assignment.reading, Assignment.position, Rating, Answer)
                     .join(Assignment, Assignment.rater_id == Rater.id)
                     .join(Clip, Clip.id == Assignment.clip_id)
                     .join(Rating, Rating.assignment_id == Assignment.id)
                     .join(newest_rating, (newest_rating.c.assignment_id == Rating.assignment_id)
                           & (newest_rating.c.criterion == Rating.criterion) & (newest_rating.c.v == Rating.version))
                     .outerjoin(newest_answer, newest_answer.c.assignment_id == Assignment.id)
                     .outerjoin(Answer, (Answer.assignment_id == Assignment.id) & (Answer.version == newest_answer.c.v))
                     .where(Rater.study_id == study.id)
                     .order_by(Rater.name, Assignment.position, Rating.criterion))
            rows = []
            for rater, clip, reading, position, rating, answer in s.execute(query):
                truth = "synthetic" if clip.source == "generated" else "real"
                rows.append({
                    "study": study.slug, "rater": rater, "clip_id": clip.blind_id, "clip_set": clip.clip_set,
                    "source": clip.source, "model": clip.model, "phase": clip.phase, "instruction": clip.instruction,
                    "reading": reading, "position": position, "criterion": rating.criterion, "score": rating.score,
                    "version": rating.version,
                    "phase_answer": answer.phase_answer if answer else None,
                    "phase_correct": (answer.phase_answer == clip.phase) if answer and answer.phase_answer else None,
                    "turing_answer": answer.turing_answer if answer else None,
                    "turing_confidence": answer.turing_confidence if answer else None,
                    "turing_correct": (answer.turing_answer == truth) if answer and answer.turing_answer else None,
                    "comment": answer.comment if answer else None,
                    "seconds_spent": answer.seconds_spent if answer else None,
                    "rated_at": rating.rated_at,
                })
        return pd.DataFrame(rows, columns=columns)

    def clips_frame(self, slug: str):
        """The unblinding key (admin only): blind id -> source, model, phase, instruction, original file."""
        import pandas as pd

        with self._read.begin() as s:
            study = self._study(s, slug)
            clips = s.scalars(select(Clip).where(Clip.study_id == study.id).order_by(Clip.id))
            return pd.DataFrame([{"clip_id": c.blind_id, "clip_set": c.clip_set, "source": c.source, "model": c.model,
                                  "phase": c.phase, "instruction": c.instruction, "original_path": c.original_path,
                                  "blinded_path": c.blinded_path, "sha256": c.sha256} for c in clips])

    # ---------------------------------------------------------------- internals
    def _study(self, s: Session, slug: str) -> Study:
        study = s.scalar(select(Study).where(Study.slug == slug))
        if study is None:
            known = list(s.scalars(select(Study.slug)))
            raise UnknownStudyError(f"no study {slug!r} in this database (studies here: {known or 'none'}); "
                                    f"create it with `python -m ophora study create STUDY.yaml`")
        return study

    def _definition(self, study: Study) -> StudyDefinition:
        with self._lock:
            cached = self._definitions.get(study.id)
        if cached is None:
            cached = parse_definition(yaml.safe_load(study.definition_yaml), where=f"study {study.slug!r}",
                                      default_slug=study.slug, check_paths=False)
            with self._lock:
                self._definitions[study.id] = cached
        return cached

    def _rater(self, s: Session, code: str) -> Rater:
        rater = s.scalar(select(Rater).where(Rater.code_hash == hash_code(code or "")))
        if rater is None:
            raise UnknownRaterError("unknown access code: check it for typos or ask the study lead for a new one")
        return rater

    def _add_rater(self, s: Session, study: Study, name: str, actor: str, created: list[Path]) -> str:
        if not isinstance(name, str) or not name.strip():
            raise StudyError("a rater needs a non-empty name")
        code = new_access_code()
        rater = Rater(study_id=study.id, name=name.strip(), code_hash=hash_code(code))
        s.add(rater)
        s.flush()
        self._audit(s, study.id, actor, "add_rater", new={"rater": rater.name}, admin=True)
        _write_blinded(self._extend_order(s, study, rater, self._definition(study)), {}, created)
        return code

    def _extend_order(self, s: Session, study: Study, rater: Rater,
                      definition: StudyDefinition) -> list[tuple[Path, Path]]:
        """Append clips this rater has not been given yet, in an order seeded by (study seed, rater, count),
        then the repeat readings (once), so every rater's order is random, independent and reproducible.
        Returns the repeat copies to write: (blinded file, copy) pairs."""
        existing = list(s.execute(select(Assignment.clip_id, Assignment.reading).where(Assignment.rater_id == rater.id)))
        first = {clip_id for clip_id, reading in existing if reading == 0}
        has_repeats = any(reading > 0 for _, reading in existing)
        clip_ids = sorted(s.scalars(select(Clip.id).where(Clip.study_id == study.id)))
        new = [c for c in clip_ids if c not in first]
        copies: list[tuple[Path, Path]] = []
        if not new:
            return copies
        rng = random.Random(f"{study.seed}:{rater.name}:{len(existing)}")
        rng.shuffle(new)
        position = len(existing)
        for clip_id in new:
            position += 1
            s.add(Assignment(rater_id=rater.id, clip_id=clip_id, position=position, reading=0))
        if definition.repeats.count and not has_repeats:
            pool = sorted(first | set(new))
            gap = definition.repeats.after_items
            if gap is not None:
                # Repeats come after every first reading, so a clip at first position p is followed by
                # (firsts - p) readings: only clips with enough readings after them can meet the washout.
                positions = dict(s.execute(select(Assignment.clip_id, Assignment.position)
                                           .where(Assignment.rater_id == rater.id, Assignment.reading == 0)).all())
                positions.update({c: len(existing) + i + 1 for i, c in enumerate(new)})
                pool = [c for c in pool if position - positions[c] >= gap]
                if len(pool) < min(definition.repeats.count, len(positions)):
                    raise StudyError(f"repeats.after_items is {gap}, but with {len(positions)} clips only "
                                     f"{len(pool)} can be repeated after that many other readings; lower "
                                     f"'after_items' or 'count', or add clips")
            for clip_id in rng.sample(pool, min(definition.repeats.count, len(pool))):
                position += 1
                src = Path(s.get(Clip, clip_id).blinded_path)
                alias_id = blinding.new_blind_id()
                alias_path = src.with_name(f"{alias_id}{src.suffix}")
                copies.append((src, alias_path))
                s.add(Assignment(rater_id=rater.id, clip_id=clip_id, position=position, reading=1,
                                 alias_id=alias_id, alias_path=str(alias_path)))
        s.flush()
        return copies

    def _assignment(self, s: Session, rater: Rater, clip_id: str, position: int | None, *, want_open: bool) -> Assignment:
        aliased = s.scalar(select(Assignment).where(Assignment.alias_id == clip_id))
        if aliased is not None:  # a repeat reading, known to the rater under its own opaque id
            if aliased.rater_id != rater.id:
                raise UnknownClipError(f"clip {clip_id!r} is not assigned to this rater")
            query = select(Assignment).where(Assignment.id == aliased.id)
        else:
            clip = s.scalar(select(Clip).where(Clip.blind_id == clip_id, Clip.study_id == rater.study_id))
            if clip is None:
                raise UnknownClipError(f"unknown clip {clip_id!r}: it is not part of this study")
            query = select(Assignment).where(Assignment.rater_id == rater.id, Assignment.clip_id == clip.id,
                                             Assignment.alias_id.is_(None))
        if position is not None:
            query = query.where(Assignment.position == position)
        readings = list(s.scalars(query.order_by(Assignment.position)))
        if not readings:
            raise UnknownClipError(f"clip {clip_id!r} is not assigned to this rater"
                                   + (f" at position {position}" if position is not None else ""))
        if want_open:
            open_ = [a for a in readings if a.completed_at is None]
            if not open_:
                raise AlreadyRatedError(f"clip {clip_id} was already rated by this rater; use change_rating() "
                                        f"with a reason to change the answer")
            return open_[0]
        done = [a for a in readings if a.completed_at is not None]
        if not done:
            raise NotRatedError(f"clip {clip_id} has not been rated yet; submit a rating before changing it")
        return done[-1] if position is None else done[0]

    def _blind_item(self, s: Session, rater: Rater, a: Assignment, total: int) -> BlindItem:
        study = s.get(Study, rater.study_id)
        definition = self._definition(study)
        clip = s.get(Clip, a.clip_id)
        if not definition.shows_instruction:
            instruction = None
        elif definition.instruction_source == "phase_template":
            instruction = phase_wording(clip.phase) if clip.phase else None  # same words, real or generated
        else:
            instruction = clip.instruction
        return BlindItem(
            clip_id=a.alias_id or clip.blind_id, video_path=a.alias_path or clip.blinded_path,
            position=a.position, total=total,
            instruction=instruction,
            criteria=tuple({"name": c.name, "description": c.description, "shows_instruction": c.shows_instruction,
                            **c.scale.as_dict()} for c in definition.criteria),
            ask_phase=definition.ask_phase, phases=definition.phases if definition.ask_phase else (),
            turing_test=definition.turing_test,
            turing_confidence=definition.turing_confidence.as_dict() if definition.turing_confidence else None,
            study_title=definition.title, study_instructions=definition.instructions,
        )

    def _progress(self, s: Session, rater: Rater) -> Progress:
        total = s.scalar(select(func.count()).where(Assignment.rater_id == rater.id))
        done = s.scalar(select(func.count()).where(Assignment.rater_id == rater.id,
                                                   Assignment.completed_at.is_not(None)))
        available, waiting = self._queue(s, rater, self._definition(s.get(Study, rater.study_id)))
        times = [t for _, t, _ in waiting if t is not None]
        items = [n for _, _, n in waiting if n is not None]
        return Progress(rater=rater.name, done=done, total=total,
                        next_position=available[0].position if available else None, waiting=len(waiting),
                        unlocks_at=min(times) if times else None, unlocks_after_items=min(items) if items else None)

    def _queue(self, s: Session, rater: Rater, definition: StudyDefinition):
        """Open readings the rater may rate now (by position), and the waiting ones as (assignment, unlock
        time, readings still to rate): a repeat waits for its first reading and then for the washout."""
        rows = list(s.scalars(select(Assignment).where(Assignment.rater_id == rater.id).order_by(Assignment.position)))
        first_done = {a.clip_id: _utc(a.completed_at) for a in rows if a.reading == 0 and a.completed_at is not None}
        completed = sorted(_utc(a.completed_at) for a in rows if a.completed_at is not None)
        now = self._clock()
        washout = definition.repeats
        available: list[Assignment] = []
        waiting: list[tuple[Assignment, datetime | None, int | None]] = []
        for a in rows:
            if a.completed_at is not None:
                continue
            if a.reading == 0:
                available.append(a)
                continue
            first = first_done.get(a.clip_id)
            if first is None:
                waiting.append((a, None, None))
            elif washout.after_days is not None and now < first + timedelta(days=washout.after_days):
                waiting.append((a, first + timedelta(days=washout.after_days), None))
            elif washout.after_items is not None and sum(t > first for t in completed) < washout.after_items:
                waiting.append((a, None, washout.after_items - sum(t > first for t in completed)))
            else:
                available.append(a)
        if not available and waiting and all(t is None for _, t, _ in waiting):
            # Only item-count washouts are left and nothing else to rate (e.g. a clip was removed): the gap
            # cannot grow any more, so offer them rather than leave the rater stuck.
            available = [a for a, _, _ in waiting if a.clip_id in first_done]
            waiting = [w for w in waiting if w[0].clip_id not in first_done]
        available.sort(key=lambda a: a.position)
        return available, waiting

    @staticmethod
    def _audit(s: Session, study_id: int, actor: str, action: str, *, assignment_id: int | None = None,
               old: dict | None = None, new: dict | None = None, reason: str | None = None, admin: bool = False) -> None:
        s.add(AuditEntry(study_id=study_id, at=_now(), actor=actor, action=action, assignment_id=assignment_id,
                         old_value=json.dumps(old, sort_keys=True) if old is not None else None,
                         new_value=json.dumps(new, sort_keys=True) if new is not None else None,
                         reason=reason, is_admin=admin))


MAX_COMMENT_CHARS = 5000


def _utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes (stored as UTC); PostgreSQL aware ones."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _check_open(study: Study) -> None:
    """Ratings are taken only while a study is open (not while the lead sets it up, not once locked)."""
    if study.status == "draft":
        raise StudyError(f"study {study.slug!r} is not open for rating yet; the study lead opens it "
                         f"(`python -m ophora study open {study.slug}`) once clips and raters are set up")
    if study.status == "locked":
        raise StudyError(f"study {study.slug!r} is locked for analysis: no rating can be added or changed")


def _check_comment(comment) -> str | None:
    if comment is None:
        return None
    if not isinstance(comment, str):
        raise InvalidRatingError(f"a comment must be text, got {type(comment).__name__}")
    if len(comment) > MAX_COMMENT_CHARS:
        raise InvalidRatingError(f"the comment has {len(comment)} characters; shorten it to at most "
                                 f"{MAX_COMMENT_CHARS}")
    return comment


def _check_seconds(seconds) -> float | None:
    """Time spent on a clip: a finite number >= 0 (numpy numbers accepted), or ``None``."""
    import math
    import numbers

    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) or not math.isfinite(float(seconds)) \
            or float(seconds) < 0:
        raise InvalidRatingError(f"seconds spent must be a finite number >= 0, got {seconds!r}")
    return float(seconds)


def _latest_ratings(s: Session, assignment_id: int) -> dict[str, Rating]:
    """The newest version of each criterion's score for one reading."""
    out: dict[str, Rating] = {}
    for r in s.scalars(select(Rating).where(Rating.assignment_id == assignment_id).order_by(Rating.version)):
        out[r.criterion] = r
    return out


def _latest_answer_row(s: Session, assignment_id: int) -> Answer | None:
    return s.scalar(select(Answer).where(Answer.assignment_id == assignment_id)
                    .order_by(Answer.version.desc()).limit(1))


def _check_spec(definition: StudyDefinition, spec: ClipSpec) -> None:
    """Clips built in code (the app) get the same checks as clips from a study file."""
    from ophora.study.definition import SOURCES

    where = f"clip {spec.path}"
    if not Path(spec.path).is_file():
        raise StudyError(f"{where}: no such file")
    if spec.source not in SOURCES:
        raise StudyError(f"{where}: source must be 'real' or 'generated', got {spec.source!r}")
    if not spec.model:
        raise StudyError(f"{where}: model is empty (use 'real' for real clips, the model name for generated ones)")
    if spec.phase is not None and definition.match_phase(spec.phase) != spec.phase:
        raise StudyError(f"{where}: phase {spec.phase!r} is not one of the study's phases {list(definition.phases)}")


def _write_blinded(copies: list[tuple[Path, Path]], staged: dict[Path, Path], created: list[Path]) -> None:
    """Write blinded files in a random order (creation order and inode numbers must not follow clip sets
    or reveal repeats), each its own file (no hard links: a link count of 2 would mark a repeat), all with
    one fixed modification time. ``copies`` are (blinded path, destination) pairs; the bytes come from the
    staging folder where ``staged`` has them. Every file made is appended to ``created``."""
    order = list(copies)
    random.SystemRandom().shuffle(order)
    for src, dst in order:
        tmp = dst.with_name(dst.stem + ".part")
        shutil.copyfile(staged.get(src, src), tmp)
        created.append(dst)
        os.replace(tmp, dst)
        os.utime(dst, (blinding.FIXED_MTIME, blinding.FIXED_MTIME))


def _need_reason(reason) -> None:
    if not isinstance(reason, str) or not reason.strip():
        raise StudyError("give a reason (it is kept in the audit log)")


def _clip_record(clip: Clip) -> dict:
    return {"clip_id": clip.blind_id, "clip_set": clip.clip_set, "source": clip.source, "model": clip.model,
            "phase": clip.phase, "instruction": clip.instruction, "original_path": clip.original_path}


def _remove_files(paths: Iterable[Path]) -> int:
    removed = 0
    for path in paths:
        if Path(path).is_file():
            Path(path).unlink()
            removed += 1
    return removed


def _remove(paths: Iterable[Path]) -> None:
    """Undo the files of a failed call (all-or-nothing)."""
    for path in paths:
        Path(path).unlink(missing_ok=True)
        Path(path).with_name(Path(path).stem + ".part").unlink(missing_ok=True)


def _check_unique_raters(names: Iterable[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise StudyError("a rater needs a non-empty name")
        if name.strip() in seen:
            raise StudyError(f"rater {name.strip()!r} is listed twice (names are compared without surrounding spaces)")
        seen.add(name.strip())


def _check_not_locked(study: Study, what: str) -> None:
    if study.status == "locked":
        raise StudyError(f"study {study.slug!r} is locked for analysis; cannot {what}")


def _validate(definition: StudyDefinition, scores: dict, phase, turing, confidence, *, complete: bool) -> dict:
    """Check an answer against the study's scales and vocabularies; raise :class:`InvalidRatingError`."""
    if not isinstance(scores, dict):
        raise InvalidRatingError("scores must be a mapping {criterion: score}")
    names = [c.name for c in definition.criteria]
    unknown = sorted(set(scores) - set(names))
    if unknown:
        raise InvalidRatingError(f"unknown criterion {unknown}; this study rates {names}")
    missing = [n for n in names if n not in scores]
    if complete and missing:
        raise InvalidRatingError(f"missing scores for {missing}; every criterion must be rated")
    out: dict = {"scores": {}}
    for name, value in scores.items():
        try:
            out["scores"][name] = definition.criterion(name).scale.check(value, f"score for {name!r}")
        except ValueError as exc:
            raise InvalidRatingError(str(exc)) from None
    if phase is not None or (complete and definition.ask_phase):
        if not definition.ask_phase:
            raise InvalidRatingError("this study does not ask raters to name the phase")
        matched = definition.match_phase(phase)
        if matched is None:
            raise InvalidRatingError(f"phase answer {phase!r} is not one of {list(definition.phases)}")
        out["phase"] = matched
    if turing is not None or confidence is not None or (complete and definition.turing_test):
        if not definition.turing_test:
            raise InvalidRatingError("this study has no real-or-synthetic question")
        if turing is not None or complete:
            if turing not in TURING_ANSWERS:
                raise InvalidRatingError(f"real-or-synthetic answer must be 'real' or 'synthetic', got {turing!r}")
            out["turing"] = turing
        if confidence is not None or complete:
            try:
                out["confidence"] = definition.turing_confidence.check(confidence, "confidence")
            except ValueError as exc:
                raise InvalidRatingError(str(exc)) from None
    return out


def _definition_to_dict(d: StudyDefinition) -> dict:
    """A YAML-able form for definitions built in code (files keep their own text)."""
    return {
        "slug": d.slug, "title": d.title, "instructions": d.instructions,
        "criteria": [c.model_dump() for c in d.criteria],
        "phases": list(d.phases), "ask_phase": d.ask_phase,
        "turing_test": ({"enabled": True, "confidence": d.turing_confidence.model_dump()}
                        if d.turing_test and d.turing_confidence else False),
        "instruction_source": d.instruction_source,
        "clip_sets": [{"name": c.name, "source": c.source, "model": c.model,
                       **({"folder": str(c.folder)} if c.folder else {"manifest": str(c.manifest)}),
                       **({"phase": c.phase} if c.phase else {})} for c in d.clip_sets],
        "raters": list(d.raters), "repeats": d.repeats.model_dump(exclude_none=True), "seed": d.seed,
        "blinding": d.blinding.model_dump(exclude_none=True),
    }
