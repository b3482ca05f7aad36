"""Cluster mode's periodic and start-up work (issue 18), over the Slurm placement: serving
requests whose Slurm job started, keeping the head's books equal to Slurm's, draining nodes
whose agent is down, and the views that aggregate every node.

Contract: Slurm is the truth for placement. A record whose job ended is stopped (the agent
stops the container) and holds nothing; a DS01 job in the partition that no record or waiting
request owns, and no verb is placing right now, is cancelled.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ds01.errors import CapacityExhausted, DS01Error
from ds01.policy import slurm as sp
from ds01.policy.allocation import GpuRequest
from ds01.policy.placement import Placed
from ds01.services.identity import caller_from_uid
from ds01.services.notify import notify_quietly

log = logging.getLogger("ds01d")


class ClusterService:
    def __init__(self, containers: Any):
        self.containers = containers
        self.ctx = containers.ctx
        self.placement = containers.placement

    @property
    def active(self) -> bool:
        return bool(self.placement.external)

    # -- the queue: Slurm orders it; a request is served when its job starts ------------------
    def serve_queue(self) -> list[dict[str, Any]]:
        served = []
        for row in self.ctx.store.waiting():
            job = row.get("slurm_job")
            if not job:
                continue
            try:
                now = self.placement.poll(int(job))
            except DS01Error as e:
                log.warning("queue: cannot read Slurm job %s: %s", job, e.message)
                continue
            who = caller_from_uid(row["uid"], None, self.ctx.config.admin_group)
            if now is None:  # cancelled or failed in Slurm
                self.ctx.store.end_queued(row["id"], "failed", self.ctx.clock(), note=f"Slurm job {job} ended")
                self.ctx.events.emit("queue.failed", user=row["user"], uid=row["uid"], target=row["project"],
                                     result="error", reason=f"Slurm job {job} ended before it started")
                continue
            if not isinstance(now, Placed):
                continue
            try:
                out = self.containers.deploy(who, who, row["project"], image=row["image"],
                                             request=GpuRequest.from_dict(json.loads(row["request"])),
                                             ports=json.loads(row["ports"] or "[]"), queue=False,
                                             queue_id=row["id"], placed=now)
            except CapacityExhausted:
                continue
            except DS01Error as e:
                self.placement.release(int(job))
                self.ctx.store.end_queued(row["id"], "failed", self.ctx.clock(), note=e.message)
                self.ctx.events.emit("queue.failed", user=row["user"], uid=row["uid"], target=row["project"],
                                     result="error", reason=e.message)
                continue
            self.ctx.store.end_queued(row["id"], "served", self.ctx.clock())
            waited = self.ctx.clock() - row["enqueued_at"]
            self.ctx.events.emit("queue.served", user=row["user"], uid=row["uid"], target=row["project"],
                                 data={"gpus": out.get("gpus"), "node": now.node, "job": now.job,
                                       "waited_s": round(waited, 1)})
            notify_quietly(self.ctx, who, row["project"], f"your queued request for '{row['project']}' started on "
                           f"node {now.node} after {waited:.0f}s; open it with 'container-run {row['project']}'")
            served.append(out)
        return served

    def queue_info(self) -> dict[int, dict[str, Any]]:
        """Per waiting queue id: Slurm's reason and start estimate for its pending job."""
        rows = [r for r in self.ctx.store.waiting() if r.get("slurm_job")]
        pend = self.placement.pending([int(r["slurm_job"]) for r in rows])
        now = self.ctx.clock()
        out = {}
        for r in rows:
            p = pend.get(int(r["slurm_job"]))
            if p is not None:
                out[r["id"]] = {"slurm_job": p.job, "reason": p.reason,
                                "estimate_s": None if p.start is None else round(max(0.0, p.start - now))}
        return out

    # -- books equal to Slurm's --------------------------------------------------------------
    def tick(self) -> dict[str, int]:
        if not self.active:
            return {}
        try:
            self.ctx.inventory = self.placement.inventory()  # nodes added or drained
        except DS01Error as e:
            log.warning("cluster: cannot read Slurm's nodes: %s", e.message)
        try:
            self.placement.tick()
        except DS01Error as e:
            log.warning("cluster: %s", e.message)
        return self.reconcile()

    def reconcile(self) -> dict[str, int]:
        """Records of ended jobs stopped and released; DS01 jobs nobody owns cancelled. Run at
        start-up (the head restarted) and every tick."""
        if not self.active:
            return {}
        try:
            jobs = {j.id: j for j in self.placement.slurm.jobs(self.ctx.config.cluster.partition)}
        except DS01Error as e:
            log.warning("cluster reconcile: %s", e.message)
            return {}
        ended = orphans = 0
        owned: set[int] = set()
        for rec in self.ctx.store.live_containers():
            if not rec.slurm_job or rec.status == "job":  # a batch job's: the job runner's
                owned.add(rec.slurm_job or 0)
                continue
            owned.add(rec.slurm_job)
            j = jobs.get(rec.slurm_job)
            if j is not None and j.live:
                continue
            if rec.status in ("created", "running") or self.ctx.store.open_allocations(rec.id):
                try:  # the listing decides nothing alone: the job by id, once more
                    again = self.placement.slurm.job(rec.slurm_job)
                except DS01Error:
                    continue
                if again is None or not again.live:
                    ended += self._job_ended(rec)
        owned |= {int(r["slurm_job"]) for r in self.ctx.store.waiting() if r.get("slurm_job")}
        from ds01.policy.jobs import QUEUED, STARTING, RUNNING

        owned |= {j.slurm_job for j in self.ctx.store.jobs_in((QUEUED, STARTING, RUNNING)) if j.slurm_job}
        for j in jobs.values():
            parsed = sp.parse_job_name(j.name)
            if j.id in owned or not j.live or parsed is None or parsed[0] != self.ctx.instance:
                continue
            _, uid, project = parsed
            with self.containers._ops.try_hold(uid, project) as free:
                if not free:  # a verb is placing it right now: it will own the job
                    continue
                rec = self.ctx.store.live_container(uid, project)
                if rec is not None and rec.slurm_job == j.id:
                    continue
                again = self.placement.slurm.job(j.id)  # by id: a listing's text is not proof enough
                if again is None or not again.live or again.name != j.name or again.user_id != uid \
                        or again.partition != self.ctx.config.cluster.partition:
                    continue
                log.warning("cancelling Slurm job %s (%s): no DS01 record owns it", j.id, j.name)
                self.placement.release(j.id)
                orphans += 1
        return {"jobs_ended": ended, "jobs_orphaned": orphans}

    def _job_ended(self, rec) -> int:
        """The job of ``rec`` is over (scancel, time limit, node failure): the container stops
        (the agent's sweep stops it too, even if its node is unreachable now), the record says
        so, its devices are free."""
        try:
            who = caller_from_uid(rec.uid, None, self.ctx.config.admin_group)
            self.containers.stop(who, who, rec.project, timeout=10)
        except DS01Error as e:
            log.warning("job %s of %s/%s ended; stopping its container: %s", rec.slurm_job, rec.user, rec.project,
                        e.message)
        cur = self.ctx.store.get_container(rec.id) or rec
        if cur.status in ("created", "running"):  # its node did not answer: the agent stops it
            self.ctx.store.update_container(rec.id, status="exited", stopped_at=self.ctx.clock())
        self.containers._end_placement(cur, "job ended")
        self.ctx.events.emit("container.job_ended", user=rec.user, uid=rec.uid, target=rec.project,
                             reason=f"its Slurm job {rec.slurm_job} ended", data={"node": rec.node})
        return 1

    # -- views -------------------------------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        if not self.active:
            return []
        try:
            return self.placement.nodes()
        except DS01Error as e:
            log.warning("cluster: %s", e.message)
            return []
