"""Setting a study up and moving it through its life: create, raters and access codes, parity check and clip
import (blinding), open, lock, delete a draft, relabel or remove an unrated clip. Part of
:class:`~ophora.study.store.StudyStore`.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import random
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

import yaml
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from ophora.study import blinding, chain, screening
from ophora.study.definition import ClipSpec, StudyDefinition
from ophora.study.models import Assignment, AuditEntry, Clip, Rater, RecordLink, Study
from ophora.study.store_core import (ParityError, StoreCore, StudyError, UnknownClipError, UnknownRaterError,
                                     STUDY_KEY, _check_not_locked, _now, _record, hash_code,
                                     new_access_code)


PAST = {"relabel": "relabelled", "remove": "removed"}
IMPORT_LOCK = 0x0F0B  # PostgreSQL advisory lock class of a study's import (the second key is the study id)


class StudyLifeCycle(StoreCore):
    """Admin functions (by study slug) that set a study up and move it draft -> open -> locked."""

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
                s.info[STUDY_KEY] = study.id
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
                        raise StudyError(f"rater {name!r} already exists in study {slug!r}; give them a new "
                                         f"access code instead: python -m ophora study reissue-code {slug} "
                                         f"'{name}'")
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
        ``aspect``); an accepted one is recorded with the study and in the audit log.

        One import per study runs at a time (:meth:`_import_lock`); it first removes the staging folder a
        killed import left behind, and the transaction that writes checks parity again if the study's clips
        or waivers changed since the first check (so no clip set enters unchecked, whoever else writes)."""
        with self._read.begin() as s:
            study_id = self._study(s, slug).id
        with self._import_lock(study_id):
            return self._import(slug, list(clips), blind_dir, actor, tuple(accept_differences), progress)

    @contextmanager
    def _import_lock(self, study_id: int) -> Iterator[None]:
        """Wait for any other import of this study: a PostgreSQL session advisory lock (every site), or an
        exclusive lock on a file beside the SQLite database. Both end with the process that holds them."""
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:key, :study)"), {"key": IMPORT_LOCK, "study": study_id})
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:key, :study)"), {"key": IMPORT_LOCK, "study": study_id})
                    conn.commit()
            return
        lock_path = Path(f"{self.engine.url.database}-import-{study_id}.lock")
        with open(lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _import(self, slug: str, clips: list[ClipSpec], blind_dir, actor: str, accept_differences: tuple[str, ...],
                progress: Callable[[int, int], None] | None) -> int:
        definition = self.definition(slug)
        with self._read.begin() as s:
            study = self._study(s, slug)
            _check_not_locked(study, "import clips")
            study_id = study.id
            known = set(s.scalars(select(Clip.sha256).where(Clip.study_id == study_id)))
            checked = (frozenset(known), study.accepted_differences)  # what the parity check below compares against
            target = Path(blind_dir or study.blind_dir or "")
        if not str(target) or str(target) == ".":
            raise StudyError(f"study {slug!r} has no folder for blinded clips; give one (--blind-dir)")
        report = self.check_parity(slug, clips, accept=accept_differences)
        if not report.ok:
            raise ParityError(report)
        for stale in target.resolve().parent.glob(f".{target.name}-staging-*"):  # a killed import's leftovers
            shutil.rmtree(stale, ignore_errors=True)
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
                screen = report.screens[spec.path]
                staged[final] = blinding.blind_copy(spec.path, staging / f"{blind_id}.mp4", definition.blinding,
                                                    screen.borders)
                if definition.blinding.fit == "crop":
                    _check_no_borders(spec, staged[final], screen, definition.blinding)
                rows.append(Clip(study_id=study_id, blind_id=blind_id, clip_set=spec.clip_set, source=spec.source,
                                 model=spec.model, phase=spec.phase, instruction=spec.instruction,
                                 original_path=str(spec.path), sha256=digest, blinded_path=str(final)))
                if progress is not None:
                    progress(i + 1, len(todo))
            with self._writing() as s:
                study = self._study(s, slug)
                _check_not_locked(study, "import clips")
                stored = (frozenset(s.scalars(select(Clip.sha256).where(Clip.study_id == study_id))),
                          study.accepted_differences)
                if stored != checked:  # written by something that did not wait for the import lock: check again
                    report = self.check_parity(slug, clips, accept=accept_differences)
                    if not report.ok:
                        raise ParityError(report)
                if blind_dir and not study.blind_dir:
                    study.blind_dir = str(target)
                s.add_all(rows)
                s.flush()
                if report.waived:
                    self._record_waivers(s, study, report.waived, actor)
                for clip in rows:
                    self._audit(s, study_id, actor, "import_clip",
                                new={"clip_id": clip.blind_id, "clip_set": clip.clip_set}, admin=True)
                copies = [(final, final, None) for final in staged]
                for rater in s.scalars(select(Rater).where(Rater.study_id == study_id)).all():
                    copies += self._extend_order(s, study, rater, definition)
                _write_blinded(copies, staged, created, definition.blinding)
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

    def update_draft(self, slug: str, definition: StudyDefinition, *, actor: str = "admin") -> dict[str, str]:
        """Change a draft's settings (title, instructions, criteria, questions, picture, raters) until it opens:
        the study lead fixes what an import refusal names without deleting the study. Imported clips are
        blinded again from their originals when the picture settings change (refused, naming the clip, if an
        original is gone or changed); raters newly listed are added; returns their codes. Repeats and the
        order seed cannot change (raters' orders are drawn from them)."""
        created: list[Path] = []
        staging: Path | None = None
        try:
            with self._writing() as s:
                study = self._study(s, slug)
                if study.status != "draft":
                    raise StudyError(f"study {slug!r} is {study.status}: its settings can no longer change")
                old = self._definition(study)
                if definition.slug != slug:
                    raise StudyError(f"the short name of study {slug!r} cannot change")
                if (definition.repeats, definition.seed) != (old.repeats, old.seed):
                    raise StudyError("repeat readings and the order seed cannot change after creation; "
                                     "delete this draft and create it again to change them")
                _check_unique_raters(definition.raters)
                copies: list[tuple[Path, Path, Path | None]] = []
                staged: dict[Path, Path] = {}
                if definition.blinding != old.blinding:
                    for clip in s.scalars(select(Clip).where(Clip.study_id == study.id)).all():
                        source = Path(clip.original_path)
                        if not source.is_file() or blinding.sha256_of(source) != clip.sha256:
                            raise StudyError(f"the original of clip {clip.blind_id} ({source.name}) is no longer on "
                                             f"this machine; remove that clip, change the settings, then import it "
                                             f"again")
                        final = Path(clip.blinded_path)
                        staging = staging or Path(tempfile.mkdtemp(prefix=".update-", dir=final.parent))
                        borders = screening.measure_borders(screening.sample_luma(source))  # as at import
                        staged[final] = blinding.blind_copy(source, staging / final.name, definition.blinding,
                                                            borders)
                        copies.append((final, final, None))
                        # A repeat reading is its own encode from the original, as at import.
                        copies += [(source, Path(alias), final) for alias in s.scalars(
                            select(Assignment.alias_path).where(Assignment.clip_id == clip.id,
                                                                Assignment.alias_path.is_not(None)))]
                study.title = definition.title
                study.definition_yaml = yaml.safe_dump(_definition_to_dict(definition), sort_keys=False)
                with self._lock:
                    self._definitions.pop(study.id, None)
                self._audit(s, study.id, actor, "update_draft", old=_definition_to_dict(old),
                            new=_definition_to_dict(definition), admin=True)
                known = set(s.scalars(select(Rater.name).where(Rater.study_id == study.id)))
                codes = {name: self._add_rater(s, study, name, actor, created)
                         for name in definition.raters if name not in known}
                _write_blinded(copies, staged, [], definition.blinding)  # in place: a failed call keeps the old
        except BaseException:
            _remove(created)
            raise
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
        return codes

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
            s.execute(delete(RecordLink).where(RecordLink.study_id == study.id))
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
            for a in readings:
                s.delete(a)
            s.flush()
            for rater_id in raters:  # close the gap: positions stay 1..n (ascending, so never a clash)
                rows = s.scalars(select(Assignment).where(Assignment.rater_id == rater_id).order_by(Assignment.position))
                for i, a in enumerate(list(rows), start=1):
                    if a.position != i:
                        s.execute(update(Assignment).where(Assignment.id == a.id).values(position=i))
                        set_committed_value(a, "position", i)  # the row as stored now, for its link
                        _record(s, "update", "assignments", chain.orm_values(a))
            self._audit(s, study.id, actor, "remove_clip", old=_clip_record(clip), reason=reason.strip(), admin=True)
            s.delete(clip)
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
                raise StudyError("give at least one new value: clip set, source, model, phase or instruction "
                                 "(--clip-set, --source, --model, --phase, --instruction)")
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
            raise StudyError(f"clip {clip_id} already has {rated} rating(s): it can no longer be {PAST[what]} "
                             f"(ratings are kept; exclude it in the analysis instead)")
        return study, clip

    def definition(self, slug: str) -> StudyDefinition:
        with self._read.begin() as s:
            study = self._study(s, slug)
            return self._definition(study)

    def studies(self) -> list[str]:
        with self._read.begin() as s:
            return list(s.scalars(select(Study.slug).order_by(Study.id)))

    def _add_rater(self, s: Session, study: Study, name: str, actor: str, created: list[Path]) -> str:
        if not isinstance(name, str) or not name.strip():
            raise StudyError("a rater needs a non-empty name")
        code = new_access_code()
        rater = Rater(study_id=study.id, name=name.strip(), code_hash=hash_code(code))
        s.add(rater)
        s.flush()
        self._audit(s, study.id, actor, "add_rater", new={"rater": rater.name}, admin=True)
        definition = self._definition(study)
        _write_blinded(self._extend_order(s, study, rater, definition), {}, created, definition.blinding)
        return code

    def _extend_order(self, s: Session, study: Study, rater: Rater,
                      definition: StudyDefinition) -> list[tuple[Path, Path, Path]]:
        """Append clips this rater has not been given yet, in an order seeded by (study seed, rater, count),
        with the repeat readings (once) at random places after their first reading that respect an item
        washout, so every rater's order is random, independent and reproducible, and a repeat is not told by
        coming last. Returns the repeat files to encode: (original clip, repeat file, first reading's file)."""
        existing = list(s.execute(select(Assignment.clip_id, Assignment.reading, Assignment.position)
                                  .where(Assignment.rater_id == rater.id)))
        first_at = {clip_id: position for clip_id, reading, position in existing if reading == 0}
        has_repeats = any(reading > 0 for _, reading, _ in existing)
        clip_ids = sorted(s.scalars(select(Clip.id).where(Clip.study_id == study.id)))
        new = [c for c in clip_ids if c not in first_at]
        if not new:
            return []
        rng = random.Random(f"{study.seed}:{rater.name}:{len(existing)}")
        rng.shuffle(new)
        # The new readings as (clip, reading); an earlier first reading sits at index position - E - 1 < 0.
        done = len(existing)
        block: list[tuple[int, int]] = [(c, 0) for c in new]
        index = {c: p - done - 1 for c, p in first_at.items()}
        if definition.repeats.count and not has_repeats:
            gap = definition.repeats.after_items or 0
            # A clip can be repeated only with at least ``gap`` first readings after its own.
            pool = sorted(c for c in set(first_at) | set(new)
                          if len(new) - 1 - (index[c] if c in index else new.index(c)) >= gap)
            wanted = min(definition.repeats.count, len(first_at) + len(new))
            if len(pool) < wanted:
                raise StudyError(f"repeats.after_items is {gap}, but with {len(first_at) + len(new)} clips only "
                                 f"{len(pool)} can be repeated after that many other readings; lower "
                                 f"'after_items' or 'count', or add clips")
            for clip_id in rng.sample(pool, wanted):
                at = index[clip_id] if clip_id in index else block.index((clip_id, 0))
                block.insert(rng.randint(max(0, at + 1 + gap), len(block)), (clip_id, 1))
        copies: list[tuple[Path, Path, Path]] = []
        for position, (clip_id, reading) in enumerate(block, start=done + 1):
            if reading == 0:
                s.add(Assignment(rater_id=rater.id, clip_id=clip_id, position=position, reading=0))
                continue
            clip = s.get(Clip, clip_id)
            blinded = Path(clip.blinded_path)
            alias_id = blinding.new_blind_id()
            alias_path = blinded.with_name(f"{alias_id}{blinded.suffix}")
            # Its own encode, from the original (or, if that has gone since import, from the blinded file).
            original = Path(clip.original_path)
            copies.append((original if original.is_file() else blinded, alias_path, blinded))
            s.add(Assignment(rater_id=rater.id, clip_id=clip_id, position=position, reading=1,
                             alias_id=alias_id, alias_path=str(alias_path)))
        s.flush()
        return copies


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


def _check_no_borders(spec: ClipSpec, blinded: Path, screen: screening.PictureScreen, settings) -> None:
    """Fail closed: a blinded copy under ``fit: crop`` has no uniform border left (bars that change within
    a clip are cropped only as far as every sampled frame had them). Edge lines too narrow to count in the
    source are not counted once enlarged either."""
    width, height = screen.picture_size
    enlarged = max(settings.width / width, settings.height / height, 1.0)
    left = screening.measure_borders(screening.sample_luma(blinded, settings.frames),
                                     min_border=math.ceil(screening.MIN_BORDER * enlarged))
    if left.any:
        raise StudyError(f"clip {spec.path.name} of clip set {spec.clip_set!r} still shows a uniform border after "
                         f"blinding ({left.describe()}): its bars change within the clip, so raters could tell it "
                         f"apart; crop or trim the source so its bars stay the same, or leave it out")


def _write_blinded(copies: list[tuple[Path, Path, Path | None]], staged: dict[Path, Path], created: list[Path],
                   settings) -> None:
    """Write blinded files in a random order (creation order and inode numbers must not follow clip sets
    or reveal repeats), each its own file (no hard links: a link count of 2 would mark a repeat), all with
    one fixed modification time. ``copies`` are (source, destination, first reading) triples: a destination
    in ``staged`` gets the bytes encoded there; a repeat reading is encoded now from its source, to another
    size than its first reading (:func:`blinding.blind_repeat`), without the source's borders. Every file made
    is appended to ``created``."""
    order = list(copies)
    random.SystemRandom().shuffle(order)
    for src, dst, first in order:
        created.append(dst)
        if dst in staged:
            tmp = dst.with_name(dst.stem + ".part")
            shutil.copyfile(staged[dst], tmp)
            os.replace(tmp, dst)
        else:  # from the original: crop the same borders as its first reading (none on a blinded file)
            borders = None if first is None or src == first else screening.measure_borders(screening.sample_luma(src))
            blinding.blind_repeat(src, dst, settings, staged.get(first, first), borders)
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


def _definition_to_dict(d: StudyDefinition) -> dict:
    """A YAML-able form for definitions built in code (files keep their own text)."""
    return {
        "slug": d.slug, "title": d.title, "instructions": d.instructions,
        "criteria": [c.model_dump() for c in d.criteria],
        "phases": list(d.phases), "ask_phase": d.ask_phase,
        "turing_test": ({"enabled": True, "confidence": d.turing_confidence.model_dump(),
                         "margin": d.turing_margin}
                        if d.turing_test and d.turing_confidence else False),
        "instruction_source": d.instruction_source,
        "clip_sets": [{"name": c.name, "source": c.source, "model": c.model,
                       **({"folder": str(c.folder)} if c.folder else {"manifest": str(c.manifest)}),
                       **({"phase": c.phase} if c.phase else {})} for c in d.clip_sets],
        "raters": list(d.raters), "repeats": d.repeats.model_dump(exclude_none=True), "seed": d.seed,
        "blinding": d.blinding.model_dump(exclude_none=True),
    }
