"""The SQLite state's tables, and the upgrade of folders written by older releases.

Schema versions (``PRAGMA user_version``): 0 and 1 lack the columns version 2 added
(``fingerprint``, ``generation``, ``record_seq``); 2 summed money in floats per job, with no
``charges`` (exact, one row per answer charged) and no ``asked`` (what each job file last asked
of each job). Such a folder is brought up to date on open, or read as if it were (read-only).
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal

from batchgen.money import to_units

__all__ = ["SCHEMA", "SCHEMA_VERSION", "upgrade", "view_as_current"]

SCHEMA_VERSION = 3
"""``PRAGMA user_version`` of the layout below. 0 and 1: without the columns version 2 added
(``fingerprint``, ``generation``, ``record_seq``); 2: money summed in floats per job, no
``charges`` (exact, one row per answer charged) and no ``asked`` (what each job file last asked
of each job). Such a folder is brought up to date on open."""

_ADDED_IN_2 = (  # (column, its definition, its value in an older folder read without upgrading)
    ("fingerprint", "TEXT", "NULL"),
    ("generation", "INTEGER NOT NULL DEFAULT 0", "0"),
    ("record_seq", "INTEGER", "NULL"),
)
_FLOAT_MONEY = ("usd_spent", "credits_used", "last_usd", "last_credits")  # schema 2's, per job
_FLOAT_PLACES = Decimal("1e-9")  # schema 2 summed floats: its sums are exact to this

_TABLES = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    state TEXT NOT NULL,
    final INTEGER NOT NULL DEFAULT 0,      -- failed for good: re-sent only with --retry-failed
    attempts INTEGER NOT NULL DEFAULT 0,   -- generation requests sent, over all runs
    client_request_ids TEXT NOT NULL DEFAULT '[]',
    answer TEXT,                           -- Answer JSON; base64 images dropped once saved
    tokens_used REAL,
    started_at TEXT,
    fingerprint TEXT,                      -- of the request last sent (Job.fingerprint)
    generation INTEGER NOT NULL DEFAULT 0, -- times a succeeded job was generated anew
    record_seq INTEGER                     -- its last record in `records`
);
CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY AUTOINCREMENT, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_ADDED_IN_3 = """
CREATE TABLE IF NOT EXISTS charges (       -- one row per answer whose cost headers were readable
    seq INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    model TEXT NOT NULL,
    client_request_id TEXT,                -- the request answered (NULL: before schema 3)
    day TEXT NOT NULL,                     -- its UTC date, YYYY-MM-DD
    usd INTEGER NOT NULL,                  -- x-aimlapi-usd-spent in units of 10**-9 USD (money.PLACES)
    credits INTEGER NOT NULL               -- x-aimlapi-credits-used, the same units
);
CREATE INDEX IF NOT EXISTS charges_by_day ON charges (day);
CREATE TABLE IF NOT EXISTS asked (         -- what a job file last asked of a job: its fingerprint
    source TEXT NOT NULL,                  -- the job file's resolved path
    job_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (source, job_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS asked_by_job ON asked (job_id);
CREATE TABLE IF NOT EXISTS listing (job_id TEXT PRIMARY KEY) WITHOUT ROWID;  -- ids of the last full pass
CREATE TABLE IF NOT EXISTS listing_next (job_id TEXT PRIMARY KEY) WITHOUT ROWID;  -- ... of the pass under way
"""


SCHEMA = _TABLES + _ADDED_IN_3
"""Every table and index of :data:`SCHEMA_VERSION`, created where missing."""


def view_as_current(db: sqlite3.Connection) -> None:
    """Read an older folder as if upgraded, writing nothing: a temporary view named ``jobs``
    (it comes before ``main.jobs`` in name lookups) adds the missing columns, and temporary
    ``charges`` and ``asked`` tables stand in for the missing ones."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    missing = [f"{value} AS {column}" for column, _, value in _ADDED_IN_2 if column not in columns]
    if missing:
        db.execute(f"CREATE TEMP VIEW jobs AS SELECT *, {', '.join(missing)} FROM main.jobs")  # noqa: S608
    # (temp tables come first in name lookups: an empty `charges` a failed upgrade left is hidden)
    db.executescript(
        _ADDED_IN_3.replace("CREATE TABLE IF NOT EXISTS ", "CREATE TEMP TABLE IF NOT EXISTS ").replace(
            "CREATE INDEX IF NOT EXISTS ", "CREATE INDEX IF NOT EXISTS temp."
        )
    )
    _charges_from_floats(db, columns)


def upgrade(db: sqlite3.Connection) -> None:
    """Bring a folder of schema 0 to 2 to :data:`SCHEMA_VERSION`, in one transaction: the new
    columns, each job's last record found from the ``records`` table, and schema 2's money
    (floats per job) as exact charges."""
    db.execute("BEGIN IMMEDIATE")
    try:
        columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
        for column, definition, _ in _ADDED_IN_2:
            if column not in columns:
                db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {definition}")
        last = db.execute(
            "SELECT json_extract(record, '$.job_id'), MAX(seq) FROM records GROUP BY 1"
        ).fetchall()
        db.executemany("UPDATE jobs SET record_seq=? WHERE job_id=?", [(seq, job) for job, seq in last])
        _charges_from_floats(db, columns)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _charges_from_floats(db: sqlite3.Connection, columns: set[str]) -> None:
    """Schema 2 kept each job's money as float sums: each becomes a charge of run 0 (exact to
    :data:`_FLOAT_PLACES`), its last answer's cost a charge of its own (what one request cost)."""
    if not set(_FLOAT_MONEY) <= columns:
        return
    rows = db.execute(
        "SELECT job_id, model, COALESCE(substr(started_at, 1, 10), ''), usd_spent, credits_used, last_usd,"
        " last_credits FROM jobs WHERE usd_spent IS NOT NULL OR credits_used IS NOT NULL"
    ).fetchall()
    charges = []
    for job, model, day, usd, credits, last_usd, last_credits in rows:
        total, last = _float_units(usd, credits), _float_units(last_usd, last_credits)
        earlier = (total[0] - last[0], total[1] - last[1])
        if earlier[0] > 0 or earlier[1] > 0:
            charges.append((job, model, day, *earlier))
        charges.append((job, model, day, *last))
    db.executemany("INSERT INTO charges (job_id, model, day, usd, credits) VALUES (?, ?, ?, ?, ?)", charges)


def _float_units(usd: float | None, credits: float | None) -> tuple[int, int]:
    return tuple(  # type: ignore[return-value]
        to_units(Decimal(repr(value)).quantize(_FLOAT_PLACES)) if value else 0 for value in (usd, credits)
    )
