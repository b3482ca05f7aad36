"""Events / audit: every change, denial and lifecycle action, as a JSON line and a DB row.

Lives in ``services`` (every service emits through ``Context.events``); the daemon builds one
``EventLog`` at start-up and subscribes its metrics to it (``listeners``)."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ds01.state.db import Store

log = logging.getLogger("ds01d")


MAX_DATA = 4096


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _clip(text: str | None, n: int) -> str | None:
    if text is None or len(text) <= n:
        return text
    return text[: n - 1] + "…"


class EventLog:
    def __init__(self, path: Path, store: Store, max_bytes: int = 50 * 1024**2, keep: int = 5):
        self.path = path
        self.store = store
        self.max_bytes = max_bytes
        self.keep = max(1, keep)
        self._lock = threading.Lock()
        self.file_errors = 0  # JSON lines that could not be written (the DB rows were)
        self._warned_at = -1e9
        # called with each event after it is recorded (metrics count lifecycle actions, waits, builds)
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, action: str, *, user: str | None = None, uid: int | None = None, target: str | None = None,
             result: str = "ok", reason: str | None = None, data: dict[str, Any] | None = None) -> dict[str, Any]:
        ev = {"time": time.time(), "user": user, "uid": uid, "action": action, "target": _clip(target, 300),
              "result": result, "reason": _clip(reason, 500)}
        if data:
            # bounded: a user's refused request must not be able to write megabytes per event
            blob = json.dumps(data, default=str)
            ev["data"] = data if len(blob) <= MAX_DATA else {"truncated": blob[:MAX_DATA]}
        line = json.dumps(ev, default=str)
        with self._lock:
            try:
                self._rotate_if_needed()
                # created private (0600): events carry the commands users ran (issue 15)
                with open(self.path, "a", encoding="utf-8", opener=_private) as f:
                    f.write(line + "\n")
            except OSError as e:
                # The JSON lines are a copy for log shippers; the DB row below is the record.
                # An event is emitted after its change happened: failing here (a full log
                # filesystem) would fail a deploy whose container exists, with nothing rolled back.
                self._file_failed(e)
        self.store.add_event(ev)
        for fn in list(self.listeners):
            try:
                fn(ev)
            except Exception:  # an observer must never break the action it observes
                log.exception("event listener failed")
        level = logging.INFO if result == "ok" else logging.WARNING
        log.log(level, "%s %s by %s: %s%s", action, target or "-", user or "-", result,
                f" ({reason})" if reason else "")
        return ev

    def _file_failed(self, e: OSError) -> None:
        now = time.monotonic()
        self.file_errors += 1
        if now - self._warned_at >= 60:  # one line a minute, not one per event
            self._warned_at = now
            log.warning("cannot write %s (%s); events are still recorded in the state DB (%d lost lines)",
                        self.path, e.strerror or e, self.file_errors)

    def _rotate_if_needed(self) -> None:
        try:
            if self.path.stat().st_size < self.max_bytes:
                return
        except FileNotFoundError:
            return
        # keep ``keep`` previous generations: events.jsonl.1 (newest) … .N (the DB keeps the full history)
        gen = lambda i: self.path.with_name(f"{self.path.name}.{i}")  # noqa: E731
        gen(self.keep).unlink(missing_ok=True)
        for i in range(self.keep - 1, 0, -1):
            if gen(i).exists():
                os.replace(gen(i), gen(i + 1))
        os.replace(self.path, gen(1))
