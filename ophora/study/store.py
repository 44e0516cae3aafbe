"""``StudyStore``: the one API to a study database, for the CLI, the app and scripts.

Admin functions take a study slug; rater-facing functions take the rater's access code and return only
blinded data (:class:`BlindItem`: opaque clip id, blinded video path, the instruction only where a
criterion needs it). Every write is one short transaction, so a crash loses at most the rating being typed.

The class is put together from one module per responsibility, each readable top to bottom:
:mod:`ophora.study.store_core` (engine, transactions, shared lookups, errors),
:mod:`ophora.study.lifecycle` (create, raters, import, open, lock, delete, relabel/remove),
:mod:`ophora.study.rater_flow` (next reading, submit, change) and :mod:`ophora.study.records` (progress,
audit log, ratings and clip tables).
"""

from __future__ import annotations

from ophora.study.lifecycle import StudyLifeCycle
from ophora.study.rater_flow import TURING_ANSWERS, BlindItem, Progress
from ophora.study.records import StudyRecords
from ophora.study.store_core import (AlreadyRatedError, InvalidRatingError, NotRatedError, ParityError, StudyError,
                                     UnknownClipError, UnknownRaterError, UnknownStudyError, hash_code,
                                     new_access_code)

__all__ = ["AlreadyRatedError", "BlindItem", "InvalidRatingError", "NotRatedError", "ParityError", "Progress",
           "StudyError", "StudyStore", "TURING_ANSWERS", "UnknownClipError", "UnknownRaterError",
           "UnknownStudyError", "hash_code", "new_access_code"]


class StudyStore(StudyLifeCycle, StudyRecords):
    """A study database (SQLite path/URL or PostgreSQL URL), migrated to the current schema on open.

    ``StudyStore(url, create=False)`` refuses a database that does not exist yet; ``clock`` (UTC now) decides
    when repeat washouts end (tests pass their own)."""
