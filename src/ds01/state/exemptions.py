"""Admin exemptions from idle reclaim / max runtime, per user, with an expiry."""

from __future__ import annotations

from typing import Any

from ds01.state.base import StoreBase


class ExemptionsStore(StoreBase):
    def add_exemption(self, user: str, kind: str, until: float, reason: str | None, granted_by: str,
                      now: float) -> int:
        """Record a grant; its id."""
        return self._execute(
            "INSERT INTO exemptions (user, kind, until, reason, granted_by, granted_at) VALUES (?,?,?,?,?,?)",
            (user, kind, until, reason, granted_by, now))

    def all_exemptions(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._query("SELECT * FROM exemptions ORDER BY id")]

    def unrevoked_exemption(self, ex_id: int) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM exemptions WHERE id=? AND revoked_at IS NULL", (ex_id,))
        return dict(rows[0]) if rows else None

    def revoke_exemption(self, ex_id: int, now: float) -> None:
        self._execute("UPDATE exemptions SET revoked_at=? WHERE id=?", (now, ex_id))

    def exemption_ends(self) -> list[dict[str, Any]]:
        """``{user, kind, e}`` per (user, kind): the latest end of those exemptions (a revoked one
        ends when it was revoked)."""
        return [dict(r) for r in self._query(
            "SELECT user, kind, MAX(MIN(until, COALESCE(revoked_at, until))) AS e FROM exemptions "
            "GROUP BY user, kind")]
