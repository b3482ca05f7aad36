"""Reconcile after a (re)start: the state DB matched to what the engine runs."""

from __future__ import annotations

import logging
import os

from ds01 import labels
from ds01.errors import DS01Error
from ds01.names import container_name, validate_project
from ds01.services.containers import _STATUS_MAP, ContainerService

log = logging.getLogger("ds01d")


def reconcile(svc: ContainerService) -> dict[str, int]:
    """Match the DB to the engine after a (re)start: records whose container disappeared are
    marked gone; managed containers of this instance we did not know are adopted."""
    recs = svc.ctx.store.live_containers()
    infos = {i.id: i for i in svc.ctx.runtime.list(labels.managed(svc.ctx.instance))}
    known = set()
    gone = adopted = 0
    for rec in recs:
        if rec.status == "creating":  # the daemon died mid-create
            with svc.ctx.store.transaction() as conn:
                svc.ctx.store.update_container(rec.id, conn, status="gone", ended_at=svc.ctx.clock())
                svc.ctx.store.release(rec.id, svc.ctx.clock(), "create interrupted", conn)
            if rec.docker_name:
                svc.ctx.runtime.remove(rec.docker_name, force=True)
                svc._unpin(rec.docker_name)
            gone += 1
            continue
        info = infos.get(rec.docker_id or "")
        before = rec.status
        svc._apply_info(rec, info)
        if rec.status == "gone" and before != "gone":
            gone += 1
        if info is not None:
            known.add(info.id)
    for cid, info in infos.items():
        if cid in known or labels.JOB in info.labels:  # a batch job's: JobService.recover's
            continue
        lb = info.labels
        try:
            uid = int(lb.get(labels.UID, ""))
            project = validate_project(lb.get(labels.PROJECT, ""))
        except (ValueError, DS01Error):
            log.warning("not adopting %s: bad ds01 labels", info.name)
            continue
        if info.name != container_name(svc.cfg.containers.name_prefix, uid, project):
            # only what this daemon would have created: a build step or a hand-made container
            # carrying copied ds01.* labels is not a user's container
            log.warning("not adopting %s: its name does not match its ds01 labels", info.name)
            continue
        if svc.ctx.store.live_container(uid, project) is not None:
            log.warning("not adopting %s: (%s, %s) already has a live record", info.name, uid, project)
            continue
        full = svc.ctx.runtime.inspect(cid) or info
        gpus = [g for g in lb.get(labels.GPUS, "").split(",") if g]
        with svc.ctx.store.transaction() as conn:
            rec_id = svc.ctx.store.insert_container(
                conn, uid=uid, user=lb.get(labels.USER, str(uid)), project=project, docker_id=cid,
                docker_name=info.name, image=lb.get(labels.IMAGE, info.image),
                status=_STATUS_MAP.get(full.status, "exited"),
                created_at=float(lb.get(labels.CREATED_AT) or svc.ctx.clock()), gpus=gpus,
                node=lb.get(labels.NODE), slurm_job=int(lb[labels.SLURM_JOB]) if lb.get(labels.SLURM_JOB, "").isdigit() else None,
            )
            # its env names these devices: hold them again if nobody else does
            held = svc.ctx.store.held_devices(conn)
            mine = {g: svc.ctx.inventory.device(g).equivalents for g in gpus
                    if g not in held and svc.ctx.inventory.device(g) is not None}
            rec = svc.ctx.store.get_container(rec_id)
            svc.ctx.store.allocate(conn, rec, mine, svc.ctx.clock())
        svc.ctx.events.emit("container.adopt", user=lb.get(labels.USER), uid=uid, target=project,
                             reason="found in the engine at daemon start")
        adopted += 1
    stale = _unpin_stale(svc)
    nets = svc.ctx.runtime.prune_networks(labels.managed(svc.ctx.instance))  # users with no container
    return {"gone": gone, "adopted": adopted, "known": len(known), "stale_pins": stale, "networks": nets}

def _unpin_stale(svc: ContainerService) -> int:
    """At start-up no start is in progress: every pin is left over (a daemon killed mid-start, a container
    removed while it was down); all come off, live ones' mount points stay. Returns how many were not live."""
    if not svc.ctx.mounts_dir or not os.path.isdir(svc.ctx.mounts_dir):
        return 0
    live, names = {r.docker_name for r in svc.ctx.store.live_containers()}, os.listdir(svc.ctx.mounts_dir)
    for name in names:
        svc._unpin(name, remove_dir=name not in live)
    return len([n for n in names if n not in live])
