"""SQLite state (WAL): the truth for ownership records, allocations, queue and history.

Docker is the truth for what exists; on start the daemon reconciles the two (services/reconcile).
One connection shared by the daemon's worker threads behind a lock; ``transaction()`` is
``BEGIN IMMEDIATE`` so read-check-write sequences (allocation) are atomic.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

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
-- nothing changed is recognised from metadata alone (images.context.stat_fingerprint)
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
"""

LIVE = ("creating", "created", "running", "exited")


@dataclass
class ContainerRecord:
    id: int
    uid: int
    user: str
    project: str
    docker_id: str | None
    docker_name: str
    image: str
    status: str
    created_at: float
    started_at: float | None = None
    stopped_at: float | None = None
    ended_at: float | None = None
    limits: dict[str, Any] = field(default_factory=dict)
    gpus: list[str] = field(default_factory=list)
    workspace: str = ""
    ports: list = field(default_factory=list)
    request: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "ContainerRecord":
        d = dict(row)
        d["limits"] = json.loads(d["limits"] or "{}")
        d["gpus"] = json.loads(d["gpus"] or "[]")
        d["ports"] = json.loads(d.get("ports") or "[]")
        d["request"] = json.loads(d.get("request") or "{}")
        return cls(**d)


def _encode(fields: dict[str, Any]) -> None:
    for k in ("limits", "gpus", "ports", "request"):
        if k in fields and not isinstance(fields[k], str):
            fields[k] = json.dumps(fields[k])


class Store:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.executescript(SCHEMA)
        self._migrate()
        self._lock = threading.RLock()

    def _migrate(self) -> None:
        """Bring a state DB written by an older ds01d up to this schema (additive changes only)."""
        cols = {r[1] for r in self._conn.execute("PRAGMA table_info(containers)")}
        for name, decl in (("ports", "TEXT NOT NULL DEFAULT '[]'"), ("request", "TEXT NOT NULL DEFAULT '{}'")):
            if name not in cols:
                self._conn.execute(f"ALTER TABLE containers ADD COLUMN {name} {decl}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    def query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def execute(self, sql: str, args: tuple = ()) -> int:
        with self._lock:
            cur = self._conn.execute(sql, args)
            return cur.lastrowid or cur.rowcount

    # -- build stamps ----------------------------------------------------------------------
    def build_stamp(self, uid: int, project: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM build_stamps WHERE uid=? AND project=?", (uid, project))
        if not rows:
            return None
        d = dict(rows[0])
        d["bases"] = json.loads(d["bases"])
        return d

    def set_build_stamp(self, uid: int, project: str, image_id: str, fingerprint: str, bases: dict[str, str],
                        buildargs: str) -> None:
        self.execute("INSERT OR REPLACE INTO build_stamps (uid, project, image_id, fingerprint, bases, buildargs, at)"
                     " VALUES (?,?,?,?,?,?,?)",
                     (uid, project, image_id, fingerprint, json.dumps(bases, sort_keys=True), buildargs, time.time()))

    def clear_build_stamp(self, uid: int, project: str) -> None:
        self.execute("DELETE FROM build_stamps WHERE uid=? AND project=?", (uid, project))

    def add_superseded(self, uid: int, image_id: str) -> None:
        self.execute("INSERT OR REPLACE INTO superseded_images (image_id, uid, at) VALUES (?,?,?)",
                     (image_id, uid, time.time()))

    def superseded_images(self, uid: int) -> list[str]:
        return [r["image_id"] for r in self.query("SELECT image_id FROM superseded_images WHERE uid=? ORDER BY at",
                                                  (uid,))]

    def forget_superseded(self, image_id: str) -> None:
        self.execute("DELETE FROM superseded_images WHERE image_id=?", (image_id,))

    # -- containers ------------------------------------------------------------------------
    def live_container(self, uid: int, project: str) -> ContainerRecord | None:
        rows = self.query(
            "SELECT * FROM containers WHERE uid=? AND project=? AND status IN (?,?,?,?)", (uid, project, *LIVE)
        )
        return ContainerRecord.from_row(rows[0]) if rows else None

    def live_containers(self, uid: int | None = None) -> list[ContainerRecord]:
        if uid is None:
            rows = self.query("SELECT * FROM containers WHERE status IN (?,?,?,?) ORDER BY id", LIVE)
        else:
            rows = self.query("SELECT * FROM containers WHERE uid=? AND status IN (?,?,?,?) ORDER BY id",
                              (uid, *LIVE))
        return [ContainerRecord.from_row(r) for r in rows]

    def container_by_docker_id(self, docker_id: str) -> ContainerRecord | None:
        rows = self.query("SELECT * FROM containers WHERE docker_id=? ORDER BY id DESC LIMIT 1", (docker_id,))
        return ContainerRecord.from_row(rows[0]) if rows else None

    def insert_container(self, conn: sqlite3.Connection | None = None, **fields: Any) -> int:
        fields = dict(fields)
        _encode(fields)
        cols = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        sql = f"INSERT INTO containers ({cols}) VALUES ({marks})"
        if conn is not None:
            return conn.execute(sql, tuple(fields.values())).lastrowid
        return self.execute(sql, tuple(fields.values()))

    def update_container(self, rec_id: int, conn: sqlite3.Connection | None = None, **fields: Any) -> None:
        fields = dict(fields)
        _encode(fields)
        sets = ", ".join(f"{k}=?" for k in fields)
        sql = f"UPDATE containers SET {sets} WHERE id=?"
        args = (*fields.values(), rec_id)
        if conn is not None:
            conn.execute(sql, args)
        else:
            self.execute(sql, args)

    def get_container(self, rec_id: int) -> ContainerRecord | None:
        rows = self.query("SELECT * FROM containers WHERE id=?", (rec_id,))
        return ContainerRecord.from_row(rows[0]) if rows else None

    # -- allocations -----------------------------------------------------------------------
    def held_devices(self, conn: sqlite3.Connection | None = None) -> dict[str, int]:
        """device uuid -> container record id, for every open allocation."""
        c = conn or self._conn
        with self._lock:
            return {r["device"]: r["container"] for r in c.execute(
                "SELECT device, container FROM allocations WHERE end IS NULL")}

    def holding(self, uid: int, conn: sqlite3.Connection | None = None) -> float:
        c = conn or self._conn
        with self._lock:
            row = c.execute("SELECT COALESCE(SUM(equivalents), 0) FROM allocations WHERE uid=? AND end IS NULL",
                            (uid,)).fetchone()
        return float(row[0])

    def open_allocations(self, container: int | None = None) -> list[dict[str, Any]]:
        if container is None:
            rows = self.query("SELECT * FROM allocations WHERE end IS NULL ORDER BY id")
        else:
            rows = self.query("SELECT * FROM allocations WHERE end IS NULL AND container=? ORDER BY id", (container,))
        return [dict(r) for r in rows]

    def allocate(self, conn: sqlite3.Connection, rec: "ContainerRecord", devices: dict[str, float],
                 now: float) -> None:
        for uuid, eq in devices.items():
            conn.execute(
                "INSERT INTO allocations (container, uid, user, project, device, equivalents, start)"
                " VALUES (?,?,?,?,?,?,?)", (rec.id, rec.uid, rec.user, rec.project, uuid, eq, now))

    def release(self, container: int, now: float, reason: str, conn: sqlite3.Connection | None = None,
                started_before: float | None = None) -> int:
        """End the container's open allocations; with ``started_before``, only those that began
        by then (so a release decided from an old snapshot never ends devices taken since)."""
        sql = "UPDATE allocations SET end=?, end_reason=? WHERE container=? AND end IS NULL"
        args: tuple = (now, reason, container)
        if started_before is not None:
            sql += " AND start <= ?"
            args += (started_before,)
        if conn is not None:
            return conn.execute(sql, args).rowcount
        with self._lock:
            return self._conn.execute(sql, args).rowcount

    def allocation_history(self, since: float) -> list[dict[str, Any]]:
        rows = self.query("SELECT * FROM allocations WHERE end IS NULL OR end >= ? ORDER BY id", (since,))
        return [dict(r) for r in rows]

    # -- queue -----------------------------------------------------------------------------
    def waiting(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.query("SELECT * FROM queue WHERE status='waiting' ORDER BY id")]

    # -- events ----------------------------------------------------------------------------
    def add_event(self, ev: dict[str, Any]) -> None:
        self.execute(
            "INSERT INTO events (time, uid, user, action, target, result, reason, data) VALUES (?,?,?,?,?,?,?,?)",
            (
                ev.get("time", time.time()),
                ev.get("uid"),
                ev.get("user"),
                ev["action"],
                ev.get("target"),
                ev.get("result", "ok"),
                ev.get("reason"),
                json.dumps(ev.get("data")) if ev.get("data") is not None else None,
            ),
        )

    def prune_events(self, before: float) -> int:
        """Drop events older than ``before`` (the JSON-lines files keep their own rotation)."""
        with self._lock:
            return self._conn.execute("DELETE FROM events WHERE time < ?", (before,)).rowcount

    def events(self, since: float = 0, uid: int | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        if uid is None:
            rows = self.query("SELECT * FROM events WHERE time>=? ORDER BY id DESC LIMIT ?", (since, limit))
        else:
            rows = self.query(
                "SELECT * FROM events WHERE time>=? AND uid=? ORDER BY id DESC LIMIT ?", (since, uid, limit)
            )
        return [dict(r) for r in rows]
