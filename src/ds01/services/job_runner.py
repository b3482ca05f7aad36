"""Running batch jobs (issue 14): start, follow the output, time limits, end, restart recovery.

A job's container is created from the same ``build_spec`` as any container (so the same
security options, limits, user and GPU hand-off), renamed and labelled by ``policy.jobs.job_spec``.
Its GPUs are allocations of a ``containers`` row with status ``job`` (never a live container:
``container-list``, idle reclaim and reconcile leave it alone), so they count in ``max_gpus``,
``ds01 gpus`` and fair-share usage like any holder's.

Each running job has a follower thread that copies the engine's log into a bounded file under
the daemon's state dir and, when the stream ends, finishes the job. After a daemon restart
(:meth:`recover`) the follower is started again and rewrites the file from the engine's complete
log, so nothing is lost or doubled; the engine kept running the job meanwhile. An engine restart
is recognised by the engine process's boot marker changing: ``lost`` (or queued again with
``--requeue``), never silently ``running``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Any

from ds01 import labels
from ds01.errors import DS01Error, InvalidInput
from ds01.models.gpu import GpuRequest
from ds01.policy import jobs as P
from ds01.policy.allocation import Allocation, decide
from ds01.policy.containers import build_spec
from ds01.policy.limits import EffectiveLimits, effective_limits
from ds01.policy.placement import Placed
from ds01.services.context import Context
from ds01.services.identity import Caller, caller_from_uid
from ds01.services.workspace import ensure_workspace, existing_workspace
from ds01.state.db import ContainerRecord
from ds01.state.jobs import JobRecord

log = logging.getLogger("ds01d")
ACTIVE_RUN = (P.STARTING, P.RUNNING)


def engine_boot_marker(pidfile: str = "/var/run/docker.pid") -> str | None:
    """``pid:start-time`` of the local dockerd (changes when the engine restarts), or None
    when it cannot be read (a remote engine): then only a vanished container counts as lost."""
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return f"{pid}:{stat.rsplit(')', 1)[1].split()[19]}"
    except (OSError, ValueError, IndexError):
        return None


class JobRunner:
    def __init__(self, ctx: Context, containers: Any, images: Any = None, on_release: Any = None,
                 jobs_dir: str | None = None, boot_marker=engine_boot_marker):
        self.ctx = ctx
        self.containers = containers  # ContainerService: workspace pins, image checks
        self.images = images
        self.on_release = on_release
        base = os.path.dirname(ctx.mounts_dir) if ctx.mounts_dir else "/var/lib/ds01"
        self.dir = jobs_dir or os.path.join(base, "jobs")
        self.boot_marker = boot_marker
        self._followers: dict[int, threading.Thread] = {}
        self._stopping: set[int] = set()
        self._lock = threading.Lock()
        self._finish = threading.Lock()

    @property
    def cfg(self):
        return self.ctx.config

    def _who(self, uid: int) -> Caller:
        return caller_from_uid(uid, None, self.cfg.admin_group)

    def _limits(self, who: Caller) -> EffectiveLimits:
        return effective_limits(self.cfg, who.name, set(who.groups))

    def _wake(self) -> None:
        if self.on_release:
            self.on_release()

    def log_path(self, job_id: int) -> str:
        return os.path.join(self.dir, f"{job_id}.log")

    # -- who may start ---------------------------------------------------------------------
    def _may_start(self, job: JobRecord, lim: EffectiveLimits, tx=None) -> bool:
        store = self.ctx.store
        if job.after and P.dependencies(store.job_states(job.after, tx))[0] != "ready":
            return False
        if job.array_id is not None and job.array_throttle and not P.throttle_allows(
                store.count_array(job.array_id, ACTIVE_RUN, tx), job.array_throttle):
            return False
        return P.under_running_limit(store.count_jobs(job.uid, ACTIVE_RUN, tx), lim.max_jobs_running)

    def _eligible(self) -> list[tuple[JobRecord, Caller, EffectiveLimits]]:
        """Queued jobs that may start as far as jobs go (dependencies, %N, max_jobs_running);
        GPU jobs still need the fair queue to serve them."""
        out, cache = [], {}
        for job in self.ctx.store.jobs_in((P.QUEUED,)):
            try:
                if job.uid not in cache:
                    who = self._who(job.uid)
                    cache[job.uid] = (who, self._limits(who))
                who, lim = cache[job.uid]
            except DS01Error:
                continue
            if self._may_start(job, lim):
                out.append((job, who, lim))
        return out

    def queue_entries(self) -> list[tuple[Any, dict]]:
        """The GPU jobs that wait in the fair queue now, as (QueueEntry, row) for GpuService:
        interactive requests and jobs share one order."""
        from ds01.policy.queue import QueueEntry

        out = []
        for job, _who, _lim in self._eligible():
            req = GpuRequest.from_dict(job.request)
            if req.kind == "none":
                continue
            out.append((QueueEntry(id=f"job:{job.id}", user=job.user, request=req, enqueued_at=job.submitted_at,
                                   seq=job.id),
                        {"kind": "job", "job_id": job.id, "uid": job.uid, "user": job.user,
                         "project": f"{job.project} (job {job.id})", "enqueued_at": job.submitted_at}))
        return out

    # -- start -----------------------------------------------------------------------------
    def start_queued(self, job_id: int) -> bool:
        """Start a queued job if it may and its devices are free now; whether it started."""
        job = self.ctx.store.get_job(job_id)
        if job is None or job.state != P.QUEUED:
            return False
        try:
            who = self._who(job.uid)
        except DS01Error as e:
            self._end_queued(job, P.FAILED, e.message)
            return False
        return self._start(job, who, self._limits(who))

    def _placed(self, job: JobRecord, who: Caller, lim: EffectiveLimits) -> Any:
        """Cluster mode: the job's Slurm placement once it started (None: not yet; submitted
        as the user on the first call, with the job's own time limit)."""
        placement = self.containers.placement
        if not job.slurm_job:
            args = placement.submit_args(who, f"{job.project}-job{job.id}", GpuRequest.from_dict(job.request), lim,
                                         "/tmp", time_limit_s=job.time_limit)
            sjob = placement.slurm.submit(args)
            try:
                self.ctx.store.update_job(job.id, slurm_job=sjob)
            except BaseException:
                placement.release(sjob)  # not recorded: not left in Slurm either
                raise
            return None
        now = placement.poll(job.slurm_job)
        if now is None:  # cancelled or failed in Slurm before it started: submit again next time
            self.ctx.store.update_job(job.id, slurm_job=None)
            return None
        return now if isinstance(now, Placed) else None

    def _start(self, job: JobRecord, who: Caller, lim: EffectiveLimits) -> bool:
        store, now = self.ctx.store, self.ctx.clock()
        req = GpuRequest.from_dict(job.request)
        name = P.job_container_name(self.cfg.containers.name_prefix, job.uid, job.id)
        placed = None
        if self.containers.placement.external:
            try:
                placed = self._placed(job, who, lim)
            except InvalidInput as e:  # never submittable: the job fails, the others go on
                self._end_queued(job, P.FAILED, e.message)
                return False
            except DS01Error as e:
                log.warning("job %s: Slurm: %s", job.id, e.message)
                return False
            if placed is None:
                return False
        with store.transaction() as tx:
            cur = store.get_job(job.id, tx)
            if cur is None or cur.state != P.QUEUED or not self._may_start(cur, lim, tx):
                return False
            devices: dict[str, float] = {}
            if placed is not None:  # cluster mode: the devices Slurm gave it
                devices = placed.devices
            elif req.kind != "none":
                outcome = decide(self.ctx.inventory, store.held_devices(tx), req, lim, store.holding(job.uid, tx))
                if not isinstance(outcome, Allocation):
                    if outcome.kind == "invalid":
                        store.set_job_state(job.id, P.QUEUED, tx, state=P.FAILED, reason=outcome.message,
                                            ended_at=now)
                    return False  # capacity, or the user's GPUs are in use elsewhere: wait
                devices = {u: self.ctx.inventory.device(u).equivalents for u in outcome.devices}
            row = store.insert_container(
                tx, uid=job.uid, user=job.user, project=f"{job.project}#job{job.id}", docker_id=None,
                docker_name=name, image=job.image, status="job", created_at=now, gpus=list(devices),
                request=req.to_dict(), node=placed.node if placed else None,
                slurm_job=placed.job if placed else None)
            rec = ContainerRecord(id=row, uid=job.uid, user=job.user, project=f"{job.project}#job{job.id}",
                                  docker_id=None, docker_name=name, image=job.image, status="job", created_at=now)
            store.allocate(tx, rec, devices, now)
            store.set_job_state(job.id, P.QUEUED, tx, state=P.STARTING, container=row, gpus=list(devices),
                                docker_name=name, log_path=self.log_path(job.id), engine_boot=self.boot_marker())
        try:
            docker_id = self._launch(job, who, lim, placed.device_ids if placed else tuple(devices), name, now,
                                     placed)
        except Exception as e:
            msg = e.message if isinstance(e, DS01Error) else str(e)
            log.warning("job %s could not start: %s", job.id, msg)
            self._cleanup(job.id, row, name)
            store.set_job_state(job.id, P.STARTING, state=P.FAILED, reason=f"could not start: {msg}",
                                ended_at=self.ctx.clock())
            self._ended(job.id)
            return True
        started = self.ctx.clock()
        store.update_job(job.id, state=P.RUNNING, docker_id=docker_id, started_at=started)
        store.update_container(row, docker_id=docker_id, started_at=started)
        self.ctx.emit("job.start", who, job.project, data={"job": job.id, "gpus": list(devices),
                                                            "waited_s": round(started - job.submitted_at, 1)})
        self._follow(job.id)
        cur = store.get_job(job.id)
        if cur is not None and cur.requested == "cancel":  # cancelled while it was starting
            self._stop_async(cur)
        elif cur is not None and cur.waited and started - job.submitted_at >= self.cfg.daemon.tick_interval:
            self._tell(cur, f"job {job.id} ({job.name or job.project}) started after waiting "
                            f"{started - job.submitted_at:.0f}s", mail=False)
        return True

    def _launch(self, job: JobRecord, who: Caller, lim: EffectiveLimits, devices: tuple[str, ...], name: str,
                now: float, placed: Any = None) -> str:
        """Create and start the container; its engine id."""
        template = self.cfg.containers.workspace_base
        workspace = existing_workspace(who, job.project, template) or ensure_workspace(
            who, job.project, template, self.cfg.containers.workspace_group)
        source = self.containers._mount_point(workspace, name)
        image = job.image_id or job.image
        local = self.ctx.runtime.image_inspect(image) if hasattr(self.ctx.runtime, "image_inspect") else None
        base = build_spec(self.cfg, who, job.project, job.image, lim, source, now, self.ctx.instance,
                          device_ids=devices, host_cpus=os.cpu_count(),
                          image_id=local.id if local is not None else None,
                          image_volumes=local.volumes if local is not None else ())
        spec = P.job_spec(base, job_id=job.id, prefix=self.cfg.containers.name_prefix, uid=job.uid,
                          command=tuple(job.command), env=job.env, array_id=job.array_id,
                          array_index=job.array_index, image=image)
        if placed is not None:  # cluster mode: the node and Slurm job it belongs to (the agent checks)
            spec = dataclasses.replace(spec, labels={**spec.labels, labels.NODE: placed.node,
                                                     labels.SLURM_JOB: str(placed.job)},
                                       **self.containers.placement.distribute(job.image, local))
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        with open(self.log_path(job.id), "wb"):
            pass  # a fresh, empty log (a requeued job starts over)
        info = self.ctx.runtime.create(spec)
        self.ctx.store.update_job(job.id, docker_id=info.id)
        self.containers._pin(who, workspace, name)
        try:
            self.ctx.runtime.start(info.id)
        finally:
            self.containers._unpin(name, remove_dir=False)
        return info.id

    # -- output ----------------------------------------------------------------------------
    def _follow(self, job_id: int) -> None:
        with self._lock:
            t = self._followers.get(job_id)
            if t is not None and t.is_alive():
                return
            t = threading.Thread(target=self._copy_log, args=(job_id,), name=f"ds01d-job-{job_id}", daemon=True)
            self._followers[job_id] = t
        t.start()

    def _copy_log(self, job_id: int) -> None:
        """Copy the engine's log of the job into its file (the whole log again after a restart:
        the file is rewritten, not appended), capped at ``jobs.log_max_bytes``; then finish."""
        job = self.ctx.store.get_job(job_id)
        if job is None or not job.docker_id:
            return
        cap = self.cfg.jobs.log_max_bytes
        written, cut = 0, False
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            fd = os.open(self.log_path(job_id), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb", buffering=0) as f:
                for chunk in self.ctx.runtime.follow_logs(job.docker_id):
                    if written < cap:
                        piece = chunk[:cap - written]
                        f.write(piece)
                        written += len(piece)
                    elif not cut:
                        f.write(f"\n[ds01: log truncated at {cap} bytes]\n".encode())
                        cut = True
        except Exception:
            log.exception("following the log of job %s failed", job_id)
        finally:
            with self._lock:
                self._followers.pop(job_id, None)
        self.finish(job_id)

    # -- end -------------------------------------------------------------------------------
    def finish(self, job_id: int, info: Any = "inspect") -> bool:
        """End a job whose container stopped (or vanished); False while it still runs."""
        with self._finish:
            job = self.ctx.store.get_job(job_id)
            if job is None or job.state not in ACTIVE_RUN or not job.docker_id:
                return False
            if info == "inspect":
                try:
                    info = self.ctx.runtime.inspect(job.docker_id)
                except DS01Error:
                    return False  # the engine is not answering: decide later
            if info is not None and info.status in ("running", "created", "restarting", "paused"):
                return False
            marker = self.boot_marker()
            restarted = bool(job.engine_boot and marker and marker != job.engine_boot)
            state, reason = P.end_of(None if info is None else info.exit_code, requested=job.requested,
                                     container_gone=info is None, engine_restarted=restarted, requeue=job.requeue)
            self._cleanup(job.id, job.container, job.docker_name, job.docker_id)
            now = self.ctx.clock()
            if state == P.QUEUED:
                self.ctx.store.set_job_state(job.id, job.state, state=P.QUEUED, reason=reason, docker_id=None,
                                             container=None, started_at=None, gpus=[], engine_boot=None)
            else:
                self.ctx.store.set_job_state(job.id, job.state, state=state, reason=reason, ended_at=now,
                                             exit_code=None if info is None else info.exit_code)
        with self._lock:
            self._stopping.discard(job.id)
        self.ctx.events.emit(f"job.{state}", user=job.user, uid=job.uid, target=job.project,
                             result="ok" if state in (P.SUCCEEDED, P.QUEUED) else "error", reason=reason,
                             data={"job": job.id})
        self._ended(job.id)
        return True

    def _cleanup(self, job_id: int, row: int | None, name: str | None, docker_id: str | None = None) -> None:
        """Remove the container, its pin and its devices (the record and log stay); in cluster
        mode its Slurm job is cancelled after the container."""
        try:
            if docker_id or name:
                self.ctx.runtime.remove(docker_id or name, force=True)
        except DS01Error as e:
            log.warning("could not remove the container of job %s: %s", job_id, e.message)
        if name:
            self.containers._unpin(name)
        job = self.ctx.store.get_job(job_id)
        if job is not None and job.slurm_job:
            self.containers.placement.release(job.slurm_job)
            self.ctx.store.update_job(job_id, slurm_job=None)
        if job is not None:  # the user's network, if this was their last container (issue 15)
            self.ctx.runtime.prune_networks(labels.managed(self.ctx.instance, job.uid))
        released = 0
        if row is not None:
            now = self.ctx.clock()
            with self.ctx.store.transaction() as tx:
                self.ctx.store.update_container(row, tx, status="removed", ended_at=now)
                released = self.ctx.store.release(row, now, "job ended", tx)
        if released or row is not None:
            self._wake()  # freed devices, or the next task of its array / a dependent may start

    def _ended(self, job_id: int) -> None:
        job = self.ctx.store.get_job(job_id)
        if job is None or job.state not in P.ENDED:
            return
        what = job.name or job.project
        extra = f"; logs: 'job-logs {job.id}'"
        self._tell(job, f"job {job.id} ({what}) {job.state}: {job.reason}{extra}", mail=job.mail)

    def _tell(self, job: JobRecord, text: str, mail: bool) -> None:
        from ds01.services import mail as mailer
        from ds01.services.notify import notify

        try:
            who = self._who(job.uid)
            notify(who, job.project, text, self.cfg.containers.workspace_base, self.ctx.clock())
        except Exception:
            log.exception("could not notify %s of job %s", job.user, job.id)
        if mail:
            mailer.send_later(self.cfg.notify.smtp, job.user, f"[ds01] {text.split(':')[0]}",
                              f"{text}\n\ncommand: {' '.join(job.command)}\nproject: {job.project}\n")

    def _end_queued(self, job: JobRecord, state: str, reason: str) -> None:
        if self.ctx.store.set_job_state(job.id, P.QUEUED, state=state, reason=reason, ended_at=self.ctx.clock()):
            self.containers.placement.release(job.slurm_job)  # cluster mode: its pending Slurm job
            self.ctx.events.emit(f"job.{state}", user=job.user, uid=job.uid, target=job.project,
                                 result="error" if state == P.FAILED else "ok", reason=reason,
                                 data={"job": job.id})
            self._ended(job.id)

    # -- stop ------------------------------------------------------------------------------
    def _stop_async(self, job: JobRecord) -> None:
        """SIGTERM, SIGKILL after ``jobs.kill_grace`` (in a thread: the grace may be long); the
        follower sees the container stop and finishes the job."""
        with self._lock:
            if job.id in self._stopping or not job.docker_id:
                return
            self._stopping.add(job.id)
        grace = self.cfg.jobs.kill_grace

        def run() -> None:
            try:
                self.ctx.runtime.stop(job.docker_id, grace)
            except DS01Error as e:
                log.info("stopping job %s: %s", job.id, e.message)
            # the follower sees the stream end and finishes the job (after the last bytes)

        threading.Thread(target=run, name=f"ds01d-job-stop-{job.id}", daemon=True).start()

    # -- the periodic part -----------------------------------------------------------------
    def tick(self) -> dict[str, int]:
        """Time limits, dependencies that failed, followers after a restart, CPU-only starts."""
        now = self.ctx.clock()
        store = self.ctx.store
        out = {"started": 0, "timeouts": 0, "failed_deps": 0, "finished": 0}
        running = store.jobs_in(ACTIVE_RUN)
        infos = {}
        if running:
            try:
                infos = {i.id: i for i in self.ctx.runtime.list(labels.managed(self.ctx.instance))}
            except DS01Error:
                return out
        for job in running:
            if job.state == P.STARTING or not job.docker_id:
                continue
            info = infos.get(job.docker_id)
            if info is None or info.status not in ("running", "restarting", "paused"):
                with self._lock:
                    following = job.id in self._followers
                if not following and self.finish(job.id, "inspect"):
                    out["finished"] += 1
                continue
            self._follow(job.id)  # no-op while its follower runs
            if job.requested is None and P.timed_out(job.started_at, job.time_limit, now):
                if store.set_job_state(job.id, P.RUNNING, requested="timeout"):
                    job.requested = "timeout"
                    out["timeouts"] += 1
            if job.requested is not None:
                self._stop_async(job)
        for job in store.jobs_in((P.QUEUED,)):
            if job.after:
                verdict, reason = P.dependencies(store.job_states(job.after))
                if verdict == "fail":
                    self._end_queued(job, P.FAILED, reason or "dependency failed")
                    out["failed_deps"] += 1
        for job, who, lim in self._eligible():
            # cluster mode: Slurm orders GPU jobs too; the tick starts what it placed
            if (GpuRequest.from_dict(job.request).kind == "none" or self.containers.placement.external) \
                    and self._start(job, who, lim):
                out["started"] += 1
        return out

    def mark_waiting(self) -> None:
        """After a serving round: every job still queued has waited (told when it starts)."""
        self.ctx.store.mark_waited([j.id for j in self.ctx.store.jobs_in((P.QUEUED,))])

    def recover(self) -> dict[str, int]:
        """At daemon start: jobs caught mid-start go back to the queue (their command never
        ran); running ones are followed again (and finished if they ended meanwhile)."""
        n = {"requeued": 0, "followed": 0}
        for job in self.ctx.store.jobs_in(ACTIVE_RUN):
            if job.state == P.STARTING:
                info = self.ctx.runtime.inspect(job.docker_id) if job.docker_id else None
                if info is not None and info.status == "running":
                    self.ctx.store.update_job(job.id, state=P.RUNNING, started_at=self.ctx.clock())
                else:
                    self._cleanup(job.id, job.container, job.docker_name, job.docker_id)
                    self.ctx.store.set_job_state(job.id, P.STARTING, state=P.QUEUED, docker_id=None,
                                                 container=None, gpus=[], reason="daemon restarted while starting")
                    n["requeued"] += 1
                    continue
            self._follow(job.id)
            n["followed"] += 1
        return n

    def prune(self) -> int:
        """Drop ended jobs (records and logs) older than ``jobs.retention``."""
        keep = self.cfg.jobs.retention
        if not keep:
            return 0
        old = self.ctx.store.old_jobs(self.ctx.clock() - keep, P.ENDED)
        for job in old:
            try:
                os.unlink(self.log_path(job.id))
            except OSError:
                pass
            self.ctx.store.delete_job(job.id)
        return len(old)
