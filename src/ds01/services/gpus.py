"""GPU-facing services: inventory with holders, limits/usage (quota), the fair queue, and the
periodic work that releases held devices and serves the queue."""

from __future__ import annotations

import json
import logging
from typing import Any

from ds01 import faults
from ds01.errors import CapacityExhausted, DS01Error, NotFound
from ds01.policy.allocation import GpuRequest
from ds01.policy.queue import QueueEntry, UsageRecord, decay, next_servable, order
from ds01.services.containers import ContainerService
from ds01.services.identity import Caller, caller_from_uid
from ds01.state.db import LIVE

log = logging.getLogger("ds01d")


class GpuService:
    def __init__(self, containers: ContainerService, jobs: Any = None, disk: Any = None, cluster: Any = None):
        self.containers = containers
        # ClusterService (issue 18): in cluster mode Slurm places and orders; None = this server
        self.cluster = cluster if cluster is not None and cluster.active else None
        self.ctx = containers.ctx
        # DiskService (issue 16): workspace/image bytes and max_workspace_bytes; None in unit tests
        self.disk = disk
        # JobService: queued GPU jobs wait in the same fair-share order as interactive requests
        self.jobs = jobs

    # -- views -----------------------------------------------------------------------------
    def inventory(self) -> dict[str, Any]:
        held = {a["device"]: a for a in self.ctx.store.open_allocations()}
        util = {}
        try:
            util = self.ctx.gpu_source.utilization()
        except DS01Error as e:
            log.warning("GPU utilization unavailable: %s", e.message)
        devices = []
        for d in self.ctx.inventory.devices:
            row = d.to_dict()
            row["equivalents"] = d.equivalents
            row["allocatable"] = d in self.ctx.inventory.allocatable
            a = held.get(d.uuid)
            row["holder"] = {"user": a["user"], "project": a["project"], "since": a["start"]} if a else None
            u = util.get(d.uuid)
            row["utilization"] = None if u is None else {"gpu_percent": u.gpu_percent,
                                                         "memory_used_bytes": u.memory_used_bytes}
            devices.append(row)
        total = sum(d.equivalents for d in self.ctx.inventory.allocatable)
        used = sum(a["equivalents"] for a in held.values())
        out = {"driver_version": self.ctx.inventory.driver_version, "cuda_version": self.ctx.inventory.cuda_version,
                "source": "slurm" if self.cluster else getattr(self.ctx.gpu_source, "kind",
                                                              type(self.ctx.gpu_source).__name__),
                "devices": devices, "total_equivalents": round(total, 4), "free_equivalents": round(total - used, 4),
                "queue_length": len(self.ctx.store.waiting())}
        if self.cluster is not None:
            out["nodes"] = self.cluster.nodes()
        return out

    def limits(self, who: Caller) -> dict[str, Any]:
        lim = self.containers.limits_for(who)
        holding = self.ctx.store.holding(who.uid)
        live = self.ctx.store.live_containers(who.uid)
        # batch jobs (issue 14): queued / running against max_jobs_queued / max_jobs_running
        jobs = self.jobs.counts(who.uid) if self.jobs is not None else {}
        return {
            "user": who.name,
            "group": lim.group,
            "limits": lim.to_dict(),
            "sources": lim.sources,
            "usage": {"gpus": round(holding, 4), "containers": len(live), **jobs},
            "left": {"gpus": round(max(0.0, lim.max_gpus - holding), 4),
                     "containers": max(0, lim.max_containers - len(live)),
                     **{k: max(0, getattr(lim, "max_" + k) - n) for k, n in jobs.items()}},
            # holding more than the limit allows: it was lowered (reload) while held; what is held
            # stays, new requests are refused until usage is back under it
            "over": {k: v for k, v in (("gpus", holding > lim.max_gpus + 1e-9),
                                       ("containers", len(live) > lim.max_containers),
                                       *((k, n > getattr(lim, "max_" + k)) for k, n in jobs.items())) if v},
            # workspace and image bytes, the last background measurement (services/disk.py)
            "disk": self.disk.usage(who, lim) if self.disk is not None else None,
        }

    # -- queue -----------------------------------------------------------------------------
    def _entries(self) -> list[tuple[QueueEntry, dict]]:
        out = []
        for row in self.ctx.store.waiting():
            req = GpuRequest.from_dict(json.loads(row["request"]))
            out.append((QueueEntry(id=row["id"], user=row["user"], request=req, enqueued_at=row["enqueued_at"],
                                   seq=row["id"]), row))
        if self.jobs is not None:
            out += self.jobs.queue_entries()
        return out

    def _ordered(self) -> list[tuple[QueueEntry, dict]]:
        now = self.ctx.clock()
        q = self.ctx.config.queue
        entries = self._entries()
        rows = self.ctx.store.allocation_history(now - 10 * q.half_life)
        usage = decay([UsageRecord(r["user"], r["start"], r["end"], r["equivalents"]) for r in rows], now,
                      q.half_life)
        weights = {}
        for e, row in entries:
            try:
                weights[e.user] = self.containers.limits_for(
                    caller_from_uid(row["uid"], None, self.ctx.config.admin_group)).priority_weight
            except DS01Error:
                weights[e.user] = 1.0
        by_id = {e.id: (e, row) for e, row in entries}
        return [by_id[e.id] for e in order([e for e, _ in entries], usage, weights, now, q.aging)]

    def queue(self, who: Caller | None) -> list[dict[str, Any]]:
        """The waiting requests in serving order, with an estimate from holders' max runtimes."""
        ordered = self._ordered()
        now = self.ctx.clock()
        estimate = self._estimate(now)
        slurm = self.cluster.queue_info() if self.cluster is not None else {}
        out = []
        for pos, (e, row) in enumerate(ordered, start=1):
            if who is not None and row["uid"] != who.uid:
                continue
            out.append({"id": e.id, "position": pos, "user": e.user, "project": row["project"],
                        "request": e.request.describe(), "waiting_s": round(now - e.enqueued_at, 1),
                        "estimate_s": estimate, **slurm.get(e.id, {})})  # cluster: Slurm's reason and estimate
        return out

    def _estimate(self, now: float) -> float | None:
        """Seconds until the first device frees at the latest: the soonest max_runtime end among
        current holders (an upper bound; they may finish earlier)."""
        ends = []
        for a in self.ctx.store.open_allocations():
            rec = self.ctx.store.get_container(a["container"])
            if rec is None:
                continue
            try:
                lim = self.containers.limits_for(caller_from_uid(rec.uid, None, self.ctx.config.admin_group))
            except DS01Error:
                continue
            started = rec.started_at or rec.created_at
            ends.append(max(0.0, started + lim.max_runtime - now))
        return round(min(ends), 0) if ends else None

    def cancel(self, who: Caller, queue_id: int) -> dict[str, Any]:
        row = self.ctx.store.waiting_entry(queue_id)
        if row is None or (row["uid"] != who.uid and not who.is_admin):
            raise NotFound(f"you have no waiting request {queue_id}", "'gpu-queue' lists yours")
        self.ctx.store.end_queued(queue_id, "cancelled", self.ctx.clock())
        self.containers.placement.release(row.get("slurm_job"))  # cluster mode: its pending job
        self.ctx.events.emit("queue.cancel", user=row["user"], uid=row["uid"], target=row["project"])
        return {"cancelled": queue_id}

    def serve_queue(self) -> list[dict[str, Any]]:
        """Start every queued request that fits now, in fair-share order (called each tick and
        whenever devices are released). In cluster mode: every request whose Slurm job started."""
        if self.cluster is not None:
            return self.cluster.serve_queue()
        ordered = self._ordered()
        if not ordered:
            return []
        held = self.ctx.store.held_devices()
        servable = next_servable([e for e, _ in ordered], self.ctx.inventory, held)
        rows = {e.id: row for e, row in ordered}
        served = []
        for entry, _alloc in servable:
            row = rows[entry.id]
            if row.get("kind") == "job":  # a batch job: it starts itself (its own container)
                if self.jobs.start_queued(row["job_id"]):
                    served.append({"job": row["job_id"]})
                continue
            try:
                who = caller_from_uid(row["uid"], None, self.ctx.config.admin_group)
                out = self.containers.deploy(who, who, row["project"], image=row["image"], request=entry.request,
                                             ports=json.loads(row["ports"] or "[]"), queue=False,
                                             queue_id=entry.id)
            except CapacityExhausted:
                continue  # someone was faster; stays queued
            except DS01Error as e:
                self.ctx.store.end_queued(entry.id, "failed", self.ctx.clock(), note=e.message)
                self.ctx.events.emit("queue.failed", user=row["user"], uid=row["uid"], target=row["project"],
                                     result="error", reason=e.message)
                continue
            faults.point("queue.started")  # tests: a crash between the start and the row's end
            self.ctx.store.end_queued(entry.id, "served", self.ctx.clock())
            waited = self.ctx.clock() - entry.enqueued_at
            self.ctx.events.emit("queue.served", user=row["user"], uid=row["uid"], target=row["project"],
                                 data={"gpus": out.get("gpus"), "waited_s": round(waited, 1)})
            self._notify(who, row["project"],
                         f"your queued GPU request for '{row['project']}' started after {waited:.0f}s "
                         f"(devices {', '.join(out.get('gpus') or [])}); open it with 'container-run {row['project']}'")
            served.append(out)
        return served

    def recover_serving(self) -> dict[str, int]:
        """At start-up, after reconcile: a request whose container was recorded ('serving') but
        whose serving did not finish (the daemon died) is finished when its container runs, else
        undone (the container removed, its devices released, the request waiting again)."""
        finished = undone = 0
        for row in self.ctx.store.serving():
            rec = self.ctx.store.get_container(row["container"]) if row["container"] else None
            if rec is not None and rec.status == "running":
                self.ctx.store.end_queued(row["id"], "served", self.ctx.clock())
                self.ctx.events.emit("queue.served", user=row["user"], uid=row["uid"], target=row["project"],
                                     reason="finished at daemon start", data={"gpus": rec.gpus})
                finished += 1
                continue
            if rec is not None and rec.status in LIVE:
                try:
                    who = caller_from_uid(rec.uid, None, self.ctx.config.admin_group)
                    self.containers.remove(who, who, rec.project, force=True)
                except DS01Error as e:
                    log.warning("could not undo the half-served queue entry %s: %s", row["id"], e.message)
            self.ctx.store.requeue(row["id"])
            undone += 1
        return {"queue_finished": finished, "queue_requeued": undone}

    def _notify(self, who: Caller, project: str, text: str) -> None:
        from ds01.services.notify import notify_quietly

        notify_quietly(self.ctx, who, project, text)

    # -- periodic --------------------------------------------------------------------------
    def release_expired_holds(self) -> int:
        """Devices of containers stopped longer than their owner's ``gpu_hold_after_stop``."""
        now = self.ctx.clock()
        released = 0
        for rec in self.ctx.store.live_containers():
            if rec.status != "exited" or not rec.gpus or not rec.stopped_at:
                continue
            try:
                lim = self.containers.limits_for(caller_from_uid(rec.uid, None, self.ctx.config.admin_group))
            except DS01Error:
                continue
            if now - rec.stopped_at >= lim.gpu_hold_after_stop:
                # Only what was held when it stopped: if it was restarted since this snapshot, the
                # devices it took back (allocations newer than the stop) stay with it.
                n = self.ctx.store.release(rec.id, now, "hold after stop expired", started_before=rec.stopped_at)
                if n:
                    released += n
                    self.ctx.events.emit("gpu.release", user=rec.user, uid=rec.uid, target=rec.project,
                                         reason="gpu_hold_after_stop expired")
        return released
