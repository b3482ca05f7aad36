"""Batch job records (issue 14): one row per job (or array task), kept after it ended."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from ds01.state.base import StoreBase, Tx

_JSON = ("command", "env", "request", "after", "gpus")
_COLUMNS = ("uid", "user", "project", "name", "state", "reason", "command", "env", "request", "time_limit",
            "image", "image_id", "git_commit", "git_dirty", "array_id", "array_index", "array_throttle", "after",
            "requeue", "mail", "submitted_at", "started_at", "ended_at", "exit_code", "gpus", "container",
            "docker_id", "docker_name", "log_path", "engine_boot", "requested", "waited", "rerun_of", "slurm_job")


@dataclass
class JobRecord:
    id: int
    uid: int
    user: str
    project: str
    state: str
    command: list[str]
    image: str
    submitted_at: float
    name: str | None = None
    reason: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    request: dict[str, Any] = field(default_factory=dict)
    time_limit: float | None = None
    image_id: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    array_id: int | None = None
    array_index: int | None = None
    array_throttle: int | None = None
    after: list[int] = field(default_factory=list)
    requeue: bool = False
    mail: bool = False
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    gpus: list[str] = field(default_factory=list)
    container: int | None = None
    docker_id: str | None = None
    docker_name: str | None = None
    log_path: str | None = None
    engine_boot: str | None = None
    requested: str | None = None
    waited: bool = False
    rerun_of: int | None = None
    slurm_job: int | None = None  # cluster mode (issue 18)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "JobRecord":
        d = dict(row)
        for k in _JSON:
            d[k] = json.loads(d[k]) if d.get(k) else ({} if k in ("env", "request") else [])
        for k in ("requeue", "mail", "waited"):
            d[k] = bool(d[k])
        if d.get("git_dirty") is not None:
            d["git_dirty"] = bool(d["git_dirty"])
        return cls(**d)


def _encode(fields: dict[str, Any]) -> dict[str, Any]:
    out = dict(fields)
    unknown = set(out) - set(_COLUMNS)
    if unknown:
        raise ValueError(f"not job columns: {sorted(unknown)}")
    for k in _JSON:
        if k in out and not isinstance(out[k], str):
            out[k] = json.dumps(out[k])
    for k in ("requeue", "mail", "waited", "git_dirty"):
        if isinstance(out.get(k), bool):
            out[k] = int(out[k])
    return out


class JobsStore(StoreBase):
    def insert_job(self, conn: Tx, **fields: Any) -> int:
        f = _encode(fields)
        sql = f"INSERT INTO jobs ({', '.join(f)}) VALUES ({', '.join('?' for _ in f)})"
        return self._cursor(conn, sql, tuple(f.values())).lastrowid

    def update_job(self, job_id: int, conn: Tx | None = None, **fields: Any) -> None:
        f = _encode(fields)
        sets = ", ".join(f"{k}=?" for k in f)
        self._cursor(conn, f"UPDATE jobs SET {sets} WHERE id=?", (*f.values(), job_id))

    def set_job_state(self, job_id: int, old: str, conn: Tx | None = None, **fields: Any) -> bool:
        """Compare-and-set: change the row only while its state is still ``old``."""
        f = _encode(fields)
        sets = ", ".join(f"{k}=?" for k in f)
        return self._cursor(conn, f"UPDATE jobs SET {sets} WHERE id=? AND state=?",
                            (*f.values(), job_id, old)).rowcount == 1

    def get_job(self, job_id: int, conn: Tx | None = None) -> JobRecord | None:
        rows = self._rows(conn, "SELECT * FROM jobs WHERE id=?", (job_id,))
        return JobRecord.from_row(rows[0]) if rows else None

    def jobs(self, uid: int | None = None, states: tuple[str, ...] | None = None, limit: int = 1000,
             conn: Tx | None = None) -> list[JobRecord]:
        """Newest first; ``uid`` None = everyone's; ``states`` None = any."""
        where, args = [], []
        if uid is not None:
            where.append("uid=?")
            args.append(uid)
        if states:
            where.append(f"state IN ({','.join('?' for _ in states)})")
            args.extend(states)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id DESC LIMIT ?"
        return [JobRecord.from_row(r) for r in self._rows(conn, sql, (*args, limit))]

    def jobs_in(self, states: tuple[str, ...], conn: Tx | None = None) -> list[JobRecord]:
        """Every job in ``states``, oldest first (the queue's FIFO order)."""
        marks = ",".join("?" for _ in states)
        return [JobRecord.from_row(r) for r in self._rows(
            conn, f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id", states)]

    def job_states(self, ids: list[int], conn: Tx | None = None) -> dict[int, str]:
        if not ids:
            return {}
        marks = ",".join("?" for _ in ids)
        return {r["id"]: r["state"] for r in self._rows(conn, f"SELECT id, state FROM jobs WHERE id IN ({marks})",
                                                        tuple(ids))}

    def count_jobs(self, uid: int, states: tuple[str, ...], conn: Tx | None = None) -> int:
        marks = ",".join("?" for _ in states)
        return self._rows(conn, f"SELECT COUNT(*) FROM jobs WHERE uid=? AND state IN ({marks})",
                          (uid, *states))[0][0]

    def count_array(self, array_id: int, states: tuple[str, ...], conn: Tx | None = None) -> int:
        marks = ",".join("?" for _ in states)
        return self._rows(conn, f"SELECT COUNT(*) FROM jobs WHERE array_id=? AND state IN ({marks})",
                          (array_id, *states))[0][0]

    def mark_waited(self, ids: list[int]) -> None:
        """Jobs that were passed over by a serving round (notified when they finally start)."""
        if ids:
            marks = ",".join("?" for _ in ids)
            self._execute(f"UPDATE jobs SET waited=1 WHERE waited=0 AND id IN ({marks})", tuple(ids))

    def old_jobs(self, ended_before: float, ended: tuple[str, ...]) -> list[JobRecord]:
        marks = ",".join("?" for _ in ended)
        return [JobRecord.from_row(r) for r in self._query(
            f"SELECT * FROM jobs WHERE state IN ({marks}) AND ended_at < ?", (*ended, ended_before))]

    def delete_job(self, job_id: int) -> None:
        self._execute("DELETE FROM jobs WHERE id=?", (job_id,))
