"""The state DB's schema and migrations: every table and index DS01 keeps, in one place.

``open_db`` is the only way a connection is made: WAL, foreign keys, this schema, then the
additive migrations that bring a DB written by an older ds01d up to it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

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
    request     TEXT NOT NULL DEFAULT '{}'   -- the GPU request, to re-allocate on restart
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
    status      TEXT NOT NULL,          -- waiting | served | cancelled | failed
    ended_at    REAL,
    note        TEXT
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
    rerun_of      INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_uid ON jobs(uid, state);
CREATE INDEX IF NOT EXISTS jobs_array ON jobs(array_id, state);
-- usage reports scan allocations and events by time window
CREATE INDEX IF NOT EXISTS allocations_end ON allocations(end);
CREATE INDEX IF NOT EXISTS events_uid_time ON events(uid, time);
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a state DB written by an older ds01d up to this schema (additive changes only)."""
    cols = {r[1] for r in conn.execute("PRAGMA table_info(containers)")}
    for name, decl in (("ports", "TEXT NOT NULL DEFAULT '[]'"), ("request", "TEXT NOT NULL DEFAULT '{}'")):
        if name not in cols:
            conn.execute(f"ALTER TABLE containers ADD COLUMN {name} {decl}")


def open_db(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), shareable between threads
    (the caller serialises use behind one lock), with the schema in place."""
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript(SCHEMA)
    migrate(conn)
    return conn
