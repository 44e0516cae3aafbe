"""The base of :class:`~ophora.study.store.StudyStore`: the engine, one-writer transactions, lookups shared by
every flow (study by slug, rater by access code, the parsed study file) and the audit log writer.

Every write transaction ends by chaining what it wrote (:mod:`ophora.study.chain`): rows the ORM inserted,
updated or deleted are collected at flush; the few bulk statements name their rows with :meth:`_record`.

Errors live here too, so every flow raises the same classes: each message says what went wrong and what to do.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import yaml
from sqlalchemy import bindparam, event, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from ophora.study import chain
from ophora.study.db import READ_ONLY, database_exists, make_engine, upgrade
from ophora.study.definition import StudyDefinition, parse_definition
from ophora.study.models import Answer, AuditEntry, Rater, Rating, Study


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

def hash_code(code: str) -> str:
    """Access codes are random (64+ bits), so a plain SHA-256 is enough; the code itself is never stored."""
    return hashlib.sha256(code.strip().encode("utf-8")).hexdigest()


def new_access_code() -> str:
    return "-".join(secrets.token_hex(3) for _ in range(4))


def _now() -> datetime:
    return datetime.now(timezone.utc)


CHAIN_KEY, STUDY_KEY = "ophora_chain", "ophora_study_id"  # Session.info keys of a write transaction
CHAIN_LOCK = 0x0F0A  # PostgreSQL advisory lock class of a study's chain (the second key is the study id)


# Statements of the rating path, built once (building them per call cost more than running them).
INSERT_RETURNING = {model.__table__.name: insert(model.__table__).returning(*model.__table__.c)
                    for model in (Rating, Answer, AuditEntry)}
RATER_AND_STUDY = (select(Rater, Study).join(Study, Study.id == Rater.study_id)
                   .where(Rater.code_hash == bindparam("code_hash")))


def _record(s: Session, op: str, table: str, values) -> None:
    """Chain a row written by a plain SQL statement (the ORM's own writes are collected at flush)."""
    s.info.setdefault(CHAIN_KEY, []).append((op, table, dict(values)))


def _insert(s: Session, model, rows: list[dict]) -> None:
    """Insert rows in one statement and chain them as stored (RETURNING gives ids and defaults): cheaper
    than the ORM on the rating path."""
    if not rows:  # an empty executemany would be INSERT ... DEFAULT VALUES (a change of phase alone, say)
        return
    table = model.__table__
    for row in s.execute(INSERT_RETURNING[table.name], rows):
        _record(s, "insert", table.name, row._mapping)


def _collect_chained(s: Session, _context) -> None:
    """after_flush: queue a link for every chained row the ORM inserted, updated or deleted."""
    items = s.info.setdefault(CHAIN_KEY, [])
    for op, objs in (("insert", s.new), ("update", s.dirty), ("delete", s.deleted)):
        for obj in sorted((o for o in objs if type(o) in chain.TABLE_OF), key=lambda o: (chain.TABLE_OF[type(o)], o.id)):
            if op != "update" or s.is_modified(obj, include_collections=False):
                items.append((op, chain.TABLE_OF[type(obj)], chain.orm_values(obj)))


class StoreCore:
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
        event.listen(self._write, "after_flush", _collect_chained)
        self._read = sessionmaker(self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)
        self._definitions: dict[int, StudyDefinition] = {}
        self._lock = threading.Lock()
        # SQLite has one writer at a time anyway; queueing this process's writers on a lock is fair and fast,
        # where SQLite's busy handler polls with growing sleeps and lets unlucky raters wait seconds.
        # Other processes are still serialised by BEGIN IMMEDIATE + busy_timeout.
        self._write_lock = threading.Lock() if self.engine.dialect.name == "sqlite" else None

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        """One write transaction (committed on exit, rolled back on error); what it wrote is chained."""
        if self._write_lock is None:
            with self._write.begin() as s:
                yield s
                self._chain(s)
            return
        with self._write_lock:
            with self._write.begin() as s:
                yield s
                self._chain(s)

    def _chain(self, s: Session) -> None:
        """Append the links of every chained row this transaction wrote, under the study's write lock
        (SQLite has one writer; PostgreSQL orders a study's writers on a transaction advisory lock)."""
        s.flush()
        items = s.info.pop(CHAIN_KEY, [])
        if not items:
            return
        study_id = s.info.get(STUDY_KEY)
        if study_id is None:
            raise RuntimeError("a write touched chained rows without looking its study up first")
        if self.engine.dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:key, :study)"), {"key": CHAIN_LOCK, "study": study_id})
        chain.append(s, study_id, items)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "StoreCore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _study(self, s: Session, slug: str) -> Study:
        study = s.scalar(select(Study).where(Study.slug == slug))
        if study is None:
            known = list(s.scalars(select(Study.slug)))
            raise UnknownStudyError(f"no study {slug!r} in this database (studies here: {known or 'none'}); "
                                    f"create it with `python -m ophora study create STUDY.yaml`")
        s.info[STUDY_KEY] = study.id
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

    def _rater_and_study(self, s: Session, code: str) -> tuple[Rater, Study]:
        """The rater with this access code and their study, in one query (the rating path)."""
        found = s.execute(RATER_AND_STUDY, {"code_hash": hash_code(code or "")}).first()
        if found is None:
            raise UnknownRaterError("unknown access code: check it for typos or ask the study lead for a new one")
        s.info[STUDY_KEY] = found[0].study_id
        return found[0], found[1]

    def _rater(self, s: Session, code: str) -> Rater:
        return self._rater_and_study(s, code)[0]

    @staticmethod
    def _audit(s: Session, study_id: int, actor: str, action: str, *, assignment_id: int | None = None,
               old: dict | None = None, new: dict | None = None, reason: str | None = None, admin: bool = False) -> None:
        _insert(s, AuditEntry, [dict(
            study_id=study_id, at=_now(), actor=actor, action=action, assignment_id=assignment_id,
            old_value=json.dumps(old, sort_keys=True) if old is not None else None,
            new_value=json.dumps(new, sort_keys=True) if new is not None else None, reason=reason, is_admin=admin)])



def _utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes (stored as UTC); PostgreSQL aware ones. Either way: aware, in UTC."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _check_not_locked(study: Study, what: str) -> None:
    if study.status == "locked":
        raise StudyError(f"study {study.slug!r} is locked for analysis; cannot {what}")
