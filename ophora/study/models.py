"""Study database tables (SQLAlchemy ORM). The schema itself is created by the alembic migrations in
``ophora/study/migrations``; these classes must match the head revision (a test compares them).

Why these tables: a rating is one row per rater x clip reading x criterion x version, so "a second rating
of the same item" is a unique-constraint violation, not a silent duplicate, and a change is a new version
row; triggers make ``ratings``, ``answers`` and ``audit_log`` append-only, so history can never be
overwritten (migrations 0002, 0003).
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (Boolean, DateTime, Float, ForeignKey, Integer, MetaData, String, Text, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {"ix": "ix_%(column_0_label)s", "uq": "uq_%(table_name)s_%(column_0_name)s",
          "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s", "pk": "pk_%(table_name)s"}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Study(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    title: Mapped[str] = mapped_column(String(500))
    definition_yaml: Mapped[str] = mapped_column(Text)
    seed: Mapped[int] = mapped_column(Integer)
    blind_dir: Mapped[str | None] = mapped_column(Text, nullable=True)
    # draft (set up, no ratings) -> open (raters rate) -> locked (frozen for analysis); triggers allow only that.
    status: Mapped[str] = mapped_column(String(16), default="draft", server_default="draft")
    accepted_differences: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list of parity waivers
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Clip(Base):
    """A clip and its provenance. Only ``blind_id`` and ``blinded_path`` are ever shown to raters."""

    __tablename__ = "clips"
    __table_args__ = (UniqueConstraint("study_id", "sha256", name="uq_clips_study_sha256"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    blind_id: Mapped[str] = mapped_column(String(32), unique=True)
    clip_set: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16))  # real | generated
    model: Mapped[str] = mapped_column(String(200))
    phase: Mapped[str | None] = mapped_column(String(200), nullable=True)
    instruction: Mapped[str | None] = mapped_column(Text, nullable=True)
    original_path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    blinded_path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Rater(Base):
    __tablename__ = "raters"
    __table_args__ = (UniqueConstraint("study_id", "name", name="uq_raters_study_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the access code, never the code
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Assignment(Base):
    """One reading of one clip by one rater, at a seeded random position in that rater's order."""

    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("rater_id", "position", name="uq_assignments_rater_position"),
        UniqueConstraint("rater_id", "clip_id", "reading", name="uq_assignments_rater_clip_reading"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id", ondelete="CASCADE"), index=True)
    clip_id: Mapped[int] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    reading: Mapped[int] = mapped_column(Integer, default=0)  # 0 first reading, 1.. repeats (intra-rater)
    # Repeat readings get their own opaque id and their own copy of the file, so a rater cannot spot the repeat.
    alias_id: Mapped[str | None] = mapped_column(String(32), unique=True, nullable=True)
    alias_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    clip: Mapped[Clip] = relationship()
    rater: Mapped[Rater] = relationship()


class Rating(Base):
    """One score: rater x clip reading x criterion x version. Append-only (triggers): ``change_rating`` adds
    a row with the next version; readers take the latest version."""

    __tablename__ = "ratings"
    __table_args__ = (UniqueConstraint("assignment_id", "criterion", "version",
                                       name="uq_ratings_assignment_criterion_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id", ondelete="RESTRICT"), index=True)
    criterion: Mapped[str] = mapped_column(String(200))
    score: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer, default=1)
    rated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Answer(Base):
    """The per-reading answers beside the scores: phase named, real-or-synthetic, comment, time spent.
    Append-only like ``ratings``: one row per version."""

    __tablename__ = "answers"
    __table_args__ = (UniqueConstraint("assignment_id", "version", name="uq_answers_assignment_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id", ondelete="RESTRICT"), index=True)
    phase_answer: Mapped[str | None] = mapped_column(String(200), nullable=True)
    turing_answer: Mapped[str | None] = mapped_column(String(16), nullable=True)  # real | synthetic
    turing_confidence: Mapped[int | None] = mapped_column(Integer, nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    seconds_spent: Mapped[float | None] = mapped_column(Float, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    answered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEntry(Base):
    """Append-only history (database triggers reject UPDATE and DELETE): who, when, old, new, why."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="RESTRICT"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(50))
    assignment_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    old_value: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON
    new_value: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)


class RecordLink(Base):
    """One link of a study's hash chain (``ophora.study.chain``): a row of a chained table as inserted, updated
    or deleted by the study engine, its content hash, and a hash over the previous link. Append-only."""

    __tablename__ = "record_chain"
    __table_args__ = (UniqueConstraint("study_id", "seq", name="uq_record_chain_study_seq"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="RESTRICT"), index=True)
    seq: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per study
    table_name: Mapped[str] = mapped_column(String(32))
    row_id: Mapped[int] = mapped_column(Integer)
    op: Mapped[str] = mapped_column(String(8))  # insert | update | delete
    row_hash: Mapped[str] = mapped_column(String(64))
    link_hash: Mapped[str] = mapped_column(String(64))
