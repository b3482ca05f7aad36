"""Lifecycle timers: one row per container, so a daemon restart continues them."""

from __future__ import annotations

import json
from typing import Any, Iterable

from ds01.state.base import StoreBase
from ds01.state.containers import LIVE

# the idle / max-runtime timers (the fields of policy.lifecycle.Timers)
TIMER_COLS = ("run_started", "idle_since", "idle_warned", "idle_warned_at", "runtime_warned",
              "runtime_warned_at", "keepalive_until")
# the CPU/network baseline of the next sample
BASE_COLS = ("last_sample_at", "last_cpu_ns", "last_net_bytes")
_COLS = ("container", *TIMER_COLS, *BASE_COLS)


class LifecycleStore(StoreBase):
    def lifecycle_rows(self) -> dict[int, dict[str, Any]]:
        """container record id -> its timers and baseline."""
        return {r["container"]: dict(r) for r in self._query("SELECT * FROM lifecycle")}

    def write_lifecycle(self, rows: Iterable[tuple]) -> None:
        """Replace the rows of the given containers, in one transaction; each row is
        ``(container, *TIMER_COLS, *BASE_COLS)``."""
        with self.transaction() as tx:
            tx._conn.executemany(
                f"INSERT OR REPLACE INTO lifecycle ({', '.join(_COLS)}) VALUES ({', '.join('?' * len(_COLS))})", rows)

    def forget_ended_lifecycle(self) -> None:
        """Drop the timers of containers that are no longer live."""
        self._execute("DELETE FROM lifecycle WHERE container NOT IN (SELECT id FROM containers WHERE "
                      f"status IN ({','.join('?' for _ in LIVE)}))", LIVE)

    def set_keepalive(self, container: int, until: float) -> None:
        """Postpone the idle stop until ``until`` and start the idle warnings afresh."""
        with self.transaction() as tx:
            c = tx._conn
            row = c.execute("SELECT container FROM lifecycle WHERE container=?", (container,)).fetchone()
            if row is None:
                c.execute("INSERT INTO lifecycle (container, keepalive_until) VALUES (?, ?)", (container, until))
            else:
                c.execute("UPDATE lifecycle SET keepalive_until=?, idle_warned=0, idle_warned_at=NULL "
                          "WHERE container=?", (until, container))

    def clock_mark(self) -> dict[str, Any] | None:
        """The daemon clock's last mark (``policy.clock.Mark`` fields), if one was saved."""
        rows = self._query("SELECT value FROM meta WHERE key='clock'")
        return json.loads(rows[0]["value"]) if rows else None

    def save_clock_mark(self, mark: dict[str, Any]) -> None:
        self._execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('clock', ?)", (json.dumps(mark),))
