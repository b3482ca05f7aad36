"""Container service: the only place that joins ownership (state), policy and the runtime.

Each public method is one API endpoint (L2). Every method acts only on the target user's own
records; ``target`` is the caller or, for admins, ``--user``.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ds01.errors import Conflict, DS01Error, PolicyDenied
from ds01.names import validate_project
from ds01.policy.containers import LABEL, build_spec, resolve_ref
from ds01.policy.limits import effective_limits
from ds01.runtime.base import ContainerGone, ContainerInfo
from ds01.services.context import Context
from ds01.services.identity import Caller
from ds01.services.workspace import ensure_workspace
from ds01.state.db import ContainerRecord

log = logging.getLogger("ds01d")

_STATUS_MAP = {"created": "created", "running": "running", "paused": "running", "restarting": "running",
               "exited": "exited", "dead": "exited", "removing": "exited"}


def record_view(rec: ContainerRecord, info: ContainerInfo | None = None) -> dict[str, Any]:
    return {
        "project": rec.project,
        "user": rec.user,
        "uid": rec.uid,
        "name": rec.docker_name,
        "id": (rec.docker_id or "")[:12],
        "image": rec.image,
        "status": rec.status,
        "created_at": rec.created_at,
        "started_at": rec.started_at,
        "stopped_at": rec.stopped_at,
        "gpus": rec.gpus,
        "limits": rec.limits,
        "workspace": rec.workspace,
    }


class ContainerService:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    @property
    def cfg(self):
        return self.ctx.config

    def _emit(self, action: str, who: Caller, target: str, result: str = "ok", reason: str | None = None,
              data: dict | None = None, actor: Caller | None = None) -> None:
        d = dict(data or {})
        if actor is not None and actor.uid != who.uid:
            d["by"] = actor.name
        self.ctx.events.emit(action, user=who.name, uid=who.uid, target=target, result=result, reason=reason,
                             data=d or None)

    def limits_for(self, who: Caller):
        return effective_limits(self.cfg, who.name, set(who.groups))

    # -- lookups ---------------------------------------------------------------------------
    def resolve(self, who: Caller, ref: str) -> ContainerRecord:
        return resolve_ref(ref, self.ctx.store.live_containers(who.uid))

    def _sync(self, rec: ContainerRecord) -> ContainerRecord:
        """Refresh a record's status from the engine (Docker is the truth for what exists)."""
        info = self.ctx.runtime.inspect(rec.docker_id) if rec.docker_id else None
        return self._apply_info(rec, info)

    def _apply_info(self, rec: ContainerRecord, info: ContainerInfo | None) -> ContainerRecord:
        now = self.ctx.clock()
        if info is None:
            if rec.status not in ("removed", "gone"):
                self.ctx.store.update_container(rec.id, status="gone", ended_at=now)
                self.ctx.events.emit("container.gone", user=rec.user, uid=rec.uid, target=rec.project,
                                     reason="removed outside DS01")
                rec.status, rec.ended_at = "gone", now
            return rec
        status = _STATUS_MAP.get(info.status, info.status)
        if status != rec.status:
            fields: dict[str, Any] = {"status": status}
            if status == "exited" and rec.status == "running":
                fields["stopped_at"] = now
            self.ctx.store.update_container(rec.id, **fields)
            rec.status = status
        return rec

    # -- L2 verbs --------------------------------------------------------------------------
    def create(self, actor: Caller, who: Caller, project: str, image: str | None = None,
               cpu_only: bool = False) -> dict[str, Any]:
        project = validate_project(project)
        image = image or self.cfg.images.default
        self._check_image(image)
        lim = self.limits_for(who)
        existing = self.ctx.store.live_container(who.uid, project)
        if existing is not None:
            existing = self._sync(existing)
            if existing.status != "gone":
                raise Conflict(
                    f"project {project!r} already has a container ({existing.status})",
                    f"use 'container-start {project}', or 'container-remove {project}' first",
                )
        live = [r for r in self.ctx.store.live_containers(who.uid)]
        if len(live) >= lim.max_containers:
            self._emit("container.create", who, project, "denied", "max_containers", actor=actor)
            raise PolicyDenied(
                f"you have {len(live)} containers; your limit is {lim.max_containers}",
                "remove one you no longer need with 'container-remove <project>'",
            )
        if not self.ctx.runtime.image_exists(image):
            raise DS01Error(
                f"image {image!r} is not available on this host",
                "build your project's image with 'image-create <project>' or ask an admin to bootstrap the base image",
            )
        workspace = ensure_workspace(who, project, self.cfg.containers.workspace_base)
        now = self.ctx.clock()
        spec = build_spec(self.cfg, who, project, image, lim, workspace, now, self.ctx.instance,
                          host_cpus=os.cpu_count())
        info = self.ctx.runtime.create(spec)
        applied = {"cpus": spec.cpus, "memory": spec.memory, "shm_size": spec.shm_size, "pids": spec.pids}
        try:
            self.ctx.store.insert_container(
                uid=who.uid, user=who.name, project=project, docker_id=info.id, docker_name=spec.name,
                image=image, status="created", created_at=now, limits=applied, gpus=list(spec.gpu_device_ids),
                workspace=workspace,
            )
        except Exception:
            self.ctx.runtime.remove(info.id, force=True)
            raise
        self._emit("container.create", who, project, data={"image": image, "id": info.id[:12]}, actor=actor)
        rec = self.ctx.store.live_container(who.uid, project)
        assert rec is not None
        return record_view(rec)

    def _check_image(self, image: str) -> None:
        allowed = self.cfg.images.allowed
        if not any(image.startswith(p) for p in allowed):
            raise PolicyDenied(
                f"image {image!r} is not allowed on this host",
                "allowed image prefixes: " + (", ".join(allowed) or "(none configured)"),
            )

    def start(self, actor: Caller, who: Caller, ref: str) -> dict[str, Any]:
        rec = self._sync(self.resolve(who, ref))
        self._require_exists(rec)
        if rec.status != "running":
            try:
                self.ctx.runtime.start(rec.docker_id)
            except ContainerGone:
                self._apply_info(rec, None)
                raise
            now = self.ctx.clock()
            self.ctx.store.update_container(rec.id, status="running", started_at=now)
            rec.status, rec.started_at = "running", now
            self._emit("container.start", who, rec.project, actor=actor)
        return record_view(rec)

    def stop(self, actor: Caller, who: Caller, ref: str, timeout: float | None = None) -> dict[str, Any]:
        rec = self._sync(self.resolve(who, ref))
        self._require_exists(rec)
        if rec.status == "running":
            t = self.cfg.containers.stop_timeout if timeout is None else timeout
            try:
                self.ctx.runtime.stop(rec.docker_id, t)
            except ContainerGone:
                self._apply_info(rec, None)
                raise
            now = self.ctx.clock()
            self.ctx.store.update_container(rec.id, status="exited", stopped_at=now)
            rec.status, rec.stopped_at = "exited", now
            self._emit("container.stop", who, rec.project, data={"timeout": t}, actor=actor)
        return record_view(rec)

    def remove(self, actor: Caller, who: Caller, ref: str, force: bool = False) -> dict[str, Any]:
        rec = self._sync(self.resolve(who, ref))
        if rec.status == "running" and not force:
            raise Conflict(f"the container of {rec.project!r} is running",
                           f"stop it first with 'container-stop {rec.project}' or use --force")
        if rec.status != "gone" and rec.docker_id:
            self.ctx.runtime.remove(rec.docker_id, force=force)
        now = self.ctx.clock()
        self.ctx.store.update_container(rec.id, status="removed", ended_at=now)
        rec.status, rec.ended_at = "removed", now
        self._emit("container.remove", who, rec.project, data={"force": force}, actor=actor)
        return record_view(rec)

    def _require_exists(self, rec: ContainerRecord) -> None:
        if rec.status == "gone":
            raise ContainerGone(
                f"the container of {rec.project!r} was removed outside DS01",
                f"create a new one with 'container-create {rec.project}'",
            )

    def list(self, who: Caller | None, include_stopped: bool = True) -> list[dict[str, Any]]:
        """``who`` None = every user (admin). Status comes live from the engine in one call."""
        lbl = {f"{LABEL}.managed": "true", f"{LABEL}.instance": self.ctx.instance}
        if who is not None:
            lbl[f"{LABEL}.uid"] = str(who.uid)
        infos = {i.id: i for i in self.ctx.runtime.list(lbl)}
        out = []
        for rec in self.ctx.store.live_containers(None if who is None else who.uid):
            rec = self._apply_info(rec, infos.get(rec.docker_id or ""))
            if rec.status == "gone" or (not include_stopped and rec.status != "running"):
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

    # -- reconcile -------------------------------------------------------------------------
    def reconcile(self) -> dict[str, int]:
        """Match the DB to the engine after a (re)start: records whose container disappeared are
        marked gone; managed containers of this instance we did not know are adopted."""
        lbl = {f"{LABEL}.managed": "true", f"{LABEL}.instance": self.ctx.instance}
        infos = {i.id: i for i in self.ctx.runtime.list(lbl)}
        known = set()
        gone = adopted = 0
        for rec in self.ctx.store.live_containers():
            info = infos.get(rec.docker_id or "")
            before = rec.status
            self._apply_info(rec, info)
            if rec.status == "gone" and before != "gone":
                gone += 1
            if info is not None:
                known.add(info.id)
        for cid, info in infos.items():
            if cid in known:
                continue
            lb = info.labels
            try:
                uid = int(lb.get(f"{LABEL}.uid", ""))
                project = validate_project(lb.get(f"{LABEL}.project", ""))
            except (ValueError, DS01Error):
                log.warning("not adopting %s: bad ds01 labels", info.name)
                continue
            if self.ctx.store.live_container(uid, project) is not None:
                log.warning("not adopting %s: (%s, %s) already has a live record", info.name, uid, project)
                continue
            full = self.ctx.runtime.inspect(cid) or info
            self.ctx.store.insert_container(
                uid=uid, user=lb.get(f"{LABEL}.user", str(uid)), project=project, docker_id=cid,
                docker_name=info.name, image=lb.get(f"{LABEL}.image", info.image),
                status=_STATUS_MAP.get(full.status, "exited"),
                created_at=float(lb.get(f"{LABEL}.created_at") or self.ctx.clock()),
                gpus=[g for g in lb.get(f"{LABEL}.gpus", "").split(",") if g],
            )
            self.ctx.events.emit("container.adopt", user=lb.get(f"{LABEL}.user"), uid=uid, target=project,
                                 reason="found in the engine at daemon start")
            adopted += 1
        return {"gone": gone, "adopted": adopted, "known": len(known)}
