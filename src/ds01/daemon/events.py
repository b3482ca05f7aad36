"""Events / audit: every change, denial and lifecycle action, as a JSON line and a DB row."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from ds01.state.db import Store

log = logging.getLogger("ds01d")


class EventLog:
    def __init__(self, path: Path, store: Store, max_bytes: int = 50 * 1024**2):
        self.path = path
        self.store = store
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, action: str, *, user: str | None = None, uid: int | None = None, target: str | None = None,
             result: str = "ok", reason: str | None = None, data: dict[str, Any] | None = None) -> dict[str, Any]:
        ev = {"time": time.time(), "user": user, "uid": uid, "action": action, "target": target,
              "result": result, "reason": reason}
        if data:
            ev["data"] = data
        line = json.dumps(ev, default=str)
        with self._lock:
            self._rotate_if_needed()
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        self.store.add_event(ev)
        level = logging.INFO if result == "ok" else logging.WARNING
        log.log(level, "%s %s by %s: %s%s", action, target or "-", user or "-", result,
                f" ({reason})" if reason else "")
        return ev

    def _rotate_if_needed(self) -> None:
        try:
            if self.path.stat().st_size < self.max_bytes:
                return
        except FileNotFoundError:
            return
        # keep one previous generation: events.jsonl.1 (the DB keeps the full history)
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
