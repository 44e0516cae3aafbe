"""The base of :class:`~ophora.study.store.StudyStore`: the engine, one-writer transactions, lookups shared by
every flow (study by slug, rater by access code, the parsed study file) and the audit log writer.

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
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ophora.study.db import READ_ONLY, database_exists, make_engine, upgrade
from ophora.study.definition import StudyDefinition, parse_definition
from ophora.study.models import AuditEntry, Rater, Study


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

    @staticmethod
    def _audit(s: Session, study_id: int, actor: str, action: str, *, assignment_id: int | None = None,
               old: dict | None = None, new: dict | None = None, reason: str | None = None, admin: bool = False) -> None:
        s.add(AuditEntry(study_id=study_id, at=_now(), actor=actor, action=action, assignment_id=assignment_id,
                         old_value=json.dumps(old, sort_keys=True) if old is not None else None,
                         new_value=json.dumps(new, sort_keys=True) if new is not None else None,
                         reason=reason, is_admin=admin))



def _utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes (stored as UTC); PostgreSQL aware ones."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _check_not_locked(study: Study, what: str) -> None:
    if study.status == "locked":
        raise StudyError(f"study {study.slug!r} is locked for analysis; cannot {what}")
