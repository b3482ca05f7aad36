"""Image build stamps and superseded project images (see services.images)."""

from __future__ import annotations

import json
import time
from typing import Any

from ds01.state.base import StoreBase


class StampsStore(StoreBase):
    def build_stamp(self, uid: int, project: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM build_stamps WHERE uid=? AND project=?", (uid, project))
        if not rows:
            return None
        d = dict(rows[0])
        d["bases"] = json.loads(d["bases"])
        return d

    def set_build_stamp(self, uid: int, project: str, image_id: str, fingerprint: str, bases: dict[str, str],
                        buildargs: str) -> None:
        self._execute("INSERT OR REPLACE INTO build_stamps (uid, project, image_id, fingerprint, bases, buildargs, at)"
                      " VALUES (?,?,?,?,?,?,?)",
                      (uid, project, image_id, fingerprint, json.dumps(bases, sort_keys=True), buildargs, time.time()))

    def clear_build_stamp(self, uid: int, project: str) -> None:
        self._execute("DELETE FROM build_stamps WHERE uid=? AND project=?", (uid, project))

    def add_superseded(self, uid: int, image_id: str) -> None:
        self._execute("INSERT OR REPLACE INTO superseded_images (image_id, uid, at) VALUES (?,?,?)",
                      (image_id, uid, time.time()))

    def superseded_images(self, uid: int) -> list[str]:
        return [r["image_id"] for r in self._query("SELECT image_id FROM superseded_images WHERE uid=? ORDER BY at",
                                                   (uid,))]

    def forget_superseded(self, image_id: str) -> None:
        self._execute("DELETE FROM superseded_images WHERE image_id=?", (image_id,))
