"""Container service: the only place that joins ownership (state), policy and the runtime.

Each public method is one API endpoint (L2). Every method acts only on the target user's own
records; ``target`` is the caller or, for admins, ``--user``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from ds01 import labels
from ds01.errors import (CapacityExhausted, Conflict, DS01Error, InvalidInput, NodeUnavailable, NotFound,
                         PermissionDenied, PolicyDenied, RuntimeFailure)
from ds01.names import container_name, validate_project
from ds01.policy.allocation import Allocation, GpuRequest, decide, fmt_eq
from ds01.policy.containers import build_spec, check_ports, resolve_ref
from ds01.policy.limits import effective_limits
from ds01.runtime.base import ContainerGone, ContainerInfo
from ds01.services.context import Context
from ds01.services.environment import ca_text
from ds01.services.identity import Caller
from ds01.services.oplocks import ProjectLocks
from ds01.services.stops import report_stop
from ds01.services.workspace import ensure_workspace, existing_workspace, no_workspace_if_refused, pin_workspace, unpin_workspace
from ds01.state.db import ContainerRecord

log = logging.getLogger("ds01d")

_STATUS_MAP = {"created": "created", "running": "running", "paused": "running", "restarting": "running",
               "exited": "exited", "dead": "exited", "removing": "exited"}


_VIEW_KEYS = ("project", "user", "uid", "name", "id", "image", "status", "created_at", "started_at", "stopped_at",
              "gpus", "limits", "workspace", "ports", "node")


def record_view(rec: ContainerRecord, info: ContainerInfo | None = None) -> dict[str, Any]:
    computed = {"name": rec.docker_name, "id": (rec.docker_id or "")[:12],
                "ports": [{"container": c, "host_ip": ip, "host_port": hp} for c, ip, hp in rec.ports]}
    return {k: computed[k] if k in computed else getattr(rec, k) for k in _VIEW_KEYS}


def _free_port() -> int:
    """A free TCP port on 127.0.0.1 for a published container port (only ever bound to loopback:
    users reach it through an SSH tunnel)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ContainerService:
    def __init__(self, ctx: Context, on_release: Callable[[], None] | None = None, images: Any = None,
                 placement: Any = None):
        from ds01.services.placement import LocalPlacement

        self.ctx = ctx
        # where containers run and with which devices: this server, or Slurm (services/placement.py)
        self.placement = placement or LocalPlacement()
        # ImageService: ownership of per-user images and each project's default image
        self.images = images
        # called after devices were released (the daemon wakes the queue server)
        self.on_release = on_release
        self._ops = ProjectLocks()

    @property
    def cfg(self):
        return self.ctx.config

    def limits_for(self, who: Caller):
        return effective_limits(self.cfg, who.name, set(who.groups))

    # -- lookups ---------------------------------------------------------------------------
    def resolve(self, who: Caller, ref: str) -> ContainerRecord:
        return resolve_ref(ref, self.ctx.store.live_containers(who.uid))

    def _sync(self, rec: ContainerRecord) -> ContainerRecord:
        """Refresh a record's status from the engine (Docker is the truth for what exists)."""
        try:
            info = self.ctx.runtime.inspect(rec.docker_id) if rec.docker_id else None
        except NodeUnavailable:  # cluster mode: its node's agent is down; nothing is concluded
            rec.status = "unknown"
            return rec
        return self._apply_info(rec, info, confirmed=True)

    def _apply_info(self, rec: ContainerRecord, info: ContainerInfo | None,
                    confirmed: bool = False) -> ContainerRecord:
        """Bring ``rec`` in line with what the engine says of it.

        ``info`` comes from a list snapshot unless ``confirmed`` (an inspect by id, or an engine
        answer to a verb this thread is carrying out). A snapshot may predate the record (a create
        finishing between the two reads), so "gone" is never decided from it: the id is inspected
        again, and the record is changed only if no verb of that project is in flight and the row
        still says what we read (compare-and-set inside one state transaction).
        """
        if rec.status in ("creating", "removed", "gone", "unknown"):
            return rec  # a create in flight in another thread, or already ended
        with self._ops.try_hold(rec.uid, rec.project) as free:
            if not free:
                return rec  # a verb of this project is running: it records the truth itself
            if info is None and not confirmed and rec.docker_id:
                try:
                    info = self.ctx.runtime.inspect(rec.docker_id)
                except NodeUnavailable:  # cluster mode: shown 'unknown', never decided 'gone'
                    rec.status = "unknown"
                    return rec
            now = self.ctx.clock()
            if info is None:
                with self.ctx.store.transaction() as conn:
                    cur = self.ctx.store.get_container(rec.id)
                    if cur is None or cur.status != rec.status or cur.docker_id != rec.docker_id:
                        return cur or rec
                    self.ctx.store.update_container(rec.id, conn, status="gone", ended_at=now)
                    released = self.ctx.store.release(rec.id, now, "gone", conn)
                self._unpin(rec.docker_name)
                self.ctx.events.emit("container.gone", user=rec.user, uid=rec.uid, target=rec.project,
                                     reason="removed outside DS01")
                rec.status, rec.ended_at = "gone", now
                if released and self.on_release:
                    self.on_release()
                return rec
            status = _STATUS_MAP.get(info.status, info.status)
            if status != rec.status:
                fields: dict[str, Any] = {"status": status}
                if status == "exited" and rec.status == "running":
                    fields["stopped_at"] = now
                with self.ctx.store.transaction() as conn:
                    cur = self.ctx.store.get_container(rec.id)
                    if cur is None or cur.status != rec.status:
                        return cur or rec
                    self.ctx.store.update_container(rec.id, conn, **fields)
                rec.status = status
                if "stopped_at" in fields:
                    rec.stopped_at = now
                    report_stop(self.ctx, rec, info)  # no verb stopped it: say why (issue 16)
        return rec

    # -- the verbs' entry points: one verb at a time per project (see services/oplocks.py) ----
    def _key(self, who: Caller, ref: str) -> str:
        try:
            return self.resolve(who, ref).project
        except DS01Error:
            return ref  # the verb itself raises the precise error

    def create(self, actor: Caller, who: Caller, project: str, *args: Any, **kw: Any) -> dict[str, Any]:
        with self._ops.hold(who.uid, str(project)), no_workspace_if_refused(who, project, self.cfg):
            return self._create(actor, who, project, *args, **kw)

    def deploy(self, actor: Caller, who: Caller, project: str, *args: Any, **kw: Any) -> dict[str, Any]:
        with self._ops.hold(who.uid, str(project)):
            return self._deploy(actor, who, project, *args, **kw)

    def start(self, actor: Caller, who: Caller, ref: str) -> dict[str, Any]:
        with self._ops.hold(who.uid, self._key(who, ref)):
            return self._start(actor, who, ref)

    def stop(self, actor: Caller, who: Caller, ref: str, timeout: float | None = None) -> dict[str, Any]:
        with self._ops.hold(who.uid, self._key(who, ref)):
            return self._stop(actor, who, ref, timeout)

    def remove(self, actor: Caller, who: Caller, ref: str, force: bool = False) -> dict[str, Any]:
        with self._ops.hold(who.uid, self._key(who, ref)):
            return self._remove(actor, who, ref, force)

    def retire(self, actor: Caller, who: Caller, ref: str, timeout: float | None = None) -> dict[str, Any]:
        with self._ops.hold(who.uid, self._key(who, ref)):
            return self._retire(actor, who, ref, timeout)

    # -- L2 verbs --------------------------------------------------------------------------
    def _create(self, actor: Caller, who: Caller, project: str, image: str | None = None,
               cpu_only: bool = False, request: GpuRequest | None = None, ports: list[int] | None = None,
               queue: bool = False, queue_id: int | None = None, placed: Any = None) -> dict[str, Any]:
        """Create (not start) the container of (who, project). GPU devices are decided and recorded
        in one state transaction together with the container record, so concurrent creates can
        never hold a device twice or exceed a limit. With ``queue`` and no free device, the request
        waits in the fair queue instead (``{"queued": True, ...}``). In cluster mode the placement
        (Slurm) decides node and devices first (``placed``: a queued job that has started)."""
        project = validate_project(project)
        request = request or GpuRequest()
        if cpu_only and request.kind != "none":
            raise InvalidInput("--cpu-only conflicts with a GPU request", "use one or the other")
        local = None  # the image as inspected once here, reused below (each lookup is an engine call)
        if image is None and self.images is not None:
            image, local = self.images.project_image(who, project)  # the project's own image, if built
        image = image or self.cfg.images.default
        self._check_image(image)
        if self.images is not None and local is None:
            local = self.images.use_or_pull(who, image, actor)  # another user's image is as good as missing
        container_ports = check_ports(ports, self.placement.external)
        lim = self.limits_for(who)
        exists = local is not None if self.images is not None else self.ctx.runtime.image_exists(image)
        if not exists:
            raise NotFound(
                f"image {image!r} is not available on this host",
                "build your project's image with 'image-create <project>' or ask an admin to bootstrap the base image",
            )
        self._forget_gone(who, project)
        template = self.cfg.containers.workspace_base
        workspace = existing_workspace(who, project, template) or ensure_workspace(
            who, project, template, self.cfg.containers.workspace_group)
        name = container_name(self.cfg.containers.name_prefix, who.uid, project)
        owned = placed is None  # a job submitted here is cancelled here if the create fails
        if placed is None and self.placement.external:
            self._precheck(who, project, lim, request)  # before a job is submitted for nothing
            placed = self.placement.acquire(who, project, request, lim, "/tmp")
        try:
            return self._record_and_create(actor, who, project, image, request, lim, local, workspace, name,
                                           container_ports, queue, queue_id, placed)
        except BaseException:
            if owned and placed is not None:
                self.placement.release(placed.job)
            raise

    def _precheck(self, who: Caller, project: str, lim: Any, request: GpuRequest) -> None:
        """Cluster mode, before submitting: what Slurm does not enforce, the head does (limits,
        request validity; as if every device were free: which ones is Slurm's choice)."""
        if request.kind != "none":
            outcome = decide(self.ctx.inventory, {}, request, lim, self.ctx.store.holding(who.uid))
            if not isinstance(outcome, Allocation) and outcome.kind != "capacity":
                raise outcome.to_error()
        existing = self.ctx.store.live_container(who.uid, project)
        if existing is not None:
            raise Conflict(f"project {project!r} already has a container ({existing.status})",
                           f"use 'container-start {project}', or 'container-remove {project}' first")
        if len(self.ctx.store.live_containers(who.uid)) >= lim.max_containers:
            raise PolicyDenied(f"your limit is {lim.max_containers} containers",
                               "remove one you no longer need with 'container-remove <project>'")

    def _record_and_create(self, actor: Caller, who: Caller, project: str, image: str, request: GpuRequest,
                           lim: Any, local: Any, workspace: str, name: str, container_ports: list[int],
                           queue: bool, queue_id: int | None, placed: Any) -> dict[str, Any]:
        from ds01.policy.placement import Pending

        now = self.ctx.clock()
        if isinstance(placed, Pending) and not queue:
            raise CapacityExhausted(f"no node can start this now (Slurm: {placed.reason or 'pending'})",
                                    "add --queue to wait for it, or see 'gpu-queue'")
        with self.ctx.store.transaction() as conn:
            existing = self.ctx.store.live_container(who.uid, project)
            if existing is not None:
                raise Conflict(
                    f"project {project!r} already has a container ({existing.status})",
                    f"use 'container-start {project}', or 'container-remove {project}' first",
                )
            live = self.ctx.store.live_containers(who.uid)
            if len(live) >= lim.max_containers:
                raise PolicyDenied(
                    f"you have {len(live)} containers; your limit is {lim.max_containers}",
                    "remove one you no longer need with 'container-remove <project>'",
                )
            devices: dict[str, float] = {}
            if isinstance(placed, Pending):  # cluster mode: Slurm holds the request as a pending job
                return self._enqueue(conn, who, project, request, image, container_ports, now, placed.job)
            if placed is not None:  # cluster mode: exactly the devices Slurm gave the job
                devices = placed.devices
            elif request.kind != "none":
                outcome = decide(self.ctx.inventory, self.ctx.store.held_devices(conn), request, lim,
                                 self.ctx.store.holding(who.uid, conn))
                if not isinstance(outcome, Allocation):
                    if outcome.kind == "capacity" and queue:
                        return self._enqueue(conn, who, project, request, image, container_ports, now)
                    err = outcome.to_error()
                    if outcome.kind == "capacity":
                        err.hint = (err.hint or "") + self._holders_hint()
                    raise err
                devices = {u: self.ctx.inventory.device(u).equivalents for u in outcome.devices}
            rec_id = self.ctx.store.insert_container(
                conn, uid=who.uid, user=who.name, project=project, docker_id=None,
                docker_name=name, image=image, status="creating", created_at=now, gpus=list(devices),
                workspace=workspace, request=request.to_dict(),
                node=placed.node if placed is not None else None, slurm_job=placed.job if placed is not None else None,
            )
            rec = ContainerRecord(id=rec_id, uid=who.uid, user=who.name, project=project, docker_id=None,
                                  docker_name="", image=image, status="creating", created_at=now)
            self.ctx.store.allocate(conn, rec, devices, now)
            if queue_id is not None and not self.ctx.store.mark_serving(conn, queue_id, rec_id):  # same tx
                raise Conflict(f"the queued request {queue_id} is no longer waiting", "see 'gpu-queue'")
        try:
            host_ports = tuple((p, "127.0.0.1", _free_port()) for p in container_ports)
            source = self._mount_point(workspace, name)
            spec = build_spec(self.cfg, who, project, image, lim, source, now, self.ctx.instance,
                              device_ids=placed.device_ids if placed is not None else tuple(devices),
                              ports=host_ports, host_cpus=os.cpu_count(),
                              image_id=local.id if local is not None else None,
                              image_volumes=local.volumes if local is not None else (),
                              image_env=local.env if local is not None else (), ca_text=ca_text(self.cfg.build))
            if placed is not None:  # the node and job it belongs to (the agent checks both)
                spec = dataclasses.replace(spec, labels={**spec.labels, labels.NODE: placed.node,
                                                         labels.SLURM_JOB: str(placed.job)},
                                           **self.placement.distribute(image, local))  # the lab registry
            info = self.ctx.runtime.create(spec)
        except BaseException:
            self._unpin(name)
            with self.ctx.store.transaction() as conn:
                self.ctx.store.release(rec_id, self.ctx.clock(), "create failed", conn)
                self.ctx.store.update_container(rec_id, conn, status="removed", ended_at=self.ctx.clock())
            raise
        applied = {"cpus": spec.cpus, "memory": spec.memory, "shm_size": spec.shm_size, "pids": spec.pids}
        self.ctx.store.update_container(rec_id, docker_id=info.id, docker_name=spec.name, status="created",
                                        limits=applied, ports=[list(p) for p in spec.ports])
        self.ctx.emit("container.create", who, project, actor=actor,
                   data={"image": image, "id": info.id[:12], "gpus": list(devices),
                         "equivalents": round(sum(devices.values()), 4)})
        rec = self.ctx.store.get_container(rec_id)
        assert rec is not None
        return record_view(rec)

    def _mount_point(self, real: str, name: str) -> str:
        """The bind source Docker is given for the workspace: an empty root-owned directory that
        the workspace is pinned onto only while the container starts (see ``start``)."""
        if not self.ctx.mounts_dir:
            return real
        path = os.path.join(self.ctx.mounts_dir, name)
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    def _pin(self, who: Caller, real: str, name: str) -> str:
        """The bind source Docker gets for the workspace: a root-owned mount of the directory we
        checked (see services/workspace.py), so a later symlink swap cannot redirect it."""
        if not self.ctx.mounts_dir:
            return real
        try:
            return pin_workspace(who, real, self.cfg.containers.workspace_base,
                                 os.path.join(self.ctx.mounts_dir, name))
        except OSError as e:  # fail closed: never hand Docker an unpinned user path
            raise RuntimeFailure(f"could not pin the workspace {real}: {e.strerror}",
                                 "ds01d must run as root on the host's mount namespace") from None

    def _repin(self, who: Caller, rec: ContainerRecord) -> None:
        """Before a start: pin the recorded workspace again; if it was moved, deleted or swapped,
        resolve it again as the user (which refuses a symlink out of the home)."""
        if rec.workspace:
            try:
                self._pin(who, rec.workspace, rec.docker_name)
                return
            except PermissionDenied:
                pass
        self._pin(who, ensure_workspace(who, rec.project, self.cfg.containers.workspace_base,
                                                self.cfg.containers.workspace_group), rec.docker_name)

    def _unpin(self, name: str, remove_dir: bool = True) -> None:
        if self.ctx.mounts_dir and name:
            unpin_workspace(os.path.join(self.ctx.mounts_dir, name), remove_dir=remove_dir)

    def _forget_gone(self, who: Caller, project: str) -> None:
        """A live record whose container vanished from the engine must not block a new create."""
        existing = self.ctx.store.live_container(who.uid, project)
        if existing is not None and existing.status != "creating":
            self._sync(existing)

    def _holders_hint(self) -> str:
        rows = self.ctx.store.open_allocations()
        if not rows:
            return ""
        per: dict[str, float] = {}
        for r in rows:
            per[r["user"]] = per.get(r["user"], 0) + r["equivalents"]
        who = ", ".join(f"{u} {fmt_eq(e)}" for u, e in sorted(per.items(), key=lambda x: -x[1]))
        return f" (held now: {who})"

    def _enqueue(self, conn, who: Caller, project: str, request: GpuRequest, image: str, ports: list[int],
                 now: float, slurm_job: int | None = None) -> dict[str, Any]:
        if self.ctx.store.is_queued(conn, who.uid, project):
            raise Conflict(f"project {project!r} is already waiting in the GPU queue",
                           "see 'gpu-queue'; cancel with 'gpu-queue --cancel <id>'")
        qid = self.ctx.store.enqueue(conn, who.uid, who.name, project, request.to_dict(), image, ports, now, slurm_job)
        position = self.ctx.store.waiting_count(conn)
        self.ctx.events.emit("queue.add", user=who.name, uid=who.uid, target=project,
                             data={"request": request.to_dict(), "id": qid})
        return {"queued": True, "queue_id": qid, "project": project, "user": who.name,
                "request": request.describe(), "position": position}

    def _check_image(self, image: str) -> None:
        from ds01.images.catalog import check_image_allowed

        # the same rule as for builds: prefixes end at a name boundary, references normalised
        check_image_allowed(image, self.cfg.images.allowed)

    def _start(self, actor: Caller, who: Caller, ref: str) -> dict[str, Any]:
        rec = self._sync(self.resolve(who, ref))
        self._require_exists(rec)
        if rec.status == "exited" and self.placement.external:
            # cluster mode: its job ended with the stop; Slurm places it again (maybe elsewhere)
            self._remove(actor, who, rec.project, force=True)
            self._create(actor, who, rec.project, image=rec.image, request=GpuRequest.from_dict(rec.request),
                         ports=[p[0] for p in rec.ports])
            rec = self.resolve(who, rec.project)
        if rec.status != "running":
            self.ctx.store.ensure_writable()  # a start that could not be recorded must not happen
            self._retake_gpus(who, rec)
            # The workspace is checked and pinned for exactly as long as the engine needs to
            # resolve the bind: once started, the container holds its own copy of the mount, and
            # no host path keeps pointing into a user's workspace (an 'rm -rf' of the state dir
            # must never reach user data).
            self._repin(who, rec)
            try:
                self.ctx.runtime.start(rec.docker_id)
            except ContainerGone:
                self._apply_info(rec, None)
                raise
            finally:
                self._unpin(rec.docker_name, remove_dir=False)
            now = self.ctx.clock()
            self.ctx.store.update_container(rec.id, status="running", started_at=now)
            rec.status, rec.started_at = "running", now
            self.ctx.emit("container.start", who, rec.project, actor=actor)
        return record_view(rec)

    def _retake_gpus(self, who: Caller, rec: ContainerRecord) -> None:
        """A stopped container's devices are released after ``gpu_hold_after_stop``. Its env names
        those exact devices, so restarting it needs the same ones back, within the user's limit."""
        if not rec.gpus or self.ctx.store.open_allocations(rec.id):
            return
        lim = self.limits_for(who)
        with self.ctx.store.transaction() as conn:
            held = self.ctx.store.held_devices(conn)
            busy = [g for g in rec.gpus if g in held]
            if busy:
                raise CapacityExhausted(
                    f"the GPU(s) of {rec.project!r} were released while it was stopped and are now in use",
                    f"retire it ('container-retire {rec.project}') and deploy again, or wait" + self._holders_hint())
            want = {g: self.ctx.inventory.device(g).equivalents for g in rec.gpus if self.ctx.inventory.device(g)}
            have = self.ctx.store.holding(who.uid, conn)
            if have + sum(want.values()) > lim.max_gpus + 1e-9:
                raise PolicyDenied(
                    f"you hold {fmt_eq(have)} of {fmt_eq(lim.max_gpus)} GPU-equivalents; "
                    f"restarting {rec.project!r} needs {fmt_eq(sum(want.values()))} more",
                    "stop or retire another GPU container first")
            self.ctx.store.allocate(conn, rec, want, self.ctx.clock())

    def _stop(self, actor: Caller, who: Caller, ref: str, timeout: float | None = None) -> dict[str, Any]:
        rec = self._sync(self.resolve(who, ref))
        self._require_exists(rec)
        if rec.status == "unknown":  # cluster mode: its node does not answer; nothing is freed
            raise NodeUnavailable(f"node {rec.node} of {rec.project!r} is not answering", "nothing was stopped")
        if rec.status == "running":
            self.ctx.store.ensure_writable()  # a stop that could not be recorded must not happen
            t = self.cfg.containers.stop_timeout if timeout is None else timeout
            try:
                self.ctx.runtime.stop(rec.docker_id, t)
            except ContainerGone:
                self._apply_info(rec, None)
                raise
            now = self.ctx.clock()
            self.ctx.store.update_container(rec.id, status="exited", stopped_at=now)
            rec.status, rec.stopped_at = "exited", now
            self.ctx.emit("container.stop", who, rec.project, data={"timeout": t}, actor=actor)
        if not self.placement.holds_after_stop:
            self._end_placement(rec, "stopped")
        return record_view(rec)

    def _end_placement(self, rec: ContainerRecord, why: str) -> None:
        """Cluster mode: a stopped container holds nothing: its job is cancelled, its devices free."""
        self.placement.release(rec.slurm_job)
        if self.ctx.store.release(rec.id, self.ctx.clock(), why) and self.on_release:
            self.on_release()

    def _remove(self, actor: Caller, who: Caller, ref: str, force: bool = False) -> dict[str, Any]:
        rec = self._sync(self.resolve(who, ref))
        if rec.status == "running" and not force:
            raise Conflict(f"the container of {rec.project!r} is running",
                           f"stop it first with 'container-stop {rec.project}' or use --force")
        self.ctx.store.ensure_writable()  # likewise a remove
        if rec.status != "gone" and rec.docker_id:
            self.ctx.runtime.remove(rec.docker_id, force=force)
        self._unpin(rec.docker_name)
        now = self.ctx.clock()
        with self.ctx.store.transaction() as conn:
            self.ctx.store.update_container(rec.id, conn, status="removed", ended_at=now)
            released = self.ctx.store.release(rec.id, now, "removed", conn)
        rec.status, rec.ended_at = "removed", now
        self.placement.release(rec.slurm_job)  # cluster mode: after the container, its job
        self.ctx.emit("container.remove", who, rec.project, data={"force": force, "released": released},
                   actor=actor)
        if released and self.on_release:
            self.on_release()
        self.ctx.runtime.prune_networks(labels.managed(self.ctx.instance, rec.uid))  # the user's last one?
        if self.images is not None:
            try:  # the image this container kept alive after a rebuild, if any
                self.images.prune_superseded(rec.uid)
            except Exception:  # housekeeping must never fail a remove
                log.exception("could not prune superseded images of uid %s", rec.uid)
        return record_view(rec)

    # -- L3: orchestrators (composed from the L2 verbs above) ------------------------------
    def _deploy(self, actor: Caller, who: Caller, project: str, image: str | None = None,
               request: GpuRequest | None = None, ports: list[int] | None = None,
               queue: bool = False, queue_id: int | None = None, placed: Any = None) -> dict[str, Any]:
        """create + start. Reuses the project's container if it exists (starting it if stopped).
        A start that fails after a successful create is rolled back (container removed, devices
        released), so a half-done deploy never holds GPUs."""
        project = validate_project(project)
        existing = self.ctx.store.live_container(who.uid, project)
        if existing is not None:
            existing = self._sync(existing)
            if existing.status not in ("gone", "creating"):
                out = self.start(actor, who, project)
                return {**out, "reused": True}
        out = self.create(actor, who, project, image=image, request=request, ports=ports, queue=queue,
                          queue_id=queue_id, placed=placed)
        if out.get("queued"):
            return out
        try:
            return {**self.start(actor, who, project), "reused": False}
        except BaseException as e:
            try:
                self.remove(actor, who, project, force=True)
            finally:
                self.ctx.emit("container.deploy", who, project, "rolled_back",
                           getattr(e, "message", None) or str(e), actor=actor)
            raise

    def _retire(self, actor: Caller, who: Caller, ref: str, timeout: float | None = None) -> dict[str, Any]:
        """stop + remove + release devices. The workspace is never touched."""
        rec = self._sync(self.resolve(who, ref))
        if rec.status == "running":
            try:
                self.stop(actor, who, ref, timeout)
            except ContainerGone:
                pass
        return self.remove(actor, who, ref, force=True)

    def _require_exists(self, rec: ContainerRecord) -> None:
        if rec.status == "gone":
            raise ContainerGone(
                f"the container of {rec.project!r} was removed outside DS01",
                f"create a new one with 'container-create {rec.project}'",
            )

    def list(self, who: Caller | None, include_stopped: bool = True) -> list[dict[str, Any]]:
        """``who`` None = every user (admin). Status comes live from the engine in one call."""
        # records first, then the engine: the snapshot is never older than a record it judges
        recs = self.ctx.store.live_containers(None if who is None else who.uid)
        infos = {i.id: i for i in self.ctx.runtime.list(labels.managed(self.ctx.instance,
                                                                        None if who is None else who.uid))}
        out = []
        for rec in recs:
            rec = self._apply_info(rec, infos.get(rec.docker_id or ""))
            if rec.status == "gone" or (not include_stopped and rec.status not in ("running", "unknown")):
                continue
            out.append(record_view(rec))
        return out

    def stats(self, who: Caller | None) -> list[dict[str, Any]]:
        running = [r for r in self.list(who) if r["status"] == "running"]
        recs = {r["project"] + "/" + str(r["uid"]): r for r in running}

        def sample(r: dict) -> dict:
            rec = self.ctx.store.live_container(r["uid"], r["project"])
            try:
                s = self.ctx.runtime.stats(rec.docker_id) if rec and rec.docker_id else {}
            except DS01Error:
                s = {}
            return {**{k: r[k] for k in ("project", "user", "name", "gpus")}, **s}

        if not recs:
            return []
        with ThreadPoolExecutor(max_workers=min(8, len(recs))) as pool:
            return list(pool.map(sample, recs.values()))

    # -- exec ------------------------------------------------------------------------------
    def exec_target(self, who: Caller, ref: str, start: bool, actor: Caller) -> ContainerRecord:
        """The record to exec into; starts it first when ``start`` (container-run)."""
        rec = self._sync(self.resolve(who, ref))
        self._require_exists(rec)
        if rec.status != "running":
            if not start:
                raise Conflict(f"the container of {rec.project!r} is not running",
                               f"start it with 'container-start {rec.project}' or use 'container-run'")
            self.start(actor, who, ref)
        return rec

    def exec(self, actor: Caller, who: Caller, ref: str, cmd: list[str] | None, *, tty: bool, term: str,
             start: bool):
        """Start ``cmd`` (None: a login shell) in ``who``'s container as ``who``, in /workspace;
        with ``start``, start the container first (container-run). Returns an
        :class:`ds01.services.exec.ExecSession`."""
        from ds01.services.exec import open_exec

        rec = self.resolve(who, ref)
        if rec.status == "running" and rec.docker_id:  # the usual case: no inspect first (~2 ms)
            try:
                return open_exec(self.ctx, who, rec, cmd, tty=tty, term=term)
            except (ContainerGone, Conflict):
                pass  # the record was stale: sync it, and start or refuse precisely, below
        return open_exec(self.ctx, who, self.exec_target(who, ref, start, actor), cmd, tty=tty, term=term)
