"""What the machine is doing: devices with holders and processes, free capacity, the queue, the
caller's containers and limits (``ds01 status``), and the admin dashboard.

Who uses which GPU: the driver reports compute PIDs per device (``gpu_source.processes()``); each
PID's ``/proc/<pid>/cgroup`` names its Docker container (a 64-hex id in the path), which names a
managed container record and so its owner. A PID in no container is a host process; one in a
container DS01 does not manage is an unmanaged container. Both are listed as ``unmanaged``.
"""

from __future__ import annotations

import logging
import pwd
import re
import threading
import time
from pathlib import Path
from typing import Any

from ds01.errors import DS01Error
from ds01.services.identity import Caller, caller_from_uid

log = logging.getLogger("ds01d")

_CID = re.compile(r"(?<![0-9a-f])([0-9a-f]{64})(?![0-9a-f])")
PROC = Path("/proc")

# events shown as "lifecycle actions" (the lifecycle loop emits lifecycle.*)
LIFECYCLE_PREFIXES = ("lifecycle.", "gpu.release", "container.gone", "queue.served", "queue.failed")


def container_id_of_pid(pid: int, proc: Path = PROC) -> str | None:
    """The Docker container id in ``/proc/<pid>/cgroup`` (cgroup v1 or v2, cgroupfs or systemd
    driver), or None for a process in no container (or one that exited)."""
    try:
        text = (proc / str(pid) / "cgroup").read_text()
    except OSError:
        return None
    found = None
    for line in text.splitlines():
        for m in _CID.finditer(line):
            found = m.group(1)
    return found


def _proc_owner(pid: int, proc: Path = PROC) -> tuple[str | None, str | None]:
    """(user name, command) of a host process, best effort."""
    user = comm = None
    try:
        for line in (proc / str(pid) / "status").read_text().splitlines():
            if line.startswith("Uid:"):
                uid = int(line.split()[1])
                try:
                    user = pwd.getpwuid(uid).pw_name
                except KeyError:
                    user = str(uid)
                break
        comm = (proc / str(pid) / "comm").read_text().strip()
    except (OSError, ValueError):
        pass
    return user, comm


class StatusService:
    def __init__(self, containers: Any, gpu: Any):
        self.containers = containers
        self.gpu = gpu
        self.ctx = containers.ctx
        self._util_lock = threading.Lock()
        self._util: tuple[float, dict] = (0.0, {})

    # -- cached driver reads ---------------------------------------------------------------
    def utilization(self, max_age: float = 1.0) -> dict:
        """Device utilization, read at most once per ``max_age`` seconds (scrapes, the web page
        and ``status --watch`` share one driver read)."""
        with self._util_lock:
            t, data = self._util
            if time.monotonic() - t < max_age:
                return data
            try:
                data = self.ctx.gpu_source.utilization()
            except DS01Error as e:
                log.warning("GPU utilization unavailable: %s", e.message)
                data = {}
            self._util = (time.monotonic(), data)
            return data

    # -- who uses which GPU ----------------------------------------------------------------
    def processes(self) -> dict[str, list[dict[str, Any]]]:
        """device uuid → the compute processes on it, each mapped to its container and owner."""
        try:
            procs = self.ctx.gpu_source.processes()
        except DS01Error as e:
            log.warning("GPU processes unavailable: %s", e.message)
            return {}
        if not any(procs.values()):
            return {u: [] for u in procs}
        recs = {r.docker_id: r for r in self.ctx.store.live_containers() if r.docker_id}
        holders = {a["device"]: a["container"] for a in self.ctx.store.open_allocations()}
        out: dict[str, list[dict[str, Any]]] = {}
        for uuid, pids in procs.items():
            rows = []
            for pid in pids:
                cid = container_id_of_pid(pid)
                rec = recs.get(cid) if cid else None
                if rec is not None:
                    rows.append({"pid": pid, "managed": True, "kind": "container", "user": rec.user,
                                 "project": rec.project, "container": rec.docker_name,
                                 "holds_device": holders.get(uuid) == rec.id})
                elif cid is not None:
                    name = None
                    try:
                        info = self.ctx.runtime.inspect(cid)
                        name = info.name if info else None
                    except DS01Error:
                        pass
                    rows.append({"pid": pid, "managed": False, "kind": "unmanaged-container",
                                 "container": name or cid[:12], "user": None, "project": None})
                else:
                    user, comm = _proc_owner(pid)
                    rows.append({"pid": pid, "managed": False, "kind": "host", "user": user, "command": comm,
                                 "project": None})
            out[uuid] = rows
        return out

    # -- views -----------------------------------------------------------------------------
    def devices(self) -> dict[str, Any]:
        """The inventory view (``GET /v1/gpus``) plus each device's processes."""
        inv = self.gpu.inventory()
        procs = self.processes()
        unmanaged = []
        for d in inv["devices"]:
            d["processes"] = procs.get(d["uuid"], [])
            for p in d["processes"]:
                if not p["managed"]:
                    unmanaged.append({**p, "device": d["label"], "uuid": d["uuid"]})
        inv["unmanaged_processes"] = unmanaged
        return inv

    def status(self, who: Caller) -> dict[str, Any]:
        inv = self.devices()
        return {
            "time": self.ctx.clock(),
            "gpus": inv,
            "free_equivalents": inv["free_equivalents"],
            "total_equivalents": inv["total_equivalents"],
            "queue": self.gpu.queue(None),
            "jobs": self.jobs(),
            "me": {"user": who.name, "admin": who.is_admin, "containers": self.containers.list(who),
                   "limits": self.gpu.limits(who)},
        }

    def jobs(self, hide_names: bool = False) -> dict[str, list[dict[str, Any]]]:
        """Everyone's running and queued batch jobs (``JobService.board``: no commands)."""
        jobs = getattr(self.gpu, "jobs", None)
        board = jobs.board() if jobs is not None else {"running": [], "queued": []}
        if hide_names:
            board = {k: [{**j, "user": "(hidden)", "project": "(hidden)", "name": None} for j in v]
                     for k, v in board.items()}
        return board

    def recent_events(self, limit: int = 20, lifecycle_only: bool = False, since: float = 0) -> list[dict]:
        rows = self.ctx.store.find_events(since, prefixes=LIFECYCLE_PREFIXES if lifecycle_only else (), limit=limit)
        return [event_view(r) for r in rows]

    def events(self, who: Caller, since: float = 0, user: Caller | None = None, types: list[str] | None = None,
               results: list[str] | None = None, limit: int = 200, hide: tuple[str, ...] = ()
               ) -> list[dict[str, Any]]:
        """Events newest first. Users see their own (by uid); admins everyone's, or ``user``'s.
        ``types`` match an action exactly or as a prefix (``container`` = ``container.*``);
        actions in ``hide`` are left out."""
        uid = user.uid if user is not None else (None if who.is_admin else who.uid)
        rows = self.ctx.store.find_events(since, uid=uid, types=types, results=results, limit=limit, hide=hide)
        return [event_view(r) for r in rows]

    def dashboard(self, who: Caller, with_stats: bool = True) -> dict[str, Any]:
        """Admin view: status for everyone, per-user totals with CPU/memory, containers close to
        their idle or runtime limits, recent lifecycle actions."""
        now = self.ctx.clock()
        base = self.status(who)
        conts = self.containers.list(None)
        stats = {}
        if with_stats:
            try:
                stats = {(s["user"], s["project"]): s for s in self.containers.stats(None)}
            except DS01Error as e:
                log.warning("container stats unavailable: %s", e.message)
        util = self.utilization()
        held: dict[str, float] = {}
        for a in self.ctx.store.open_allocations():
            held[a["user"]] = held.get(a["user"], 0.0) + a["equivalents"]
        users: dict[str, dict[str, Any]] = {}
        near = []
        limits_cache: dict[int, Any] = {}
        for c in conts:
            u = users.setdefault(c["user"], {"user": c["user"], "containers": 0, "running": 0, "gpus": 0.0,
                                             "cpu_percent": 0.0, "memory_bytes": 0})
            u["containers"] += 1
            s = stats.get((c["user"], c["project"]))
            if c["status"] == "running":
                u["running"] += 1
            if s:
                c["cpu_percent"] = s.get("cpu_percent")
                c["memory_bytes"] = s.get("memory_bytes")
                u["cpu_percent"] += s.get("cpu_percent") or 0.0
                u["memory_bytes"] += s.get("memory_bytes") or 0
            if c["status"] != "running":
                continue
            lim = limits_cache.get(c["uid"])
            if lim is None:
                try:
                    lim = self.containers.limits_for(caller_from_uid(c["uid"], None, self.ctx.config.admin_group))
                except DS01Error:
                    continue
                limits_cache[c["uid"]] = lim
            ran = now - (c["started_at"] or c["created_at"])
            left = lim.max_runtime - ran
            gpu_utils = [util[g].gpu_percent for g in c["gpus"] if g in util and util[g].gpu_percent is not None]
            gpu_idle = bool(gpu_utils) and max(gpu_utils) < 1.0
            cpu_idle = s is not None and (s.get("cpu_percent") or 0.0) < 2.0
            idle_now = (gpu_idle or not c["gpus"]) and cpu_idle if s is not None else gpu_idle
            reasons = []
            if lim.max_runtime and left < 0.25 * lim.max_runtime:
                reasons.append(f"runtime: {max(0, left):.0f}s left of {lim.max_runtime:.0f}s")
            if idle_now:
                reasons.append(f"idle now (idle timeout {lim.idle_timeout:.0f}s)")
            if reasons:
                near.append({"user": c["user"], "project": c["project"], "gpus": c["gpus"], "ran_s": round(ran, 1),
                             "runtime_left_s": round(left, 1), "idle_now": idle_now, "reasons": reasons})
        for name, eq in held.items():
            users.setdefault(name, {"user": name, "containers": 0, "running": 0, "gpus": 0.0, "cpu_percent": 0.0,
                                    "memory_bytes": 0})["gpus"] = round(eq, 4)
        self._disk_columns(users, conts)
        return {**base, "users": sorted(users.values(), key=lambda u: (-u["gpus"], u["user"])),
                "containers": conts, "near_limits": near,
                "lifecycle": self.recent_events(20, lifecycle_only=True)}

    def _disk_columns(self, users: dict[str, dict[str, Any]], conts: list[dict[str, Any]]) -> None:
        """Each user's workspace and image bytes: the last background measurement
        (services/disk.py), never a walk here; None until one was made."""
        disk = getattr(self.gpu, "disk", None)
        snap = disk.snapshot() if disk is not None else {}
        uids = {c["user"]: c["uid"] for c in conts}
        for name, u in users.items():
            m = snap.get(uids.get(name, -1)) or {}
            if not m and disk is not None and name in uids:
                disk.request(uids[name])
            u["workspace_bytes"] = m.get("workspace_bytes")
            u["workspace_partial"] = m.get("partial")
            u["image_bytes"] = m.get("image_bytes")
            u["quota_enforced"] = m.get("enforced")

    def public(self, hide_names: bool = False, events: int = 20) -> dict[str, Any]:
        """What the web page shows (anyone who can reach its local address sees this): devices
        with holders and utilization, capacity, the queue, recent events. ``hide_names`` removes
        user and project names."""
        inv = self.devices()
        queue = self.gpu.queue(None)
        # Public events say what happened to whom, never the details (commands run, messages):
        # those are for the owner ('ds01 events') and admins.
        evs = [{k: e.get(k) for k in ("id", "time", "user", "action", "target", "result")}
               for e in self.recent_events(events)]
        for d in inv["devices"]:
            d["processes"] = [{**p, "command": None} for p in d["processes"]]
        inv["unmanaged_processes"] = [{**p, "command": None} for p in inv["unmanaged_processes"]]
        if hide_names:
            for d in inv["devices"]:
                if d["holder"]:
                    d["holder"] = {"user": "(hidden)", "project": "(hidden)", "since": d["holder"]["since"]}
                d["processes"] = [{**p, "user": None, "project": None, "container": None, "command": None}
                                  for p in d["processes"]]
            inv["unmanaged_processes"] = [{**p, "user": None, "container": None, "command": None}
                                          for p in inv["unmanaged_processes"]]
            queue = [{**q, "user": "(hidden)", "project": "(hidden)"} for q in queue]
            evs = [{**e, "user": None, "target": None} for e in evs]
        return {"time": self.ctx.clock(), "gpus": inv, "queue": queue, "jobs": self.jobs(hide_names), "events": evs,
                "names_hidden": hide_names}


def event_view(row: dict[str, Any]) -> dict[str, Any]:
    import json

    d = dict(row)
    if isinstance(d.get("data"), str):
        try:
            d["data"] = json.loads(d["data"])
        except ValueError:
            pass
    return d
