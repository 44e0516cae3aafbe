"""The tamper-evident study record: a hash chain per study over every row that decides a result.

Why: triggers stop an UPDATE or DELETE through our own schema, but anyone with a SQL shell can insert a
forged rating, relabel a clip or (with foreign keys off) delete readings. Every write the study engine makes
appends one link per row to ``record_chain``: the row's content hash and a hash over the previous link, so a
row changed, added or removed outside the engine no longer matches its link, and a rewritten chain no longer
ends in the head that was printed into the exports and reports made from it.

Limits (stated in docs/studies.md): the hash is unkeyed, so someone who can write the database *and* rebuild
the chain with this code can forge a consistent record; the chain head published with every result is what
catches that (compare it with ``python -m ophora study verify``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from sqlalchemy import Float, bindparam, insert, select

from ophora.study.models import Answer, Assignment, AuditEntry, Clip, Rater, Rating, RecordLink

GENESIS = "0" * 64
# The chained tables in the order a verify report walks them, with the columns each link covers. A rater's
# access-code hash is left out on purpose: reissuing a code does not change a result.
CHAINED = {
    "clips": Clip, "raters": Rater, "assignments": Assignment, "ratings": Rating, "answers": Answer,
    "audit_log": AuditEntry,
}
# Audit actions that set a study's status (``new_value`` holds it); ``start_record`` is written by migration
# 0004 for a study that existed before the chain.
LIFE_CYCLE = ("open_study", "lock_study", "start_record")
COLUMNS = {name: tuple(c.name for c in model.__table__.columns if c.name != "code_hash")
           for name, model in CHAINED.items()}
TABLE_OF = {model: name for name, model in CHAINED.items()}
# SQLite hands a REAL that holds a whole number back as an int from RETURNING (1 for 1.0): such columns are
# hashed as floats whichever way the value was read.
FLOATS = {name: {c.name for c in model.__table__.columns if isinstance(c.type, Float)} for name, model in CHAINED.items()}


def _plain(value: Any) -> Any:
    """One canonical form per value, whichever database returned it (SQLite: naive UTC datetimes)."""
    if isinstance(value, datetime):
        value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
        return value.isoformat(timespec="microseconds")
    return value


def row_hash(table: str, values: Mapping[str, Any]) -> str:
    """SHA-256 over the row's covered columns as canonical JSON."""
    floats = FLOATS[table]
    payload = json.dumps({c: _plain(float(values[c]) if c in floats and values[c] is not None else values[c])
                          for c in COLUMNS[table]}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{table}:{payload}".encode("utf-8")).hexdigest()


def orm_values(obj) -> dict[str, Any]:
    """The covered columns of an ORM row (after flush, so ids and defaults are set)."""
    return {c: getattr(obj, c) for c in COLUMNS[TABLE_OF[type(obj)]]}


def link_hash(previous: str, seq: int, table: str, row_id: int, op: str, digest: str) -> str:
    return hashlib.sha256(f"{previous}|{seq}|{table}|{row_id}|{op}|{digest}".encode("utf-8")).hexdigest()


# Built once: the rating path appends links on every submission.
HEAD = (select(RecordLink.seq, RecordLink.link_hash).where(RecordLink.study_id == bindparam("study_id"))
        .order_by(RecordLink.seq.desc()).limit(1))
APPEND = insert(RecordLink)


def append(conn, study_id: int, items: list[tuple[str, str, dict[str, Any]]]) -> str:
    """Append one link per ``(op, table, row values)`` to the study's chain (``conn``: a Session or Connection
    inside the writing transaction, which must hold the study's write lock); return the new head."""
    if not items:
        return ""
    last = conn.execute(HEAD, {"study_id": study_id}).first()
    seq, previous = (last[0], last[1]) if last else (0, GENESIS)
    rows = []
    for op, table, values in items:
        seq += 1
        digest = row_hash(table, values)
        previous = link_hash(previous, seq, table, values["id"], op, digest)
        rows.append({"study_id": study_id, "seq": seq, "table_name": table, "row_id": values["id"], "op": op,
                     "row_hash": digest, "link_hash": previous})
    conn.execute(APPEND, rows)
    return previous


def study_rows(conn, study_id: int) -> dict[str, list[dict[str, Any]]]:
    """Every chained row of one study as stored now: table -> rows (covered columns), by id."""
    def of(model, *where, joins=()):
        query = select(*[model.__table__.c[c] for c in COLUMNS[TABLE_OF[model]]])
        for target, on in joins:
            query = query.join(target, on)
        return [dict(r._mapping) for r in conn.execute(query.where(*where).order_by(model.id))]

    by_rater = ((Rater, Rater.id == Assignment.rater_id),)
    by_reading = lambda model: ((Assignment, Assignment.id == model.assignment_id), *by_rater)  # noqa: E731
    return {
        "clips": of(Clip, Clip.study_id == study_id),
        "raters": of(Rater, Rater.study_id == study_id),
        "assignments": of(Assignment, Rater.study_id == study_id, joins=by_rater),
        "ratings": of(Rating, Rater.study_id == study_id, joins=by_reading(Rating)),
        "answers": of(Answer, Rater.study_id == study_id, joins=by_reading(Answer)),
        "audit_log": of(AuditEntry, AuditEntry.study_id == study_id),
    }


def links(conn, study_id: int) -> list[tuple[int, str, int, str, str, str]]:
    return [tuple(r) for r in conn.execute(
        select(RecordLink.seq, RecordLink.table_name, RecordLink.row_id, RecordLink.op, RecordLink.row_hash,
               RecordLink.link_hash).where(RecordLink.study_id == study_id).order_by(RecordLink.seq))]


@dataclass(frozen=True)
class Verification:
    """What ``study verify`` found: ``rows`` counted per table, the chain head, and every difference
    (``problems``, first one first). ``ok`` when the database matches its chain."""

    slug: str
    rows: dict[str, int]
    links: int
    head: str
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def line(self) -> str:
        """The one line printed before every result made from this record."""
        if self.ok:
            return f"record verified: {self.total_rows} rows, chain head {self.head}"
        return (f"RECORD CHECK FAILED for study {self.slug!r}: {self.problems[0]}"
                + (f" (and {len(self.problems) - 1} more difference(s))" if len(self.problems) > 1 else ""))


def verify_study(conn, study_id: int, slug: str, status: str) -> Verification:
    """Recompute one study's chain and compare it with its rows as stored now (``conn``: a read transaction)."""
    stored = study_rows(conn, study_id)
    rows = {table: {r["id"]: row_hash(table, r) for r in values} for table, values in stored.items()}
    return verify(slug, links(conn, study_id), rows, status,
                  [(r["action"], r["new_value"]) for r in stored["audit_log"]])


def verify(slug: str, chain: list[tuple[int, str, int, str, str, str]], rows: dict[str, dict[int, str]],
           status: str, actions: list[tuple[str, str | None]]) -> Verification:
    """Recompute the chain (``chain``: seq, table, row id, op, row hash, link hash, in seq order) and compare
    it with the rows as stored now (``rows``: table -> {id: current row hash}) and the study's status with the
    life-cycle steps in its audit log (``actions``: action, new value as JSON, in order)."""
    problems: list[str] = []
    previous = GENESIS
    expected: dict[tuple[str, int], tuple[str, str, int]] = {}
    for n, (seq, table, row_id, op, digest, stored) in enumerate(chain, start=1):
        if seq != n:
            problems.append(f"record link {n} is missing (the next link is number {seq}): links were deleted")
            break
        if link_hash(previous, seq, table, row_id, op, digest) != stored:
            problems.append(f"record link {seq} ({table} row {row_id}) does not follow from the links before it: "
                            f"the record was rewritten")
            break
        previous = stored
        expected[(table, row_id)] = (op, digest, seq)
    for table in CHAINED:
        current = rows.get(table, {})
        for row_id in sorted(current):
            link = expected.get((table, row_id))
            if link is None or link[0] == "delete":
                problems.append(f"{table} row {row_id} is not in the record: it was added outside the study engine")
            elif link[1] != current[row_id]:
                problems.append(f"{table} row {row_id} differs from the record (link {link[2]}): it was changed "
                                f"outside the study engine")
        for (t, row_id), (op, _, seq) in sorted(expected.items(), key=lambda kv: kv[1][2]):
            if t == table and op != "delete" and row_id not in current:
                problems.append(f"{table} row {row_id} (link {seq}) is missing: it was deleted outside the study engine")
    lifecycle = "draft"
    for action, new in actions:
        if action in LIFE_CYCLE:
            lifecycle = _status(new) or lifecycle
    if not problems and lifecycle != status:
        problems.append(f"the study is marked {status!r} but its record says {lifecycle!r}: the status was changed "
                        f"outside the study engine")
    return Verification(slug=slug, rows={t: len(rows.get(t, {})) for t in CHAINED}, links=len(chain),
                        head=previous, problems=tuple(problems))


def _status(new_value: str | None) -> str | None:
    """The status a life-cycle audit row sets (``None`` for a malformed, i.e. forged, row)."""
    try:
        return json.loads(new_value or "")["status"]
    except (ValueError, TypeError, KeyError):
        return None
