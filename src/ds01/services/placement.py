"""Placement: where a container runs and with which devices (issue 18). One interface, two
implementations chosen by ``cluster.engine``; the container service asks it and does not branch
on the mode.

* ``LocalPlacement``: this server. ``acquire`` returns None: DS01's own allocator decides inside
  the create transaction (``policy.allocation.decide``) and the fair queue serves waiters.
* ``SlurmPlacement``: Slurm decides. ``acquire`` submits a job as the user (``sbatch --uid``) into
  DS01's partition with the GRES, CPUs, memory and time limit of DS01's policy, and waits up to
  ``cluster.place_timeout`` for it to start: ``Placed`` (node, GPU indices: what the container
  gets) or ``Pending`` (Slurm's reason and estimate; the request is then queued under that job).
  ``release`` cancels the job (idempotent). The container's life is the job's.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from ds01.errors import CapacityExhausted, InvalidInput, RuntimeFailure, SchedulerFailure
from ds01.models.gpu import Device, Inventory
from ds01.policy import slurm as sp
from ds01.policy.placement import Pending, Placed, device_key, outcome, registry_ref

log = logging.getLogger("ds01d")

# Slurm's reasons for a job that waits for other work to end (not for its own start-up)
WAITING_FOR_OTHERS = frozenset({"Resources", "Priority", "ReqNodeNotAvail", "QOSMaxGRESPerUser",
                                "AssocGrpGRES", "QOSMaxJobsPerUserLimit", "Nodes_required_for_job_are_DOWN"})
SETTLE = 2.0  # seconds after the submit before such a reason is believed


class LocalPlacement:
    kind = "local"
    external = False  # DS01's allocator and queue decide
    holds_after_stop = True  # a stopped container keeps its devices for gpu_hold_after_stop

    def acquire(self, who: Any, project: str, request: Any, lim: Any, workdir: str) -> Placed | Pending | None:
        return None

    def poll(self, job: int) -> Placed | Pending | None:
        return None

    def release(self, job: int | None) -> None:
        pass

    def distribute(self, image: str, local: Any) -> dict[str, Any]:
        return {}  # the container runs on this engine, which has the image

    def pending(self, jobs: list[int]) -> dict[int, Pending]:
        return {}

    def inventory(self) -> Inventory | None:
        return None

    def tick(self) -> None:
        pass


class SlurmPlacement:
    kind = "slurm"
    external = True
    holds_after_stop = False  # a stop ends the job: Slurm's devices go back at once

    def __init__(self, cfg: Any, slurm: Any, instance: str, runtime: Any = None, poll: float = 0.25):
        # the whole Config, read each time (``config_source``: the daemon's live one, reloadable)
        self.config_source: Any = lambda: cfg
        self.slurm = slurm
        self.instance = instance
        self.runtime = runtime  # ClusterRuntime: which agents answer (for draining)
        self._poll = poll
        self._unanswered: dict[str, float] = {}  # node -> since when its agent does not answer
        self._drained: set[str] = set()
        # (image id, repository, tag) -> the manifest digest the lab registry stored for it
        self._pushed: dict[tuple[str, str, str], str] = {}

    @property
    def cfg(self):
        return self.config_source()

    @property
    def c(self):
        return self.cfg.cluster

    # -- placing ---------------------------------------------------------------------------
    def submit_args(self, who: Any, project: str, request: Any, lim: Any, workdir: str,
                    time_limit_s: float | None = None) -> list[str]:
        """sbatch's argv for ``who``'s ``project``; ``time_limit_s`` (a batch job's own limit)
        else the user's ``max_runtime``."""
        if request.kind in ("profile", "mig"):
            # Slurm's IDX of a MIG GRES is a position in the node's GRES list, not a device the
            # runtime can be given: binding it needs the node's MIG UUIDs, which is not built yet
            raise InvalidInput("MIG instances are not available in cluster mode yet",
                               "ask for whole GPUs (--gpus N); see docs/scale-out.md")
        try:
            gres = sp.gres_for(request, self.c.gres_type, self.c.mig_types)
            return sp.submit_args(partition=self.c.partition, name=sp.job_name(self.instance, who.uid, project),
                                  uid=who.uid, gid=who.gid, gres=gres, cpus=lim.cpus, memory_bytes=lim.memory,
                                  time_limit_s=time_limit_s or lim.max_runtime or None, workdir=workdir)
        except ValueError as e:  # e.g. a project name too long for a Slurm job name
            raise InvalidInput(f"cannot submit this to Slurm: {e}", "use a shorter project name") from None

    def acquire(self, who: Any, project: str, request: Any, lim: Any, workdir: str) -> Placed | Pending:
        args = self.submit_args(who, project, request, lim, workdir if os.path.isabs(workdir) else "/tmp")
        job = self.slurm.submit(args)
        deadline = time.monotonic() + float(self.c.place_timeout)
        last: Placed | Pending | None = None
        while True:
            try:
                last = outcome(self.slurm.job(job), job)
            except SchedulerFailure:
                self.release(job)
                raise
            if isinstance(last, Placed):
                return last
            if last is None:
                raise CapacityExhausted(f"Slurm ended job {job} before it started",
                                        "see 'sacct -j " + str(job) + "' or ask an admin")
            waited = float(self.c.place_timeout) - (deadline - time.monotonic())
            # Slurm tries a new job at once: still pending after that, for others' work, it waits
            if time.monotonic() >= deadline or (waited >= SETTLE and (last.reason or "") in WAITING_FOR_OTHERS):
                return last
            time.sleep(self._poll)

    def poll(self, job: int) -> Placed | Pending | None:
        return outcome(self.slurm.job(job), job)

    def distribute(self, image: str, local: Any) -> dict[str, Any]:
        """Spec changes so the chosen node can get ``image``: with ``cluster.registry``, a
        DS01-built (local) image is pushed there once per image id and the node pulls it by its
        digest (a rebuilt image is a new digest; a tag moved in the registry changes nothing) and
        checks it is that image id; else the node is expected to have it (``{}``)."""
        ref = registry_ref(self.c.registry, image)
        if ref is None or self.runtime is None:
            return {}
        image_id = local.id if local is not None else image
        key = (image_id, *ref)
        if key not in self._pushed:
            from ds01.runtime.docker_pull import push

            self._pushed[key] = push(self.runtime.local, image_id, *ref)
        return {"image": f"{ref[0]}@{self._pushed[key]}", "image_id": image_id if local is not None else None}

    def release(self, job: int | None) -> None:
        if job:
            try:
                self.slurm.cancel(int(job))
            except SchedulerFailure as e:  # the tick's reconcile cancels it later
                log.warning("could not cancel Slurm job %s: %s", job, e.message)

    def pending(self, jobs: list[int]) -> dict[int, Pending]:
        if not jobs:
            return {}
        try:
            known = {j.id: j for j in self.slurm.jobs(self.c.partition)}
        except SchedulerFailure:
            return {}
        out = {}
        for jid in jobs:
            o = outcome(known.get(jid), jid)
            if isinstance(o, Pending):
                out[jid] = o
        return out

    # -- the cluster's devices -------------------------------------------------------------
    def inventory(self) -> Inventory:
        """Every node's GPUs as Slurm's GRES declares them (keys ``node/gpuN``)."""
        devices = []
        for n in sorted(self.slurm.nodes(), key=lambda n: n.name):
            i = 0
            for gtype, count in sorted(n.gres.items()):
                for _ in range(count):
                    devices.append(Device(uuid=device_key(n.name, i), index=i, name=gtype or "gpu",
                                          memory_bytes=0, node=n.name))
                    i += 1
        return Inventory(driver_version=None, cuda_version=None, devices=devices)

    def nodes(self) -> list[dict[str, Any]]:
        down = self.runtime.down if self.runtime is not None else set()
        return [{"node": n.name, "state": n.state, "usable": n.usable, "reason": n.reason, "gres": n.gres,
                 "agent": "not answering" if n.name in down else "ok"} for n in self.slurm.nodes()]

    def tick(self) -> None:
        """Drain a node whose agent has not answered for ``drain_after`` (Slurm then places new
        work elsewhere); resume it when the agent is back, if DS01 drained it."""
        if self.runtime is None:
            return
        now = time.monotonic()
        for node in self.runtime.nodes:
            if node in self.runtime.down:
                since = self._unanswered.setdefault(node, now)
                if node not in self._drained and now - since >= float(self.c.drain_after):
                    try:
                        self.slurm.drain(node, "ds01 agent not answering")
                        self._drained.add(node)
                        log.warning("drained node %s: its DS01 agent does not answer", node)
                    except SchedulerFailure as e:
                        log.warning("could not drain %s: %s", node, e.message)
            else:
                self._unanswered.pop(node, None)
                if node in self._drained:
                    try:
                        self.slurm.resume(node)
                        self._drained.discard(node)
                        log.info("resumed node %s: its DS01 agent answers again", node)
                    except SchedulerFailure as e:
                        log.warning("could not resume %s: %s", node, e.message)


def make_placement(cfg: Any, instance: str, runtime: Any = None) -> LocalPlacement | SlurmPlacement:
    if cfg.cluster.engine == "slurm":
        from ds01.runtime.slurm import SlurmCli

        return SlurmPlacement(cfg, SlurmCli(cfg.cluster.slurm_conf), instance, runtime)
    if cfg.cluster.engine != "local":  # pragma: no cover - the config model allows only these
        raise RuntimeFailure(f"unknown cluster.engine {cfg.cluster.engine!r}")
    return LocalPlacement()
