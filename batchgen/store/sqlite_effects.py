"""The statements of each state event in SQLite (the table in :mod:`batchgen.store.events`):
every move names the states it may leave (``UPDATE ... WHERE state IN (...)``) and one that
changes no row raises :class:`~batchgen.store.events.TransitionError`. Each runs inside the
group's open transaction (:meth:`batchgen.store.sqlite.SqliteState.apply`)."""

from __future__ import annotations

import sqlite3
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

__all__ = ["EFFECTS"]


def _move(
    db: sqlite3.Connection, job_id: str, target: JobState, assignments: str, params: tuple[Any, ...]
) -> None:
    marks_for = sources(target)
    marks = ",".join("?" * len(marks_for))
    cursor = db.execute(
        f"UPDATE jobs SET state=?{assignments} WHERE job_id=? AND state IN ({marks})",  # noqa: S608
        (target.value, *params, job_id, *marks_for),
    )
    if cursor.rowcount != 1:
        row = db.execute("SELECT state FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        found = row[0] if row else "no row"
        raise TransitionError(f"job {job_id!r}: cannot move from {found} to {target.value}")


def _ensure_row(db: sqlite3.Connection, job_id: str, model: str, now: str | None) -> None:
    db.execute(
        "INSERT INTO jobs (job_id, model, state, started_at) VALUES (?, ?, 'pending', ?) "
        "ON CONFLICT(job_id) DO NOTHING",
        (job_id, model, now),
    )


# -- the effects of each event (the table in :mod:`batchgen.store.events`) -----------------------


def _dispatched(db: sqlite3.Connection, e: Dispatched) -> None:
    _ensure_row(db, e.job_id, e.model, e.now)
    _move(
        db,
        e.job_id,
        e.target,
        # (the right-hand sides see the row as it was: `state` is the state left)
        ", final=0, attempts=attempts+1, answer=NULL, fingerprint=?,"
        " generation=generation+(state='succeeded'),"
        " client_request_ids=json_insert(client_request_ids, '$[#]', ?)",
        (e.fingerprint or None, e.client_request_id),
    )
    if e.source and e.fingerprint:
        _asked(db, Asked(e.source, ((e.job_id, e.fingerprint),)))


def _unanswered(db: sqlite3.Connection, e: Unanswered) -> None:
    _move(db, e.job_id, e.target, "", ())
    _charge(db, e.job_id, e.cost)


def _answered(db: sqlite3.Connection, e: Answered) -> None:
    _move(
        db,
        e.job_id,
        e.target,
        ", answer=?, tokens_used=COALESCE(tokens_used, 0)+COALESCE(?, 0)",
        (e.answer.model_dump_json(), e.answer.tokens_used),
    )
    _charge(db, e.job_id, e.answer.cost)


def _finished(db: sqlite3.Connection, e: Finished) -> None:
    record = e.record
    if e.answer is not None:
        _answered(db, Answered(record.job_id, e.answer))
    succeeded = record.status is Status.SUCCEEDED
    seq = db.execute("INSERT INTO records (record) VALUES (?)", (e.record_json,)).lastrowid
    _ensure_row(db, record.job_id, record.model, record.started_at)
    _move(
        db,
        record.job_id,
        e.target,
        ", final=?, record_seq=?, answer=CASE WHEN ? THEN json_remove(answer, '$.images') ELSE answer END",
        (e.final and not succeeded, seq, succeeded),
    )


def _imported(db: sqlite3.Connection, e: Imported) -> None:
    record = e.record
    succeeded = record.status is Status.SUCCEEDED
    seq = db.execute("INSERT INTO records (record) VALUES (?)", (e.record_json,)).lastrowid
    _ensure_row(db, record.job_id, record.model, record.started_at)
    db.execute(
        "UPDATE jobs SET state=?, final=?, attempts=?, record_seq=?, fingerprint=?, tokens_used=?"
        " WHERE job_id=?",
        (
            JobState.SUCCEEDED if succeeded else JobState.FAILED,
            e.final,
            record.attempts,
            seq,
            record.request_fingerprint,
            record.tokens_used,
            record.job_id,
        ),
    )
    # One charge per answer: records that re-record one (a restore, a download retried by a
    # resume) share its last X-Client-Request-Id.
    _charge(
        db,
        record.job_id,
        Spend.of(record.usd_spent, record.credits_used),
        request=record.client_request_ids[-1] if record.client_request_ids else None,
        day=(record.finished_at or "")[:10] or None,
    )


def _adopted(db: sqlite3.Connection, e: FingerprintsAdopted) -> None:
    db.executemany(
        "UPDATE jobs SET fingerprint=? WHERE job_id=? AND fingerprint IS NULL",
        [(fingerprint, job_id) for job_id, fingerprint in e.pairs],
    )


def _meta(db: sqlite3.Connection, e: MetaSet) -> None:
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
        (e.key, e.value),
    )


def _charge(
    db: sqlite3.Connection,
    job_id: str,
    cost: Spend | None,
    *,
    request: str | None = None,
    day: str | None = None,
) -> None:
    """Record what an answer to the job was charged: the request it answered (by default the
    job's last X-Client-Request-Id; one already charged is not charged again) and its UTC day
    (by default today)."""
    if cost is None:
        return
    db.execute(
        "INSERT INTO charges (job_id, model, client_request_id, day, usd, credits)"
        " SELECT job_id, model, COALESCE(?2, json_extract(client_request_ids, '$[#-1]')),"
        " COALESCE(?3, date('now')), ?4, ?5 FROM jobs WHERE job_id = ?1"
        " AND NOT EXISTS (SELECT 1 FROM charges c WHERE c.job_id = ?1"
        " AND c.client_request_id = COALESCE(?2, json_extract(jobs.client_request_ids, '$[#-1]')))",
        (job_id, request, day, to_units(cost.usd), to_units(cost.credits)),
    )


def _listed(db: sqlite3.Connection, e: Listed) -> None:
    """The tables swap names at ``done``: no copy of a million rows."""
    if e.step == "begin":
        db.execute("DELETE FROM listing_next")
    elif e.step == "done":
        db.execute("DROP TABLE listing")
        db.execute("ALTER TABLE listing_next RENAME TO listing")
        db.execute("CREATE TABLE listing_next (job_id TEXT PRIMARY KEY) WITHOUT ROWID")
        db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (Meta.LISTED, e.source),
        )
    else:
        db.executemany("INSERT OR IGNORE INTO listing_next (job_id) VALUES (?)", [(i,) for i in e.ids])


def _asked(db: sqlite3.Connection, e: Asked) -> None:
    db.executemany(
        "INSERT INTO asked (source, job_id, fingerprint) VALUES (?, ?, ?)"
        " ON CONFLICT(source, job_id) DO UPDATE SET fingerprint=excluded.fingerprint",
        [(e.source, job_id, fingerprint) for job_id, fingerprint in e.pairs],
    )


EFFECTS: dict[type[Any], Callable[[sqlite3.Connection, Any], None]] = {
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
