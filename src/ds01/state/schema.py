"""The state DB's schema and migrations: every table and index DS01 keeps, in one place.

``open_db`` is the only way a connection is made: WAL, foreign keys, this schema, then the
additive migrations that bring a DB written by an older ds01d up to it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from ds01.errors import StateUnavailable

log = logging.getLogger("ds01d")

SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    uid         INTEGER NOT NULL,
    user        TEXT NOT NULL,
    project     TEXT NOT NULL,
    docker_id   TEXT,
    docker_name TEXT NOT NULL,
    image       TEXT NOT NULL,
    status      TEXT NOT NULL,          -- created | running | exited | removed | gone
    created_at  REAL NOT NULL,
    started_at  REAL,
    stopped_at  REAL,
    ended_at    REAL,                   -- removed or found gone
    limits      TEXT NOT NULL DEFAULT '{}',
    gpus        TEXT NOT NULL DEFAULT '[]',
    workspace   TEXT NOT NULL DEFAULT '',
    ports       TEXT NOT NULL DEFAULT '[]',  -- [[container port, host ip, host port], ...]
    request     TEXT NOT NULL DEFAULT '{}',  -- the GPU request, to re-allocate on restart
    node        TEXT,                   -- cluster mode: the node it runs on
    slurm_job   INTEGER                 -- cluster mode: the Slurm job whose life it shares
);
-- one live container per (user, project)
CREATE UNIQUE INDEX IF NOT EXISTS containers_live ON containers(uid, project)
    WHERE status NOT IN ('removed', 'gone');
CREATE INDEX IF NOT EXISTS containers_docker ON containers(docker_id);

-- GPU allocations: an open row (end IS NULL) holds a device. The unique index makes holding a
-- device twice impossible even if a bug bypassed the allocator.
CREATE TABLE IF NOT EXISTS allocations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    container   INTEGER NOT NULL REFERENCES containers(id),
    uid         INTEGER NOT NULL,
    user        TEXT NOT NULL,
    project     TEXT NOT NULL,
    device      TEXT NOT NULL,
    equivalents REAL NOT NULL,
    start       REAL NOT NULL,
    end         REAL,
    end_reason  TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS allocations_held ON allocations(device) WHERE end IS NULL;
CREATE INDEX IF NOT EXISTS allocations_uid ON allocations(uid, end);

CREATE TABLE IF NOT EXISTS queue (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    uid         INTEGER NOT NULL,
    user        TEXT NOT NULL,
    project     TEXT NOT NULL,
    request     TEXT NOT NULL,
    image       TEXT NOT NULL,
    ports       TEXT NOT NULL DEFAULT '[]',
    enqueued_at REAL NOT NULL,
    status      TEXT NOT NULL,          -- waiting | serving | served | cancelled | failed
    ended_at    REAL,
    note        TEXT,
    container   INTEGER,                -- serving: the containers row made for it (same transaction)
    slurm_job   INTEGER                 -- cluster mode: the pending Slurm job that will serve it
);
CREATE UNIQUE INDEX IF NOT EXISTS queue_waiting ON queue(uid, project) WHERE status = 'waiting';

CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    time    REAL NOT NULL,
    uid     INTEGER,
    user    TEXT,
    action  TEXT NOT NULL,
    target  TEXT,
    result  TEXT NOT NULL,
    reason  TEXT,
    data    TEXT
);
CREATE INDEX IF NOT EXISTS events_time ON events(time);

-- lifecycle timers (issue 6): one row per container, so a daemon restart continues them
CREATE TABLE IF NOT EXISTS lifecycle (
    container         INTEGER PRIMARY KEY REFERENCES containers(id),
    run_started       REAL,             -- the started_at the timers below belong to
    idle_since        REAL,             -- start of the current idle episode (NULL = busy)
    idle_warned       INTEGER NOT NULL DEFAULT 0,  -- idle warnings sent this episode
    idle_warned_at    REAL,
    runtime_warned    INTEGER NOT NULL DEFAULT 0,  -- max-runtime warnings sent this run
    runtime_warned_at REAL,
    keepalive_until   REAL,
    last_sample_at    REAL,             -- the CPU/network baseline of the next sample
    last_cpu_ns       INTEGER,
    last_net_bytes    INTEGER
);

-- admin exemptions from idle reclaim / max runtime, per user, with an expiry
CREATE TABLE IF NOT EXISTS exemptions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user        TEXT NOT NULL,
    kind        TEXT NOT NULL,          -- idle | runtime | all
    until       REAL NOT NULL,
    reason      TEXT,
    granted_by  TEXT,
    granted_at  REAL NOT NULL,
    revoked_at  REAL
);
CREATE INDEX IF NOT EXISTS exemptions_user ON exemptions(user, until);

-- what the last build (or up-to-date verdict) of a project image saw, so that a rebuild with
-- nothing changed is recognised from metadata alone (images.fingerprint.stat_fingerprint)
CREATE TABLE IF NOT EXISTS build_stamps (
    uid          INTEGER NOT NULL,
    project      TEXT NOT NULL,
    image_id     TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,         -- stat fingerprint of the context, taken before it was read
    bases        TEXT NOT NULL,         -- {base ref: local image id (or the ref when pulled)}
    buildargs    TEXT NOT NULL,         -- sha256 of the build arguments
    at           REAL NOT NULL,
    PRIMARY KEY (uid, project)
);

-- project images a rebuild replaced while a container still used them: removed when the last
-- such container goes (services.images.ImageService.prune_superseded)
CREATE TABLE IF NOT EXISTS superseded_images (
    image_id  TEXT PRIMARY KEY,
    uid       INTEGER NOT NULL,
    at        REAL NOT NULL
);

-- each container's memory high-water mark, sampled from its cgroup once per daemon tick
-- (services.usage.UsageService.sample_peaks), so a usage report knows it after removal
CREATE TABLE IF NOT EXISTS container_peaks (
    container   INTEGER PRIMARY KEY,
    peak_bytes  INTEGER NOT NULL,
    sampled_at  REAL NOT NULL
);
-- batch jobs (issue 14; state.jobs): what ran, from which image and commit, and how it ended.
-- A starting/running job's GPUs are allocations of its own containers row (status 'job').
CREATE TABLE IF NOT EXISTS jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    uid           INTEGER NOT NULL,
    user          TEXT NOT NULL,
    project       TEXT NOT NULL,
    name          TEXT,
    state         TEXT NOT NULL,        -- policy.jobs.STATES
    reason        TEXT,
    command       TEXT NOT NULL,        -- JSON list of words
    env           TEXT NOT NULL DEFAULT '{}',
    request       TEXT NOT NULL DEFAULT '{}',  -- the GPU request
    time_limit    REAL,
    image         TEXT NOT NULL,        -- the reference asked for / resolved
    image_id      TEXT,                 -- the engine's image id it runs (rerun uses this)
    git_commit    TEXT,
    git_dirty     INTEGER,
    array_id      INTEGER,              -- the first task's id; NULL for a single job
    array_index   INTEGER,
    array_throttle INTEGER,
    after         TEXT NOT NULL DEFAULT '[]',  -- JSON list of job ids
    requeue       INTEGER NOT NULL DEFAULT 0,
    mail          INTEGER NOT NULL DEFAULT 0,
    submitted_at  REAL NOT NULL,
    started_at    REAL,
    ended_at      REAL,
    exit_code     INTEGER,
    gpus          TEXT NOT NULL DEFAULT '[]',
    container     INTEGER,              -- containers row holding its allocations
    docker_id     TEXT,
    docker_name   TEXT,
    log_path      TEXT,
    engine_boot   TEXT,                 -- the engine's boot marker when it started
    requested     TEXT,                 -- cancel | timeout: what the daemon asked of it
    waited        INTEGER NOT NULL DEFAULT 0,
    rerun_of      INTEGER,
    slurm_job     INTEGER           -- cluster mode: the Slurm job that places it
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_uid ON jobs(uid, state);
CREATE INDEX IF NOT EXISTS jobs_array ON jobs(array_id, state);
-- small daemon facts (the last write probe: Store.ensure_writable)
CREATE TABLE IF NOT EXISTS meta (
    key    TEXT PRIMARY KEY,
    value  TEXT
);
-- usage reports scan allocations and events by time window
CREATE INDEX IF NOT EXISTS allocations_end ON allocations(end);
CREATE INDEX IF NOT EXISTS events_uid_time ON events(uid, time);
"""


# The schema version this ds01d writes (PRAGMA user_version). 0 is a DB written before versions
# were recorded (recognised by its tables); a newer version than this is refused.
SCHEMA_VERSION = 1
_DS01_TABLES = {"containers", "allocations", "queue", "events"}


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a state DB written by an older ds01d up to this schema (additive changes only)."""
    for table, name, decl in (("containers", "ports", "TEXT NOT NULL DEFAULT '[]'"),
                              ("containers", "request", "TEXT NOT NULL DEFAULT '{}'"),
                              ("queue", "container", "INTEGER"),  # the record a 'serving' row made
                              ("containers", "node", "TEXT"), ("containers", "slurm_job", "INTEGER"),
                              ("queue", "slurm_job", "INTEGER"), ("jobs", "slurm_job", "INTEGER")):  # issue 18
        cols = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if name not in cols:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def connect(path: Path, timeout: float = 30) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), shareable between threads
    (the caller serialises its use); ``timeout``: how long a write waits for the lock."""
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=timeout)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _refuse(path: Path, why: str) -> StateUnavailable:
    return StateUnavailable(
        f"refusing to start: {path} is {why}",
        f"restore the backup ('ds01 admin backup' makes one: stop ds01d, copy the backup to {path}, "
        f"remove {path.name}-wal and {path.name}-shm, start ds01d), or start afresh with "
        "'ds01d --init-state' (the file is moved aside; its history is lost)")


def _check(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse anything but a DS01 database of a known schema version."""
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as e:
        raise _refuse(path, f"not a readable SQLite database ({e})") from e
    if version > SCHEMA_VERSION:
        raise _refuse(path, f"written by a newer ds01d (schema {version}; this one knows up to {SCHEMA_VERSION})")
    if version == 0 and not tables:
        raise _refuse(path, "empty (no DS01 tables): starting on it would silently lose the history")
    if not _DS01_TABLES <= tables:
        raise _refuse(path, "not a DS01 state database (its tables are not DS01's)")


def _create(path: Path) -> None:
    """A new DB, made under a temporary name and renamed into place: a crash midway never
    leaves an empty ``path`` behind (which the next start would refuse)."""
    tmp = path.with_name(path.name + ".new")
    for p in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
        p.unlink(missing_ok=True)
    conn = connect(tmp)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
        migrate(conn)
    finally:
        conn.close()
    os.replace(tmp, path)


def set_aside(path: Path) -> Path:
    """Move ``path`` (and its -wal/-shm) out of the way for ``--init-state``; the new name."""
    aside = path.with_name(f"{path.name}.invalid-{time.strftime('%Y%m%dT%H%M%S')}")
    for sfx in ("", "-wal", "-shm"):
        src = path.with_name(path.name + sfx)
        if src.exists():
            os.replace(src, aside.with_name(aside.name + sfx))
    return aside


def open_db(path: Path, init: bool = False, timeout: float = 30) -> sqlite3.Connection:
    """The writer connection: WAL, foreign keys, this schema, then the additive migrations that
    bring a DB written by an older ds01d up to it. A missing file is created; anything that is
    not a DS01 database of a known version is refused (``StateUnavailable``, naming the file and
    what to do), or with ``init`` moved aside and replaced by a new one."""
    if not path.exists():
        _create(path)
    conn = connect(path, timeout)
    try:
        _check(conn, path)
    except StateUnavailable:
        conn.close()
        if not init:
            raise
        aside = set_aside(path)
        log.warning("--init-state: moved %s aside to %s; starting with a new state database", path, aside)
        _create(path)
        conn = connect(path, timeout)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
        migrate(conn)
    except sqlite3.DatabaseError as e:
        conn.close()
        raise _refuse(path, f"not usable ({e})") from e
    return conn
