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
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from contextlib import contextmanager
from typing import Iterable, Iterator

import yaml
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ophora.study import blinding
from ophora.study.db import READ_ONLY, make_engine, upgrade
from ophora.study.definition import ClipSpec, StudyDefinition, parse_definition
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
    rater: str
    done: int
    total: int
    next_position: int | None

    @property
    def finished(self) -> bool:
        return self.done >= self.total


def hash_code(code: str) -> str:
    """Access codes are random (64+ bits), so a plain SHA-256 is enough; the code itself is never stored."""
    return hashlib.sha256(code.strip().encode("utf-8")).hexdigest()


def new_access_code() -> str:
    return "-".join(secrets.token_hex(3) for _ in range(4))


def _now() -> datetime:
    return datetime.now(timezone.utc)


class StudyStore:
    """A study database (SQLite path/URL or PostgreSQL URL), migrated to the current schema on open."""

    def __init__(self, url: str | Path, *, migrate: bool = True, **engine_kwargs) -> None:
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
        """Store the study and its raters; return ``{rater: access code}`` (shown once, stored only hashed)."""
        with self._writing() as s:
            if s.scalar(select(Study.id).where(Study.slug == definition.slug)) is not None:
                raise StudyError(f"a study {definition.slug!r} already exists in this database; "
                                 f"choose another 'slug' or use `study import` to add clips to it")
            text = definition.source_text or yaml.safe_dump(_definition_to_dict(definition), sort_keys=False)
            study = Study(slug=definition.slug, title=definition.title, definition_yaml=text, seed=definition.seed,
                          blind_dir=str(Path(blind_dir).resolve()) if blind_dir else None)
            s.add(study)
            s.flush()
            self._audit(s, study.id, actor, "create_study", new={"slug": definition.slug}, admin=True)
            codes = {name: self._add_rater(s, study, name, actor) for name in definition.raters}
        return codes

    def add_rater(self, slug: str, name: str, *, actor: str = "admin") -> str:
        """Add a rater (with a seeded random order over the clips imported so far); return the access code."""
        with self._writing() as s:
            study = self._study(s, slug)
            if s.scalar(select(Rater.id).where(Rater.study_id == study.id, Rater.name == name)) is not None:
                raise StudyError(f"rater {name!r} already exists in study {slug!r}; use reissue_code() for a new code")
            return self._add_rater(s, study, name, actor)

    def reissue_code(self, slug: str, name: str, *, actor: str = "admin") -> str:
        """A new access code for a rater who lost theirs (the old one stops working). Ratings are kept."""
        with self._writing() as s:
            study = self._study(s, slug)
            rater = s.scalar(select(Rater).where(Rater.study_id == study.id, Rater.name == name))
            if rater is None:
                raise UnknownRaterError(f"no rater {name!r} in study {slug!r}")
            code = new_access_code()
            rater.code_hash = hash_code(code)
            self._audit(s, study.id, actor, "reissue_code", new={"rater": name}, admin=True)
            return code

    def import_clips(self, slug: str, clips: Iterable[ClipSpec], *, blind_dir: str | Path | None = None,
                     actor: str = "admin") -> int:
        """Blind and store clips (skipping ones already imported, by content hash); extend every rater's
        order with the new clips. Returns how many were added."""
        definition = self.definition(slug)
        with self._read.begin() as s:
            study = self._study(s, slug)
            study_id = study.id
            known = set(s.scalars(select(Clip.sha256).where(Clip.study_id == study_id)))
            target = Path(blind_dir or study.blind_dir or "")
        if not str(target) or str(target) == ".":
            raise StudyError(f"study {slug!r} has no folder for blinded clips; pass blind_dir=")
        target.mkdir(parents=True, exist_ok=True)
        staged: list[Clip] = []
        for spec in clips:
            _check_spec(definition, spec)
            digest = blinding.sha256_of(spec.path)
            if digest in known:
                continue
            known.add(digest)
            blind_id = blinding.new_blind_id()
            out = blinding.blind_copy(spec.path, target / f"{blind_id}.mp4", definition.blinding)
            staged.append(Clip(study_id=study_id, blind_id=blind_id, clip_set=spec.clip_set, source=spec.source,
                               model=spec.model, phase=spec.phase, instruction=spec.instruction,
                               original_path=str(spec.path), sha256=digest, blinded_path=str(out.resolve())))
        with self._writing() as s:
            study = self._study(s, slug)
            if blind_dir and not study.blind_dir:
                study.blind_dir = str(target.resolve())
            s.add_all(staged)
            s.flush()
            for clip in staged:
                self._audit(s, study_id, actor, "import_clip",
                            new={"clip_id": clip.blind_id, "clip_set": clip.clip_set}, admin=True)
            for rater in s.scalars(select(Rater).where(Rater.study_id == study_id)).all():
                self._extend_order(s, study, rater, definition)
        return len(staged)

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
            total = s.scalar(select(func.count()).where(Assignment.rater_id == rater.id))
            assignment = s.scalar(select(Assignment).where(Assignment.rater_id == rater.id,
                                                           Assignment.completed_at.is_(None))
                                  .order_by(Assignment.position).limit(1))
            if assignment is None:
                return None
            return self._blind_item(s, rater, assignment, total)

    def item_at(self, code: str, position: int) -> BlindItem:
        """A reading by position (for going back to change an answer)."""
        with self._read.begin() as s:
            rater = self._rater(s, code)
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
        # Resolve and validate in a read transaction, so the write lock is held only for the writes.
        with self._read.begin() as s:
            rater = self._rater(s, code)
            study = s.get(Study, rater.study_id)
            definition = self._definition(study)
            assignment_id = self._assignment(s, rater, clip_id, position, want_open=True).id
            clean = _validate(definition, scores, phase, turing, confidence, complete=True)
            study_id, rater_name = study.id, rater.name
        already = AlreadyRatedError(f"clip {clip_id} was already rated by this rater; use change_rating() "
                                    f"with a reason to change the answer")
        now = _now()
        try:
            with self._writing() as s:
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
        """Change a submitted answer in place, appending old and new values and the reason to the audit log.
        Returns the new version number."""
        if not reason or not reason.strip():
            raise InvalidRatingError("a changed rating needs a reason (it is kept in the audit log)")
        with self._writing() as s:
            rater = self._rater(s, code)
            study = s.get(Study, rater.study_id)
            definition = self._definition(study)
            assignment = self._assignment(s, rater, clip_id, position, want_open=False)
            clean = _validate(definition, scores or {}, phase, turing, confidence, complete=False)
            ratings = {r.criterion: r for r in s.scalars(select(Rating).where(Rating.assignment_id == assignment.id))}
            answer = s.scalar(select(Answer).where(Answer.assignment_id == assignment.id))
            old: dict = {"scores": {}}
            new: dict = {"scores": {}}
            now = _now()
            version = max([r.version for r in ratings.values()] + [answer.version]) + 1
            for name, score in clean["scores"].items():
                old["scores"][name] = ratings[name].score
                new["scores"][name] = score
                ratings[name].score, ratings[name].version, ratings[name].rated_at = score, version, now
            for key, attr in (("phase", "phase_answer"), ("turing", "turing_answer"),
                              ("confidence", "turing_confidence")):
                if key in clean:
                    old[key], new[key] = getattr(answer, attr), clean[key]
                    setattr(answer, attr, clean[key])
            if comment is not None:
                old["comment"], new["comment"] = answer.comment, comment
                answer.comment = comment
            if not new["scores"] and len(new) == 1:
                raise InvalidRatingError("change_rating() was given nothing to change")
            answer.version, answer.answered_at = version, now
            self._audit(s, study.id, rater.name, "change", assignment_id=assignment.id, old=old, new=new,
                        reason=reason.strip())
            return version

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
            query = (select(Rater.name, Clip, Assignment.reading, Assignment.position, Rating, Answer)
                     .join(Assignment, Assignment.rater_id == Rater.id)
                     .join(Clip, Clip.id == Assignment.clip_id)
                     .join(Rating, Rating.assignment_id == Assignment.id)
                     .outerjoin(Answer, Answer.assignment_id == Assignment.id)
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

    def _add_rater(self, s: Session, study: Study, name: str, actor: str) -> str:
        if not name or not name.strip():
            raise StudyError("a rater needs a non-empty name")
        code = new_access_code()
        rater = Rater(study_id=study.id, name=name.strip(), code_hash=hash_code(code))
        s.add(rater)
        s.flush()
        self._audit(s, study.id, actor, "add_rater", new={"rater": rater.name}, admin=True)
        self._extend_order(s, study, rater, self._definition(study))
        return code

    def _extend_order(self, s: Session, study: Study, rater: Rater, definition: StudyDefinition) -> None:
        """Append clips this rater has not been given yet, in an order seeded by (study seed, rater, count),
        then the repeat readings (once), so every rater's order is random, independent and reproducible."""
        existing = list(s.execute(select(Assignment.clip_id, Assignment.reading).where(Assignment.rater_id == rater.id)))
        first = {clip_id for clip_id, reading in existing if reading == 0}
        has_repeats = any(reading > 0 for _, reading in existing)
        clip_ids = sorted(s.scalars(select(Clip.id).where(Clip.study_id == study.id)))
        new = [c for c in clip_ids if c not in first]
        if not new:
            return
        rng = random.Random(f"{study.seed}:{rater.name}:{len(existing)}")
        rng.shuffle(new)
        position = len(existing)
        for clip_id in new:
            position += 1
            s.add(Assignment(rater_id=rater.id, clip_id=clip_id, position=position, reading=0))
        if definition.repeats and not has_repeats:
            pool = sorted(first | set(new))
            for clip_id in rng.sample(pool, min(definition.repeats, len(pool))):
                position += 1
                alias_id, alias_path = _alias(s.get(Clip, clip_id))
                s.add(Assignment(rater_id=rater.id, clip_id=clip_id, position=position, reading=1,
                                 alias_id=alias_id, alias_path=alias_path))
        s.flush()

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
        needs_instruction = any(c.shows_instruction for c in definition.criteria)
        return BlindItem(
            clip_id=a.alias_id or clip.blind_id, video_path=a.alias_path or clip.blinded_path,
            position=a.position, total=total,
            instruction=clip.instruction if needs_instruction else None,
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
        nxt = s.scalar(select(func.min(Assignment.position)).where(Assignment.rater_id == rater.id,
                                                                   Assignment.completed_at.is_(None)))
        return Progress(rater=rater.name, done=done, total=total, next_position=nxt)

    @staticmethod
    def _audit(s: Session, study_id: int, actor: str, action: str, *, assignment_id: int | None = None,
               old: dict | None = None, new: dict | None = None, reason: str | None = None, admin: bool = False) -> None:
        s.add(AuditEntry(study_id=study_id, at=_now(), actor=actor, action=action, assignment_id=assignment_id,
                         old_value=json.dumps(old, sort_keys=True) if old is not None else None,
                         new_value=json.dumps(new, sort_keys=True) if new is not None else None,
                         reason=reason, is_admin=admin))


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


def _alias(clip: Clip) -> tuple[str, str]:
    """A second opaque name for a clip's blinded file (hard link; a copy where links are not possible)."""
    import shutil

    alias_id = blinding.new_blind_id()
    src = Path(clip.blinded_path)
    dst = src.with_name(f"{alias_id}{src.suffix}")
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
        os.utime(dst, (blinding.FIXED_MTIME, blinding.FIXED_MTIME))
    return alias_id, str(dst)


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
        "criteria": [{"name": c.name, "description": c.description, "shows_instruction": c.shows_instruction,
                      "scale": {"min": c.scale.min, "max": c.scale.max, "anchors": dict(c.scale.anchors)}}
                     for c in d.criteria],
        "phases": list(d.phases), "ask_phase": d.ask_phase,
        "turing_test": ({"enabled": True, "confidence": {"min": d.turing_confidence.min, "max": d.turing_confidence.max,
                                                         "anchors": dict(d.turing_confidence.anchors)}}
                        if d.turing_test and d.turing_confidence else False),
        "clip_sets": [{"name": c.name, "source": c.source, "model": c.model,
                       **({"folder": str(c.folder)} if c.folder else {"manifest": str(c.manifest)}),
                       **({"phase": c.phase} if c.phase else {})} for c in d.clip_sets],
        "raters": list(d.raters), "repeats": d.repeats, "seed": d.seed,
        "blinding": {k: v for k, v in vars(d.blinding).items() if v is not None},
    }
