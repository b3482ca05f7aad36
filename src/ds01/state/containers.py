"""Container records: who owns which Docker container, its limits, devices and lifetime."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from ds01.state.base import StoreBase, Tx

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
    node: str | None = None  # cluster mode (issue 18)
    slurm_job: int | None = None

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


class ContainersStore(StoreBase):
    def live_container(self, uid: int, project: str) -> ContainerRecord | None:
        rows = self._query(
            "SELECT * FROM containers WHERE uid=? AND project=? AND status IN (?,?,?,?)", (uid, project, *LIVE)
        )
        return ContainerRecord.from_row(rows[0]) if rows else None

    def live_containers(self, uid: int | None = None) -> list[ContainerRecord]:
        if uid is None:
            rows = self._query("SELECT * FROM containers WHERE status IN (?,?,?,?) ORDER BY id", LIVE)
        else:
            rows = self._query("SELECT * FROM containers WHERE uid=? AND status IN (?,?,?,?) ORDER BY id",
                               (uid, *LIVE))
        return [ContainerRecord.from_row(r) for r in rows]

    def container_by_docker_id(self, docker_id: str) -> ContainerRecord | None:
        rows = self._query("SELECT * FROM containers WHERE docker_id=? ORDER BY id DESC LIMIT 1", (docker_id,))
        return ContainerRecord.from_row(rows[0]) if rows else None

    def insert_container(self, conn: Tx | None = None, **fields: Any) -> int:
        fields = dict(fields)
        _encode(fields)
        cols = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        sql = f"INSERT INTO containers ({cols}) VALUES ({marks})"
        if conn is not None:
            return self._cursor(conn, sql, tuple(fields.values())).lastrowid
        return self._execute(sql, tuple(fields.values()))

    def update_container(self, rec_id: int, conn: Tx | None = None, **fields: Any) -> None:
        fields = dict(fields)
        _encode(fields)
        sets = ", ".join(f"{k}=?" for k in fields)
        self._cursor(conn, f"UPDATE containers SET {sets} WHERE id=?", (*fields.values(), rec_id))

    def get_container(self, rec_id: int) -> ContainerRecord | None:
        rows = self._query("SELECT * FROM containers WHERE id=?", (rec_id,))
        return ContainerRecord.from_row(rows[0]) if rows else None

    def container_counts(self, statuses: tuple[str, ...]) -> dict[str, int]:
        """status -> how many containers have it, for the given statuses (absent ones left out)."""
        marks = ",".join("?" for _ in statuses)
        return {r["status"]: r["n"] for r in self._query(
            f"SELECT status, COUNT(*) AS n FROM containers WHERE status IN ({marks}) GROUP BY status", statuses)}
