"""The charts' data (issue 16 item 6): per device the last 24 h of allocation (exact, from the
allocation records) and utilization (sampled), per user the week's GPU-hours (``policy.usage``).

Utilization history is kept in memory only (``policy.series.UtilHistory``: 5-min buckets × 24 h
per device, a few hundred numbers each), fed by the daemon's usage sampler from the shared cached
driver read (``StatusService.utilization``: no extra NVML calls). A daemon restart starts it
afresh; allocation and GPU-hour charts come from the records and survive restarts.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ds01.errors import DS01Error
from ds01.policy.series import SPAN, STEP, UtilHistory, occupancy, segments, window
from ds01.policy.usage import AllocationInterval, account

log = logging.getLogger("ds01d")

WEEK = 7 * 86400.0
HIDDEN = "(hidden)"


class ChartService:
    def __init__(self, ctx: Any, status: Any, step: float = STEP, span: float = SPAN):
        self.ctx = ctx
        self.status = status
        self.step, self.span = step, span
        self._lock = threading.Lock()
        self.history = UtilHistory(step, span)

    def sample(self) -> int:
        """Add one utilization sample per device (from the ≤1 s old cached read). Returns how many."""
        util = self.status.utilization()
        now = self.ctx.clock()
        n = 0
        with self._lock:
            for uuid, u in util.items():
                if u.gpu_percent is not None:
                    self.history.add(uuid, now, u.gpu_percent)
                    n += 1
            if util:
                self.history.forget(util)
        return n

    def view(self, hide_names: bool = False, now: float | None = None) -> dict[str, Any]:
        """What the charts draw: ``devices`` (label, uuid, allocation segments, per-bucket held
        fraction and mean utilization over the 24 h window) and ``week`` (GPU-hours per user,
        largest first). ``hide_names`` replaces user and project names with "(hidden)"."""
        now = self.ctx.clock() if now is None else now
        since, until = window(now, self.span, self.step)
        rows = self.ctx.store.allocations_between(since, until)
        segs = segments(rows, since, until)
        with self._lock:
            util = {d: self.history.series(d, until) for d in self.history.devices()}
        try:
            inventory = self.ctx.gpu_source.read().devices
        except DS01Error as e:
            log.warning("charts: GPU inventory unavailable: %s", e.message)
            inventory = ()
        devices = []
        for d in inventory:
            mine = [g for g in segs if g.device == d.uuid]
            devices.append({
                "uuid": d.uuid, "label": d.label, "kind": d.kind,
                "allocations": [self._named(g.to_dict(), hide_names) for g in mine],
                "held": occupancy(mine, since, until, self.step),
                "utilization": util.get(d.uuid) or [None] * self.history.size,
            })
        wsince = now - WEEK
        allocs = [AllocationInterval(r["user"], r["project"], float(r["equivalents"]), float(r["start"]),
                                     None if r["end"] is None else float(r["end"]), r["device"])
                  for r in self.ctx.store.allocations_between(wsince, now)]
        week = [{"user": HIDDEN if hide_names else r.key, "gpu_hours": round(r.gpu_hours, 6)}
                for r in account(allocs, [], wsince, now, "user") if r.gpu_hours > 0]
        return {"since": since, "until": until, "step": self.step, "now": now, "devices": devices,
                "week": {"since": wsince, "until": now, "users": week}, "names_hidden": hide_names}

    @staticmethod
    def _named(d: dict[str, Any], hide: bool) -> dict[str, Any]:
        if hide:
            d["user"], d["project"] = HIDDEN, HIDDEN
        return d
