"""Usage accounting service: GPU-hours, container-hours and peak memory per user, group or
project, from the allocation and container records (pure sums in ``policy.usage``).

Peak memory: the kernel keeps each container's high-water mark in its memory cgroup
(``memory.peak`` on cgroup v2, ``memory.max_usage_in_bytes`` on v1, the latter including page
cache). ``sample_peaks()`` copies it into ``container_peaks`` once per daemon tick, so a report
knows a container's peak up to its last sample before removal (one tick at most is missed).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ds01.errors import DS01Error, InvalidInput
from ds01.policy.usage import BY_VALUES, AllocationInterval, ContainerInterval, account, totals
from ds01.services.identity import Caller, caller_from_uid

log = logging.getLogger("ds01d")

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_memory_peak(docker_id: str, root: Path = CGROUP_ROOT) -> int | None:
    """The container's memory high-water mark from its cgroup, or None when not readable."""
    for rel in (f"system.slice/docker-{docker_id}.scope/memory.peak", f"docker/{docker_id}/memory.peak",
                f"memory/docker/{docker_id}/memory.max_usage_in_bytes",
                f"memory/system.slice/docker-{docker_id}.scope/memory.max_usage_in_bytes"):
        try:
            return int((root / rel).read_text().strip())
        except (OSError, ValueError):
            continue
    return None


class UsageService:
    def __init__(self, ctx: Any, containers: Any):
        self.ctx = ctx
        self.containers = containers

    # -- sampling --------------------------------------------------------------------------
    def sample_peaks(self) -> int:
        """Record the memory high-water mark of every running managed container (cheap: one file
        read each). Returns how many were sampled."""
        now = self.ctx.clock()
        n = 0
        for rec in self.ctx.store.live_containers():
            if rec.status != "running" or not rec.docker_id:
                continue
            peak = cgroup_memory_peak(rec.docker_id)
            if peak is None:
                continue
            self.ctx.store.record_peak(rec.id, peak, now)
            n += 1
        return n

    # -- reports ---------------------------------------------------------------------------
    def _groups(self, users: dict[str, int]) -> dict[str, str]:
        """user → limits group name (the fair-share unit); else the primary Unix group."""
        out = {}
        for name, uid in users.items():
            try:
                who = caller_from_uid(uid, None, self.ctx.config.admin_group)
            except DS01Error:
                out[name] = "(no account)"
                continue
            lim = self.containers.limits_for(who)
            out[name] = lim.group or who.group
        return out

    def records(self, since: float, until: float, uid: int | None = None
                ) -> tuple[list[AllocationInterval], list[ContainerInterval], dict[str, int]]:
        arows = self.ctx.store.allocations_between(since, until, uid)
        crows = self.ctx.store.containers_between(since, until, uid)
        users: dict[str, int] = {}
        allocs = []
        for r in arows:
            users[r["user"]] = r["uid"]
            allocs.append(AllocationInterval(r["user"], r["project"], float(r["equivalents"]), float(r["start"]),
                                             None if r["end"] is None else float(r["end"]), r["device"]))
        conts = []
        for r in crows:
            users[r["user"]] = r["uid"]
            end = r["ended_at"]
            if end is None and r["status"] in ("removed", "gone"):  # ended without a time: its last known
                end = r["stopped_at"] or r["created_at"]
            peak = r["peak_bytes"]
            if r["status"] == "running" and r["docker_id"]:  # still running: its high-water mark now
                live = cgroup_memory_peak(r["docker_id"])
                if live is not None:
                    peak = max(peak or 0, live)
            conts.append(ContainerInterval(r["user"], r["project"], float(r["created_at"]),
                                           None if end is None else float(end), peak, r["node"] or ""))
        return allocs, conts, users

    def report(self, who: Caller, since: float, until: float | None = None, by: str = "user",
               user: Caller | None = None) -> dict[str, Any]:
        """Usage in [since, until). Users get their own; admins everyone, or ``user``."""
        if by not in BY_VALUES:
            raise InvalidInput(f"--by must be one of {', '.join(BY_VALUES)}")
        now = self.ctx.clock()
        until = now if until is None else min(until, now)
        if since >= until:
            raise InvalidInput("the report window is empty (--since must be in the past)")
        scope = user.uid if user is not None else (None if who.is_admin else who.uid)
        t0 = time.monotonic()
        allocs, conts, users = self.records(since, until, scope)
        groups = self._groups(users) if by == "group" else {}
        rows = account(allocs, conts, since, until, by, groups)
        return {"since": since, "until": until, "by": by, "scope": "all" if scope is None else "user",
                "rows": [r.to_dict(by) for r in rows], "totals": totals(rows),
                "peak_memory": "cgroup high-water mark, sampled each daemon tick",
                "computed_ms": round((time.monotonic() - t0) * 1000, 2)}
