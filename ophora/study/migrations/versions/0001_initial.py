"""Initial study schema: studies, clips, raters, assignments, ratings, answers, audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("slug", sa.String(63), nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("definition_yaml", sa.Text, nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("blind_dir", sa.Text, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_studies"),
        sa.UniqueConstraint("slug", name="uq_studies_slug"),
    )
    op.create_table(
        "clips",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id", ondelete="CASCADE",
                                                        name="fk_clips_study_id_studies"), nullable=False),
        sa.Column("blind_id", sa.String(32), nullable=False),
        sa.Column("clip_set", sa.String(200), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("phase", sa.String(200), nullable=True),
        sa.Column("instruction", sa.Text, nullable=True),
        sa.Column("original_path", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("blinded_path", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_clips"),
        sa.UniqueConstraint("blind_id", name="uq_clips_blind_id"),
        sa.UniqueConstraint("study_id", "sha256", name="uq_clips_study_sha256"),
    )
    op.create_index("ix_clips_study_id", "clips", ["study_id"])
    op.create_table(
        "raters",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id", ondelete="CASCADE",
                                                        name="fk_raters_study_id_studies"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_raters"),
        sa.UniqueConstraint("study_id", "name", name="uq_raters_study_name"),
        sa.UniqueConstraint("code_hash", name="uq_raters_code_hash"),
    )
    op.create_index("ix_raters_study_id", "raters", ["study_id"])
    op.create_table(
        "assignments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("rater_id", sa.Integer, sa.ForeignKey("raters.id", ondelete="CASCADE",
                                                        name="fk_assignments_rater_id_raters"), nullable=False),
        sa.Column("clip_id", sa.Integer, sa.ForeignKey("clips.id", ondelete="CASCADE",
                                                       name="fk_assignments_clip_id_clips"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("reading", sa.Integer, nullable=False),
        sa.Column("alias_id", sa.String(32), nullable=True),
        sa.Column("alias_path", sa.Text, nullable=True),
        sa.Column("completed_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_assignments"),
        sa.UniqueConstraint("rater_id", "position", name="uq_assignments_rater_position"),
        sa.UniqueConstraint("rater_id", "clip_id", "reading", name="uq_assignments_rater_clip_reading"),
        sa.UniqueConstraint("alias_id", name="uq_assignments_alias_id"),
    )
    op.create_index("ix_assignments_rater_id", "assignments", ["rater_id"])
    op.create_index("ix_assignments_clip_id", "assignments", ["clip_id"])
    op.create_table(
        "ratings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("assignment_id", sa.Integer, sa.ForeignKey("assignments.id", ondelete="RESTRICT",
                                                             name="fk_ratings_assignment_id_assignments"),
                  nullable=False),
        sa.Column("criterion", sa.String(200), nullable=False),
        sa.Column("score", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("rated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ratings"),
        sa.UniqueConstraint("assignment_id", "criterion", name="uq_ratings_assignment_criterion"),
    )
    op.create_index("ix_ratings_assignment_id", "ratings", ["assignment_id"])
    op.create_table(
        "answers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("assignment_id", sa.Integer, sa.ForeignKey("assignments.id", ondelete="RESTRICT",
                                                             name="fk_answers_assignment_id_assignments"),
                  nullable=False),
        sa.Column("phase_answer", sa.String(200), nullable=True),
        sa.Column("turing_answer", sa.String(16), nullable=True),
        sa.Column("turing_confidence", sa.Integer, nullable=True),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("seconds_spent", sa.Float, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("answered_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_answers"),
        sa.UniqueConstraint("assignment_id", name="uq_answers_assignment_id"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id", ondelete="RESTRICT",
                                                        name="fk_audit_log_study_id_studies"), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("assignment_id", sa.Integer, nullable=True),
        sa.Column("old_value", sa.Text, nullable=True),
        sa.Column("new_value", sa.Text, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_study_id", "audit_log", ["study_id"])


def downgrade() -> None:
    for table in ("audit_log", "answers", "ratings", "assignments", "raters", "clips", "studies"):
        op.drop_table(table)
