"""A tamper-evident record: the per-study hash chain (``record_chain``), and the database refusing what
the chain would otherwise only detect.

Why: an INSERT of a forged rating, an UPDATE of a clip's source or a DELETE of readings went through
without a trace (issue 20). Now every row that decides a result is chained (``ophora.study.chain``;
``study verify`` recomputes it), and the database itself refuses: changing a rated clip or any clip of a
locked study; changing a reading's rater, clip, repeat or copy once the study is open, un-completing it, or
deleting a completed reading (also with SQLite's ``foreign_keys`` off, as in any external client); deleting
a rater of an open study; changing or deleting a link; and on PostgreSQL any TRUNCATE of these tables.
Studies made before this migration get their chain built from the rows as they are now.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

import json
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = ("studies", "clips", "raters", "assignments", "ratings", "answers", "audit_log", "record_chain")
CHAIN_FIXED = "record_chain is append-only: the study record cannot be rewritten"
CLIP_FIXED = "a clip is fixed once rated or once its study is locked (relabel or remove only unrated clips)"
READING_FIXED = ("a reading is fixed once its study is open: only its position (when a clip is removed) and "
                 "its completion may change, and a completed reading cannot be deleted")
RATER_FIXED = "a rater of an open or locked study cannot be deleted"
NO_TRUNCATE = "TRUNCATE is refused on study tables: the record must stay complete"

STUDY_OF_CLIP = "(SELECT status FROM studies WHERE id = OLD.study_id)"
STUDY_OF_READING = "(SELECT s.status FROM studies s JOIN raters r ON r.study_id = s.id WHERE r.id = OLD.rater_id)"
CLIP_RATED = "EXISTS (SELECT 1 FROM assignments a WHERE a.clip_id = OLD.id AND a.completed_at IS NOT NULL)"
DRAFT_OWNER = "(SELECT status FROM studies WHERE id = OLD.study_id) = 'draft'"


def _rules(distinct: str) -> dict[str, str]:
    """The conditions under which each statement is refused (``distinct``: the dialect's null-safe !=)."""
    changed = " OR ".join(f"NEW.{c} {distinct} OLD.{c}" for c in ("rater_id", "clip_id", "reading", "alias_id",
                                                                  "alias_path"))
    clip_fixed = f"{STUDY_OF_CLIP} = 'locked' OR ({STUDY_OF_CLIP} != 'draft' AND {CLIP_RATED})"
    return {
        "clips_fixed_update": clip_fixed,
        "clips_fixed_delete": clip_fixed,
        "assignments_fixed_update": (f"{STUDY_OF_READING} != 'draft' AND ({STUDY_OF_READING} = 'locked' OR {changed} "
                                     f"OR (OLD.completed_at IS NOT NULL AND NEW.completed_at {distinct} OLD.completed_at))"),
        "assignments_fixed_delete": (f"{STUDY_OF_READING} != 'draft' AND ({STUDY_OF_READING} = 'locked' "
                                     f"OR OLD.completed_at IS NOT NULL)"),
        "raters_fixed_delete": f"{STUDY_OF_CLIP} != 'draft'",
        "record_chain_no_delete": f"NOT {DRAFT_OWNER}",
    }


# trigger name -> (event, table, message)
TRIGGERS = {
    "clips_fixed_update": ("UPDATE", "clips", CLIP_FIXED),
    "clips_fixed_delete": ("DELETE", "clips", CLIP_FIXED),
    "assignments_fixed_update": ("UPDATE", "assignments", READING_FIXED),
    "assignments_fixed_delete": ("DELETE", "assignments", READING_FIXED),
    "raters_fixed_delete": ("DELETE", "raters", RATER_FIXED),
    "record_chain_no_update": ("UPDATE", "record_chain", CHAIN_FIXED),
    "record_chain_no_delete": ("DELETE", "record_chain", CHAIN_FIXED),
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "record_chain",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id", ondelete="RESTRICT",
                                                        name="fk_record_chain_study_id_studies"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("table_name", sa.String(32), nullable=False),
        sa.Column("row_id", sa.Integer, nullable=False),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.Column("link_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_record_chain"),
        sa.UniqueConstraint("study_id", "seq", name="uq_record_chain_study_seq"),
    )
    op.create_index("ix_record_chain_study_id", "record_chain", ["study_id"])
    _backfill(op.get_bind())
    rules = _rules("IS NOT" if dialect == "sqlite" else "IS DISTINCT FROM")
    if dialect == "sqlite":
        for name, (event, table, message) in TRIGGERS.items():
            when = rules.get(name, "1")
            op.execute(f"CREATE TRIGGER {name} BEFORE {event} ON {table} WHEN {when} "
                       f"BEGIN SELECT RAISE(ABORT, '{message}'); END")
        return
    for name, (event, table, message) in TRIGGERS.items():
        when = rules.get(name, "TRUE")
        result = "OLD" if event == "DELETE" else "NEW"
        op.execute(f"CREATE FUNCTION ophora_{name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                   f"BEGIN IF {when} THEN RAISE EXCEPTION '{message}'; END IF; RETURN {result}; END $$")
        op.execute(f"CREATE TRIGGER {name} BEFORE {event} ON {table} FOR EACH ROW EXECUTE FUNCTION ophora_{name}()")
    op.execute("CREATE FUNCTION ophora_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$ "
               f"BEGIN RAISE EXCEPTION '{NO_TRUNCATE}'; END $$")
    for table in TABLES:
        op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION ophora_no_truncate()")


def _backfill(bind) -> None:
    """Chain every existing study's rows as they are now (table by table, by id)."""
    from ophora.study import chain
    from ophora.study.models import AuditEntry

    for study_id, status in bind.execute(sa.text("SELECT id, status FROM studies ORDER BY id")).all():
        bind.execute(sa.insert(AuditEntry.__table__).values(
            study_id=study_id, at=datetime.now(timezone.utc), actor="migration 0004", action="start_record",
            new_value=json.dumps({"status": status}), is_admin=True,
            reason="the study existed before its record was chained; its rows are chained as found"))
        rows = chain.study_rows(bind, study_id)
        chain.append(bind, study_id, [("insert", table, values) for table in chain.CHAINED for values in rows[table]])


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name, (_, table, _) in TRIGGERS.items():
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + ("" if dialect == "sqlite" else f" ON {table}"))
        if dialect != "sqlite":
            op.execute(f"DROP FUNCTION IF EXISTS ophora_{name}()")
    if dialect != "sqlite":
        for table in TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS ophora_no_truncate()")
    op.drop_index("ix_record_chain_study_id", "record_chain")
    op.drop_table("record_chain")
