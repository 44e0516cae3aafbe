"""The rater flow: access code -> next blinded reading -> submit or change an answer. Part of
:class:`~ophora.study.store.StudyStore`; everything returned here is blinded (:class:`BlindItem`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ophora.study.definition import StudyDefinition, phase_wording, shown
from ophora.study.models import Answer, Assignment, Clip, Rater, Rating, Study
from ophora.study.store_core import (STUDY_KEY, AlreadyRatedError, InvalidRatingError, NotRatedError, StoreCore,
                                     StudyError, UnknownClipError, _insert, _record, _utc)

TURING_ANSWERS = ("real", "synthetic")


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



# Statements of the rating path, built once (building them per call cost more than running them).
# Claim a reading: only while it is open and its study too (the lead may lock it at any moment).
CLAIM = (update(Assignment)
         .where(Assignment.id == bindparam("claim_id"), Assignment.completed_at.is_(None),
                select(Study.status).where(Study.id == bindparam("claim_study")).scalar_subquery() == "open")
         .values(completed_at=bindparam("claim_at")).returning(*Assignment.__table__.c)
         .execution_options(synchronize_session=False))
# A rater's readings of the clip shown as ``clip`` (a repeat has its own id), optionally at one position.
READINGS = (select(Assignment).join(Clip, Clip.id == Assignment.clip_id)
            .where(Assignment.rater_id == bindparam("rater"),
                   or_(Assignment.alias_id == bindparam("clip"),
                       (Clip.blind_id == bindparam("clip")) & Assignment.alias_id.is_(None))))
READINGS_AT = READINGS.where(Assignment.position == bindparam("position")).order_by(Assignment.position)
READINGS = READINGS.order_by(Assignment.position)


class RaterFlow(StoreCore):
    """Rater-facing functions (by access code): they return only blinded data."""

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
        already = AlreadyRatedError(f"clip {clip_id} was already rated by this rater; use change_rating() "
                                    f"with a reason to change the answer")
        # Resolve and validate in a read transaction, so the write lock is held only for the writes.
        with self._read.begin() as s:
            rater, study = self._rater_and_study(s, code)
            _check_open(study)
            definition = self._definition(study)
            reading = self._assignment(s, rater, clip_id, position, want_open=True)
            # A first reading is always open; only a repeat waits (for its first reading and the washout).
            if reading.reading > 0 and reading.id not in {a.id for a in self._queue(s, rater, definition)[0]}:
                if s.scalar(select(Assignment.completed_at).where(Assignment.id == reading.id)) is not None:
                    # answered between the two reads above (read-committed isolation): the same answer sent
                    # twice at once (a double click, two tabs) is a duplicate, as it is one moment later
                    raise already
                raise UnknownClipError(f"clip {clip_id} is not open for rating yet (a repeat reading unlocks after "
                                       f"its washout); rate the clip that next_item() offers")
            clean = _validate(definition, scores, phase, turing, confidence, complete=True)
            study_id, rater_name, assignment_id = study.id, rater.name, reading.id
        now = _utc(self._clock())
        try:
            with self._writing() as s:
                s.info[STUDY_KEY] = study_id
                claimed = s.execute(CLAIM, {"claim_id": assignment_id, "claim_study": study_id, "claim_at": now}).first()
                if claimed is None:
                    _check_open(s.get(Study, study_id))
                    raise already  # a concurrent submission of the same reading got there first
                _record(s, "update", "assignments", claimed._mapping)
                _insert(s, Rating, [{"assignment_id": assignment_id, "criterion": name, "score": score,
                                          "version": 1, "rated_at": now} for name, score in clean["scores"].items()])
                _insert(s, Answer, [{"assignment_id": assignment_id, "phase_answer": clean.get("phase"),
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
            now = _utc(self._clock())
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
            _insert(s, Rating, changed_scores)
            _insert(s, Answer, [row])
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

    def _assignment(self, s: Session, rater: Rater, clip_id: str, position: int | None, *, want_open: bool) -> Assignment:
        """The rater's reading(s) of the clip they were shown as ``clip_id`` (a repeat has its own id): the
        first open one (``want_open``) or the latest rated one; one query when the id is right."""
        query = READINGS if position is None else READINGS_AT
        readings = list(s.scalars(query, {"rater": rater.id, "clip": clip_id, "position": position}))
        if not readings:
            known = s.scalar(select(func.count()).select_from(Clip).where(Clip.blind_id == clip_id,
                                                                          Clip.study_id == rater.study_id))
            if not known and s.scalar(select(Assignment.id).where(Assignment.alias_id == clip_id)) is None:
                raise UnknownClipError(f"unknown clip {clip_id!r}: it is not part of this study")
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
        now = _utc(self._clock())
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


MAX_COMMENT_CHARS = 5000


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
        raise InvalidRatingError(f"seconds spent must be a finite number >= 0, got {shown(seconds)}")
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
            raise InvalidRatingError(f"phase answer {shown(phase)} is not one of {list(definition.phases)}")
        out["phase"] = matched
    if turing is not None or confidence is not None or (complete and definition.turing_test):
        if not definition.turing_test:
            raise InvalidRatingError("this study has no real-or-synthetic question")
        if turing is not None or complete:
            if turing not in TURING_ANSWERS:
                raise InvalidRatingError(f"real-or-synthetic answer must be 'real' or 'synthetic', got {shown(turing)}")
            out["turing"] = turing
        if confidence is not None or complete:
            try:
                out["confidence"] = definition.turing_confidence.check(confidence, "confidence")
            except ValueError as exc:
                raise InvalidRatingError(str(exc)) from None
    return out


