"""The events table: the audit history (the JSON-lines files are a rotated copy)."""

from __future__ import annotations

import json
import time
from typing import Any

from ds01.state.base import StoreBase


def _prefixes(prefixes: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """An SQL condition matching an action that starts with one of ``prefixes``, and its args."""
    return " OR ".join("action LIKE ?" for _ in prefixes), tuple(p + "%" for p in prefixes)


class EventsStore(StoreBase):
    def add_event(self, ev: dict[str, Any]) -> None:
        self._execute(
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
        return self._cursor(None, "DELETE FROM events WHERE time < ?", (before,)).rowcount

    def events(self, since: float = 0, uid: int | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        if uid is None:
            rows = self._query("SELECT * FROM events WHERE time>=? ORDER BY id DESC LIMIT ?", (since, limit))
        else:
            rows = self._query(
                "SELECT * FROM events WHERE time>=? AND uid=? ORDER BY id DESC LIMIT ?", (since, uid, limit)
            )
        return [dict(r) for r in rows]

    def find_events(self, since: float = 0, uid: int | None = None, types: list[str] | None = None,
                    results: list[str] | None = None, prefixes: tuple[str, ...] = (),
                    limit: int = 200, hide: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Events newest first, from ``since``: of ``uid`` (None: everyone's); whose action is one
        of ``types`` exactly or as a prefix (``container`` = ``container.*``); whose result is one
        of ``results``; whose action starts with one of ``prefixes``."""
        conds, args = ["time >= ?"], [since]
        if prefixes:
            cond, pargs = _prefixes(prefixes)
            conds.append(f"({cond})")
            args += pargs
        if uid is not None:
            conds.append("uid = ?")
            args.append(uid)
        if types:
            conds.append("(" + " OR ".join("action = ? OR action LIKE ?" for _ in types) + ")")
            for t in types:
                args += [t, t.rstrip(".") + ".%"]
        if results:
            conds.append("result IN (" + ",".join("?" for _ in results) + ")")
            args += results
        if hide:  # actions left out (``ds01 events`` hides container.exec unless --all)
            conds.append("action NOT IN (" + ",".join("?" for _ in hide) + ")")
            args += list(hide)
        rows = self._query(f"SELECT * FROM events WHERE {' AND '.join(conds)} ORDER BY id DESC LIMIT ?",
                           (*args, limit))
        return [dict(r) for r in rows]

    def event_counts(self, prefixes: tuple[str, ...]) -> list[dict[str, Any]]:
        """``{action, reason, n}`` per (action, reason) of the events whose action starts with one
        of ``prefixes`` (a missing reason is '')."""
        cond, args = _prefixes(prefixes)
        return [dict(r) for r in self._query(
            f"SELECT action, COALESCE(reason, '') AS reason, COUNT(*) AS n FROM events WHERE {cond} "
            "GROUP BY action, reason", args)]
