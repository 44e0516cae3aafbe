"""Append-only ratings and answers, a study life cycle (draft -> open -> locked) and parity waivers.

Why in the database: a rating must never be overwritten, whoever holds a SQL shell. A change is a new
version row (readers take the latest version); triggers refuse UPDATE and DELETE on ``ratings``,
``answers`` and ``audit_log``. The one exception is deleting a whole *draft* study (no rating can exist
yet): its audit rows may go with it. A study's status only moves forward, and only a draft may be deleted.
Existing studies become ``open`` (they may already hold ratings), and their study files get the settings
they were run with made explicit (``instruction_source: per_clip``, ``blinding.fit: letterbox``), so the new
defaults never change what raters of a running study see.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import sqlalchemy as sa
import yaml
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

APPEND_ONLY = "{table} is append-only: a change is a new version row, never an UPDATE or DELETE"
STATUS_FORWARD = "a study moves only forward: draft -> open -> locked"
DELETE_DRAFT = "only a draft study (no ratings yet) can be deleted"
# SQL shared by both dialects: a legal status change, and "this audit row belongs to a draft study".
LEGAL_STATUS = ("(OLD.status = NEW.status OR (OLD.status = 'draft' AND NEW.status IN ('open', 'locked')) "
                "OR (OLD.status = 'open' AND NEW.status = 'locked'))")
DRAFT_OWNER = "(SELECT status FROM studies WHERE id = OLD.study_id) = 'draft'"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise NotImplementedError(f"append-only ratings need triggers for {dialect}; use SQLite or PostgreSQL")
    op.add_column("studies", sa.Column("status", sa.String(16), nullable=False, server_default="draft"))
    op.add_column("studies", sa.Column("accepted_differences", sa.Text, nullable=True))
    op.execute("UPDATE studies SET status = 'open'")
    bind = op.get_bind()
    for study_id, text in bind.execute(sa.text("SELECT id, definition_yaml FROM studies")).all():
        bind.execute(sa.text("UPDATE studies SET definition_yaml = :t WHERE id = :i"),
                     {"t": _explicit_old_defaults(text), "i": study_id})
    with op.batch_alter_table("ratings") as batch:
        batch.drop_constraint("uq_ratings_assignment_criterion", type_="unique")
        batch.create_unique_constraint("uq_ratings_assignment_criterion_version",
                                       ["assignment_id", "criterion", "version"])
    with op.batch_alter_table("answers") as batch:
        batch.drop_constraint("uq_answers_assignment_id", type_="unique")
        batch.create_unique_constraint("uq_answers_assignment_version", ["assignment_id", "version"])
    op.create_index("ix_answers_assignment_id", "answers", ["assignment_id"])

    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
        for table in ("ratings", "answers"):
            for event in ("UPDATE", "DELETE"):
                op.execute(f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
                           f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY.format(table=table)}'); END")
        op.execute(f"CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log WHEN NOT {DRAFT_OWNER} "
                   f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY.format(table='audit_log')}'); END")
        op.execute(f"CREATE TRIGGER studies_status_forward BEFORE UPDATE OF status ON studies "
                   f"WHEN NOT {LEGAL_STATUS} BEGIN SELECT RAISE(ABORT, '{STATUS_FORWARD}'); END")
        op.execute(f"CREATE TRIGGER studies_delete_draft_only BEFORE DELETE ON studies "
                   f"WHEN OLD.status != 'draft' BEGIN SELECT RAISE(ABORT, '{DELETE_DRAFT}'); END")
        return
    # PostgreSQL: one function per rule, row-level BEFORE triggers.
    op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
    for table in ("ratings", "answers"):
        op.execute(f"CREATE FUNCTION ophora_{table}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
                   f"BEGIN RAISE EXCEPTION '{APPEND_ONLY.format(table=table)}'; END $$")
        op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                   f"FOR EACH ROW EXECUTE FUNCTION ophora_{table}_append_only()")
    op.execute("CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
               "FOR EACH ROW EXECUTE FUNCTION ophora_audit_log_append_only()")
    op.execute("CREATE FUNCTION ophora_audit_log_delete_draft_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
               f"BEGIN IF NOT {DRAFT_OWNER} THEN RAISE EXCEPTION '{APPEND_ONLY.format(table='audit_log')}'; "
               "END IF; RETURN OLD; END $$")
    op.execute("CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
               "FOR EACH ROW EXECUTE FUNCTION ophora_audit_log_delete_draft_only()")
    op.execute("CREATE FUNCTION ophora_studies_status_forward() RETURNS trigger LANGUAGE plpgsql AS $$ "
               f"BEGIN IF NOT {LEGAL_STATUS} THEN RAISE EXCEPTION '{STATUS_FORWARD}'; END IF; RETURN NEW; END $$")
    op.execute("CREATE TRIGGER studies_status_forward BEFORE UPDATE OF status ON studies "
               "FOR EACH ROW EXECUTE FUNCTION ophora_studies_status_forward()")
    op.execute("CREATE FUNCTION ophora_studies_delete_draft_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
               f"BEGIN IF OLD.status != 'draft' THEN RAISE EXCEPTION '{DELETE_DRAFT}'; END IF; RETURN OLD; END $$")
    op.execute("CREATE TRIGGER studies_delete_draft_only BEFORE DELETE ON studies "
               "FOR EACH ROW EXECUTE FUNCTION ophora_studies_delete_draft_only()")


def _explicit_old_defaults(text: str) -> str:
    """The study file with the pre-0003 behaviour written out; the original text is kept below as comments."""
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        return text
    data.setdefault("instruction_source", "per_clip")  # before 0003 each clip showed its own instruction
    blinding = data.get("blinding") or {}
    if isinstance(blinding, dict):
        blinding.setdefault("fit", "letterbox")  # before 0003 every clip was letterboxed
        data["blinding"] = blinding
    original = "\n".join(f"# {line}" for line in text.splitlines())
    return ("# Upgraded by migration 0003: the settings this study was run with are explicit.\n"
            + yaml.safe_dump(data, sort_keys=False) + "# Study file as first written:\n" + original + "\n")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in ("ratings_no_update", "ratings_no_delete", "answers_no_update", "answers_no_delete",
                     "audit_log_no_delete", "studies_status_forward", "studies_delete_draft_only"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
                   "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END")
    else:
        for trigger, table in (("ratings_append_only", "ratings"), ("answers_append_only", "answers"),
                               ("audit_log_no_update", "audit_log"), ("audit_log_no_delete", "audit_log"),
                               ("studies_status_forward", "studies"), ("studies_delete_draft_only", "studies")):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
        for fn in ("ratings_append_only", "answers_append_only", "audit_log_delete_draft_only",
                   "studies_status_forward", "studies_delete_draft_only"):
            op.execute(f"DROP FUNCTION IF EXISTS ophora_{fn}()")
        op.execute("CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
                   "FOR EACH ROW EXECUTE FUNCTION ophora_audit_log_append_only()")
    op.drop_index("ix_answers_assignment_id", "answers")
    with op.batch_alter_table("answers") as batch:
        batch.drop_constraint("uq_answers_assignment_version", type_="unique")
        batch.create_unique_constraint("uq_answers_assignment_id", ["assignment_id"])
    with op.batch_alter_table("ratings") as batch:
        batch.drop_constraint("uq_ratings_assignment_criterion_version", type_="unique")
        batch.create_unique_constraint("uq_ratings_assignment_criterion", ["assignment_id", "criterion"])
    op.drop_column("studies", "accepted_differences")
    op.drop_column("studies", "status")
