"""GPU allocations: an open row (``end IS NULL``) holds one device for one container."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ds01.state.base import StoreBase, Tx

if TYPE_CHECKING:
    from ds01.state.containers import ContainerRecord


class AllocationsStore(StoreBase):
    def held_devices(self, conn: Tx | None = None) -> dict[str, int]:
        """device uuid -> container record id, for every open allocation."""
        return {r["device"]: r["container"] for r in self._rows(
            conn, "SELECT device, container FROM allocations WHERE end IS NULL")}

    def holding(self, uid: int, conn: Tx | None = None) -> float:
        rows = self._rows(conn, "SELECT COALESCE(SUM(equivalents), 0) FROM allocations WHERE uid=? AND end IS NULL",
                          (uid,))
        return float(rows[0][0])

    def open_allocations(self, container: int | None = None) -> list[dict[str, Any]]:
        if container is None:
            rows = self._query("SELECT * FROM allocations WHERE end IS NULL ORDER BY id")
        else:
            rows = self._query("SELECT * FROM allocations WHERE end IS NULL AND container=? ORDER BY id",
                               (container,))
        return [dict(r) for r in rows]

    def allocate(self, conn: Tx, rec: "ContainerRecord", devices: dict[str, float], now: float) -> None:
        for uuid, eq in devices.items():
            self._cursor(conn,
                         "INSERT INTO allocations (container, uid, user, project, device, equivalents, start)"
                         " VALUES (?,?,?,?,?,?,?)", (rec.id, rec.uid, rec.user, rec.project, uuid, eq, now))

    def release(self, container: int, now: float, reason: str, conn: Tx | None = None,
                started_before: float | None = None) -> int:
        """End the container's open allocations; with ``started_before``, only those that began
        by then (so a release decided from an old snapshot never ends devices taken since)."""
        sql = "UPDATE allocations SET end=?, end_reason=? WHERE container=? AND end IS NULL"
        args: tuple = (now, reason, container)
        if started_before is not None:
            sql += " AND start <= ?"
            args += (started_before,)
        return self._cursor(conn, sql, args).rowcount

    def allocation_history(self, since: float) -> list[dict[str, Any]]:
        rows = self._query("SELECT * FROM allocations WHERE end IS NULL OR end >= ? ORDER BY id", (since,))
        return [dict(r) for r in rows]

    def allocations_between(self, since: float, until: float, uid: int | None = None) -> list[dict[str, Any]]:
        """Allocations that overlap [since, until), of ``uid`` or everyone's."""
        where, args = ("", ()) if uid is None else (" AND uid=?", (uid,))
        return [dict(r) for r in self._query(
            "SELECT * FROM allocations WHERE start < ? AND (end IS NULL OR end > ?)" + where, (until, since, *args))]

    def allocation_users(self, since: float) -> list[str]:
        """Users holding a device now or released one after ``since``."""
        return [r["user"] for r in self._query("SELECT DISTINCT user FROM allocations WHERE end IS NULL OR end > ?",
                                               (since,))]
