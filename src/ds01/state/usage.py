"""Usage accounting's records: container intervals with their sampled memory peaks."""

from __future__ import annotations

from typing import Any

from ds01.state.base import StoreBase


class UsageStore(StoreBase):
    def record_peak(self, container: int, peak_bytes: int, now: float) -> None:
        """Keep the container's highest sampled memory peak (and when it was last sampled)."""
        self._execute(
            "INSERT INTO container_peaks (container, peak_bytes, sampled_at) VALUES (?,?,?) "
            "ON CONFLICT(container) DO UPDATE SET peak_bytes=MAX(peak_bytes, excluded.peak_bytes), "
            "sampled_at=excluded.sampled_at", (container, peak_bytes, now))

    def containers_between(self, since: float, until: float, uid: int | None = None) -> list[dict[str, Any]]:
        """Container rows (plus ``peak_bytes``, None if never sampled) that overlap [since, until),
        of ``uid`` or everyone's."""
        where, args = ("", ()) if uid is None else (" AND c.uid=?", (uid,))
        return [dict(r) for r in self._query(
            "SELECT c.*, p.peak_bytes FROM containers c LEFT JOIN container_peaks p ON p.container = c.id "
            "WHERE c.created_at < ? AND (c.ended_at IS NULL OR c.ended_at > ?)" + where, (until, since, *args))]
