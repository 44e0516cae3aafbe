"""The study record for the lead: progress per rater, the audit log, ratings and the unblinding key as
DataFrames. Part of :class:`~ophora.study.store.StudyStore`.
"""

from __future__ import annotations

from sqlalchemy import func, select

from ophora.study.models import Answer, Assignment, AuditEntry, Clip, Rater, Rating
from ophora.study.rater_flow import Progress, RaterFlow


class StudyRecords(RaterFlow):
    """Admin functions (by study slug) that read the record: they name raters and unblind clips."""

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
            # Ratings and answers are append-only: take each one's newest version.
            newest_rating = (select(Rating.assignment_id, Rating.criterion, func.max(Rating.version).label("v"))
                             .group_by(Rating.assignment_id, Rating.criterion).subquery())
            newest_answer = (select(Answer.assignment_id, func.max(Answer.version).label("v"))
                             .group_by(Answer.assignment_id).subquery())
            query = (select(Rater.name, Clip, Assignment.reading, Assignment.position, Rating, Answer)
                     .join(Assignment, Assignment.rater_id == Rater.id)
                     .join(Clip, Clip.id == Assignment.clip_id)
                     .join(Rating, Rating.assignment_id == Assignment.id)
                     .join(newest_rating, (newest_rating.c.assignment_id == Rating.assignment_id)
                           & (newest_rating.c.criterion == Rating.criterion) & (newest_rating.c.v == Rating.version))
                     .outerjoin(newest_answer, newest_answer.c.assignment_id == Assignment.id)
                     .outerjoin(Answer, (Answer.assignment_id == Assignment.id) & (Answer.version == newest_answer.c.v))
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
