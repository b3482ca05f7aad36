"""The GPU queue: requests waiting for devices, and how each one ended."""

from __future__ import annotations

import json
from typing import Any

from ds01.state.base import StoreBase, Tx

ENDED = ("served", "cancelled", "failed")


class QueueStore(StoreBase):
    def waiting(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._query("SELECT * FROM queue WHERE status='waiting' ORDER BY id")]

    def waiting_count(self, conn: Tx | None = None) -> int:
        return self._rows(conn, "SELECT COUNT(*) FROM queue WHERE status='waiting'")[0][0]

    def waiting_entry(self, queue_id: int) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM queue WHERE id=? AND status='waiting'", (queue_id,))
        return dict(rows[0]) if rows else None

    def is_queued(self, conn: Tx | None, uid: int, project: str) -> bool:
        """Whether (uid, project) already has a waiting request."""
        return bool(self._rows(conn, "SELECT id FROM queue WHERE uid=? AND project=? AND status='waiting'",
                               (uid, project)))

    def enqueue(self, conn: Tx | None, uid: int, user: str, project: str, request: dict[str, Any], image: str,
                ports: list[int], now: float, slurm_job: int | None = None) -> int:
        """Add a waiting request; its queue id. ``slurm_job``: cluster mode, the pending job."""
        return self._cursor(
            conn, "INSERT INTO queue (uid, user, project, request, image, ports, enqueued_at, status, slurm_job)"
            " VALUES (?,?,?,?,?,?,?, 'waiting', ?)",
            (uid, user, project, json.dumps(request), image, json.dumps(ports), now, slurm_job)).lastrowid

    def mark_serving(self, conn: Tx, queue_id: int, container: int) -> bool:
        """In the transaction that records ``container`` for it: the request is being served
        (no longer waiting). False if it was not waiting (cancelled meanwhile)."""
        return self._cursor(conn, "UPDATE queue SET status='serving', container=? WHERE id=? AND status='waiting'",
                            (container, queue_id)).rowcount == 1

    def serving(self) -> list[dict[str, Any]]:
        """Requests a daemon was serving when it stopped (start-up finishes or undoes them)."""
        return [dict(r) for r in self._query("SELECT * FROM queue WHERE status='serving' ORDER BY id")]

    def requeue(self, queue_id: int) -> None:
        """A half-served request waits again (its container was undone)."""
        self._execute("UPDATE queue SET status='waiting', container=NULL WHERE id=? AND status='serving'",
                      (queue_id,))

    def end_queued(self, queue_id: int, status: str, now: float, note: str | None = None) -> None:
        """Mark a waiting or serving request served, cancelled or failed (``note``: why it failed)."""
        if status not in ENDED:
            raise ValueError(f"not an end state of a queued request: {status!r}")
        # an ended request stays as it ended (a cancel racing a serve keeps 'cancelled')
        self._execute("UPDATE queue SET status=?, ended_at=?, note=COALESCE(?, note) WHERE id=? "
                      "AND status IN ('waiting', 'serving')", (status, now, note, queue_id))
