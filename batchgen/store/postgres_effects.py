"""The PostgreSQL state's tables, and the statements of each state event (the table in
:mod:`batchgen.store.events`), as :mod:`.sqlite_effects` has them for SQLite: every move names the
states it may leave (``UPDATE ... WHERE state IN (...)``), and one that changes no row raises
:class:`~batchgen.store.events.TransitionError`. Each runs inside the group's open transaction
(:meth:`batchgen.store.postgres.PostgresState.apply`). JSON is kept as text, as in SQLite, and
read with PostgreSQL's ``jsonb`` operators.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from batchgen.money import Spend, to_units
from batchgen.outcome import JobState, Status
from batchgen.store.events import (
    Answered,
    Asked,
    Dispatched,
    FingerprintsAdopted,
    Finished,
    Imported,
    Listed,
    MetaSet,
    TransitionError,
    Unanswered,
    sources,
)
from batchgen.store.layout import Meta

__all__ = ["EFFECTS", "SCHEMA"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    state TEXT NOT NULL,
    final INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    client_request_ids TEXT NOT NULL DEFAULT '[]',
    answer TEXT,
    tokens_used DOUBLE PRECISION,
    started_at TEXT,
    fingerprint TEXT,
    generation INTEGER NOT NULL DEFAULT 0,
    record_seq BIGINT
);
CREATE TABLE IF NOT EXISTS records (seq BIGSERIAL PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS charges (
    seq BIGSERIAL PRIMARY KEY,
    job_id TEXT NOT NULL,
    model TEXT NOT NULL,
    client_request_id TEXT,
    day TEXT NOT NULL,
    usd BIGINT NOT NULL,
    credits BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS charges_by_day ON charges (day);
CREATE INDEX IF NOT EXISTS charges_by_job ON charges (job_id);
CREATE TABLE IF NOT EXISTS asked (
    source TEXT NOT NULL,
    job_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (source, job_id)
);
CREATE INDEX IF NOT EXISTS asked_by_job ON asked (job_id);
CREATE TABLE IF NOT EXISTS listing (job_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS listing_next (job_id TEXT PRIMARY KEY);
"""
"""Every table and index, created where missing (the same layout as SQLite's schema 3)."""

Cursor = Any  # a psycopg cursor


def _storable(text: str) -> str:
    """JSON text ``jsonb`` reads: its NUL escapes (which ``jsonb`` refuses) as U+FFFD."""
    return text.replace("\\u0000", "\\ufffd")


def _move(db: Cursor, job_id: str, target: JobState, assignments: str, params: tuple[Any, ...]) -> None:
    marks_for = sources(target)
    db.execute(
        f"UPDATE jobs SET state=%s{assignments} WHERE job_id=%s AND state = ANY(%s)",  # noqa: S608 (ours)
        (target.value, *params, job_id, list(marks_for)),
    )
    if db.rowcount != 1:
        row = db.execute("SELECT state FROM jobs WHERE job_id=%s", (job_id,)).fetchone()
        found = row[0] if row else "no row"
        raise TransitionError(f"job {job_id!r}: cannot move from {found} to {target.value}")


def _ensure_row(db: Cursor, job_id: str, model: str, now: str | None) -> None:
    db.execute(
        "INSERT INTO jobs (job_id, model, state, started_at) VALUES (%s, %s, 'pending', %s)"
        " ON CONFLICT (job_id) DO NOTHING",
        (job_id, model, now),
    )


def _dispatched(db: Cursor, e: Dispatched) -> None:
    _ensure_row(db, e.job_id, e.model, e.now)
    _move(
        db,
        e.job_id,
        e.target,
        # (the right-hand sides see the row as it was: `state` is the state left)
        ", final=0, attempts=attempts+1, answer=NULL, fingerprint=%s,"
        " generation=generation+(CASE WHEN state='succeeded' THEN 1 ELSE 0 END),"
        " client_request_ids=(client_request_ids::jsonb || to_jsonb(%s::text))::text",
        (e.fingerprint or None, e.client_request_id),
    )
    if e.source and e.fingerprint:
        _asked(db, Asked(e.source, ((e.job_id, e.fingerprint),)))


def _unanswered(db: Cursor, e: Unanswered) -> None:
    _move(db, e.job_id, e.target, "", ())
    _charge(db, e.job_id, e.cost)


def _answered(db: Cursor, e: Answered) -> None:
    _move(
        db,
        e.job_id,
        e.target,
        ", answer=%s, tokens_used=COALESCE(tokens_used, 0)+COALESCE(%s, 0)",
        (_storable(e.answer.model_dump_json()), e.answer.tokens_used),
    )
    _charge(db, e.job_id, e.answer.cost)


def _record(db: Cursor, text: str) -> int:
    seq: int = db.execute(
        "INSERT INTO records (record) VALUES (%s) RETURNING seq", (_storable(text),)
    ).fetchone()[0]
    return seq


def _finished(db: Cursor, e: Finished) -> None:
    record = e.record
    if e.answer is not None:
        _answered(db, Answered(record.job_id, e.answer))
    succeeded = record.status is Status.SUCCEEDED
    seq = _record(db, e.record_json)
    _ensure_row(db, record.job_id, record.model, record.started_at)
    _move(
        db,
        record.job_id,
        e.target,
        ", final=%s, record_seq=%s,"
        " answer=CASE WHEN %s THEN (answer::jsonb - 'images')::text ELSE answer END",
        (int(e.final and not succeeded), seq, succeeded),
    )


def _imported(db: Cursor, e: Imported) -> None:
    record = e.record
    succeeded = record.status is Status.SUCCEEDED
    seq = _record(db, e.record_json)
    _ensure_row(db, record.job_id, record.model, record.started_at)
    db.execute(
        "UPDATE jobs SET state=%s, final=%s, attempts=%s, record_seq=%s, fingerprint=%s, tokens_used=%s"
        " WHERE job_id=%s",
        (
            (JobState.SUCCEEDED if succeeded else JobState.FAILED).value,
            int(e.final),
            record.attempts,
            seq,
            record.request_fingerprint,
            record.tokens_used,
            record.job_id,
        ),
    )
    _charge(
        db,
        record.job_id,
        Spend.of(record.usd_spent, record.credits_used),
        request=record.client_request_ids[-1] if record.client_request_ids else None,
        day=(record.finished_at or "")[:10] or None,
    )


def _adopted(db: Cursor, e: FingerprintsAdopted) -> None:
    db.executemany(
        "UPDATE jobs SET fingerprint=%s WHERE job_id=%s AND fingerprint IS NULL",
        [(fingerprint, job_id) for job_id, fingerprint in e.pairs],
    )


def _set_meta(db: Cursor, key: str, value: str) -> None:
    db.execute(
        "INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
        (key, value),
    )


def _meta(db: Cursor, e: MetaSet) -> None:
    _set_meta(db, e.key, e.value)


def _charge(
    db: Cursor, job_id: str, cost: Spend | None, *, request: str | None = None, day: str | None = None
) -> None:
    """As :func:`batchgen.store.sqlite_effects._charge`: one charge per answered request, on its
    UTC day (by default today, by the database server's clock)."""
    if cost is None:
        return
    db.execute(
        "INSERT INTO charges (job_id, model, client_request_id, day, usd, credits)"
        " SELECT job_id, model, COALESCE(%(request)s, client_request_ids::jsonb ->> -1),"
        " COALESCE(%(day)s, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD')), %(usd)s, %(credits)s"
        " FROM jobs WHERE job_id = %(job)s AND NOT EXISTS (SELECT 1 FROM charges c WHERE c.job_id = %(job)s"
        " AND c.client_request_id = COALESCE(%(request)s, jobs.client_request_ids::jsonb ->> -1))",
        {
            "job": job_id,
            "request": request,
            "day": day,
            "usd": to_units(cost.usd),
            "credits": to_units(cost.credits),
        },
    )


def _listed(db: Cursor, e: Listed) -> None:
    """The tables swap names at ``done``: no copy of a million rows."""
    if e.step == "begin":
        db.execute("DELETE FROM listing_next")
    elif e.step == "done":
        db.execute("DROP TABLE listing")
        db.execute("ALTER TABLE listing_next RENAME TO listing")
        db.execute("CREATE TABLE listing_next (job_id TEXT PRIMARY KEY)")
        _set_meta(db, Meta.LISTED, e.source)
    else:
        db.executemany(
            "INSERT INTO listing_next (job_id) VALUES (%s) ON CONFLICT DO NOTHING", [(i,) for i in e.ids]
        )


def _asked(db: Cursor, e: Asked) -> None:
    db.executemany(
        "INSERT INTO asked (source, job_id, fingerprint) VALUES (%s, %s, %s)"
        " ON CONFLICT (source, job_id) DO UPDATE SET fingerprint=excluded.fingerprint",
        [(e.source, job_id, fingerprint) for job_id, fingerprint in e.pairs],
    )


EFFECTS: dict[type[Any], Callable[[Cursor, Any], None]] = {
    Dispatched: _dispatched,
    Unanswered: _unanswered,
    Answered: _answered,
    Finished: _finished,
    Imported: _imported,
    FingerprintsAdopted: _adopted,
    Asked: _asked,
    Listed: _listed,
    MetaSet: _meta,
}
"""Each event's statements, run inside the group's open transaction."""
