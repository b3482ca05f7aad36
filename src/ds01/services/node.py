"""The node agent's service (cluster mode, issue 18): what ``ds01d --node NAME`` does on each
GPU server, for the head only.

Contract: every request was already authenticated as the head's (``daemon/agent.py``, MUNGE).
Beyond that the agent trusts nothing in it about placement: a create or start is carried out
only for a *running* Slurm job of the spec's user that Slurm placed on *this* node, and the
container gets exactly that job's GPUs (``policy.placement.bind_devices``), never the request's.
Reads and stop/remove are allowed on this node's DS01 containers whatever their job's state (the
head cleans up after a job ended). ``watch`` stops a container whose job is no longer running:
the container's life is the job's.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Any

from ds01 import labels
from ds01.errors import InvalidInput, NotFound, PermissionDenied
from ds01.models.container import spec_from_dict
from ds01.policy.placement import bind_devices, job_refusal
from ds01.runtime.base import ContainerInfo, ExecHandle, RuntimeBackend
from ds01.runtime.slurm import SlurmCli
from ds01.services.workspace import pin_workspace, unpin_workspace

log = logging.getLogger("ds01d.agent")


def _home(uid: int) -> str:
    import pwd

    try:
        return os.path.realpath(pwd.getpwuid(uid).pw_dir)
    except KeyError:
        return ""


def info_dict(i: ContainerInfo) -> dict[str, Any]:
    return dataclasses.asdict(i)


class NodeAgent:
    def __init__(self, node: str, runtime: RuntimeBackend, slurm: SlurmCli, instance: str,
                 workspace_root: str = "", gpu_source: Any = None, mounts_dir: str | None = None,
                 template: str = "{home}/workspace", allowed: list[str] | None = None):
        self.node = node
        # as on one server (services/workspace.py): Docker binds an empty root-owned directory,
        # onto which the checked workspace is pinned only while the container starts; None = off
        self.mounts_dir, self.template = mounts_dir, template
        self.allowed = allowed  # images.allowed, checked on this node too (None: not checked)
        self.gpu_source = gpu_source  # this node's InventorySource (gpu.* of the config)
        self.runtime = runtime
        self.slurm = slurm
        self.instance = instance
        # a workspace bind must resolve, without symlinks, under the user's home or under this
        # (the fixed part of containers.workspace_base; shared storage either way)
        self.workspace_root = os.path.realpath(workspace_root) if workspace_root.strip("/") else ""
        self._stop = threading.Event()
        self._reader: Any = None  # CgroupReader, made on the first sample

    # -- checks ----------------------------------------------------------------------------
    def _check_job(self, job_id: int, uid: int) -> Any:
        job = self.slurm.job(job_id)
        why = job_refusal(job, job_id=job_id, node=self.node, uid=uid)
        if why:
            raise PermissionDenied(f"node {self.node} refuses: {why}",
                                   "the head asks only for live jobs; see 'squeue' and the head's log")
        return job

    def _mine(self, cid: str) -> ContainerInfo:
        """A DS01 container of this instance on this node, or NotFound (nothing else is touched)."""
        info = self.runtime.inspect(cid)
        lb = info.labels if info is not None else {}
        if (info is None or lb.get(labels.MANAGED) != "true" or lb.get(labels.INSTANCE) != self.instance
                or lb.get(labels.NODE) != self.node):
            raise NotFound(f"no DS01 container {cid[:12]} on node {self.node}")
        return info

    def _job_of(self, info: ContainerInfo) -> None:
        try:
            job_id, uid = int(info.labels[labels.SLURM_JOB]), int(info.labels[labels.UID])
        except (KeyError, ValueError):
            raise PermissionDenied(f"container {info.name} carries no Slurm job") from None
        self._check_job(job_id, uid)

    def _check_spec(self, spec, uid: int) -> None:
        """The head built the spec with DS01's policy; re-check what isolation rests on."""
        if spec.account.uid != uid or not spec.no_new_privileges or "ALL" not in spec.cap_drop:
            raise PermissionDenied("the container spec does not carry DS01's isolation settings")
        for m in spec.mounts:
            if m.target != "/workspace" and not m.read_only:
                raise PermissionDenied(f"refusing a writable mount at {m.target}")
            if m.target == "/workspace":
                real = os.path.realpath(m.source)
                # shared storage: the path the head checked must still be the user's own, with
                # no symlink anywhere in it (a swap between the head's check and this create)
                roots = [r for r in (self.workspace_root, _home(uid)) if r]
                if real != os.path.normpath(m.source) or not any(real.startswith(r + os.sep) for r in roots):
                    raise PermissionDenied(f"the workspace {m.source} does not resolve under {' or '.join(roots)}")
                try:
                    if os.stat(real).st_uid != uid:
                        raise PermissionDenied(f"the workspace {m.source} is not owned by uid {uid}")
                except FileNotFoundError:
                    raise NotFound(f"the workspace {m.source} is not on node {self.node}",
                                   "workspaces must be on storage shared by every node") from None

    # -- verbs -----------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        mine = self.runtime.list({**labels.managed(self.instance), labels.NODE: self.node})
        return {"node": self.node, "containers": len(mine),
                "running": sum(1 for i in mine if i.status == "running"), "utilization": self.utilization()}

    def utilization(self) -> dict[str, dict[str, Any]]:
        """This node's whole GPUs by index (Slurm's IDX): utilization and memory in use, from its
        own inventory source (NVML on a GPU server); {} when it has none or cannot tell."""
        if self.gpu_source is None:
            return {}
        try:
            inv = self.gpu_source.read()
            util = self.gpu_source.utilization()
        except Exception as e:  # a driver hiccup must not make the agent look down
            log.warning("GPU utilization unavailable: %s", e)
            return {}
        return {str(d.index): {"gpu_percent": util[d.uuid].gpu_percent, "memory_used_bytes": util[d.uuid].memory_used_bytes}
                for d in inv.gpus if d.uuid in util}

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            spec = spec_from_dict(body["spec"])
            job_id = int(body["job"])
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInput(f"malformed create request: {e}") from None
        job = self._check_job(job_id, spec.account.uid)
        self._check_spec(spec, spec.account.uid)
        # one container per job: a second one would share the job's GPUs outside Slurm's books
        for other in self.runtime.list({**labels.managed(self.instance), labels.SLURM_JOB: str(job_id)}):
            if other.status not in ("exited", "dead"):
                raise PermissionDenied(f"job {job_id} already has a container on node {self.node}")
        spec = bind_devices(spec, job, self.node)
        spec = self._pin_point(spec)
        if self.allowed is not None:
            from ds01.images.catalog import check_image_allowed

            check_image_allowed(spec.labels.get(labels.IMAGE, spec.image), self.allowed)
        if spec.labels.get(labels.INSTANCE) != self.instance:
            raise PermissionDenied(f"the spec is for instance {spec.labels.get(labels.INSTANCE)!r}")
        if "@" in spec.image:  # the head pushed it to the lab registry: this node uses that digest
            from ds01.runtime.docker_pull import ensure

            ensure(self.runtime, spec.image)
            got = self.runtime.image_inspect(spec.image)
            if spec.image_id is not None and (got is None or got.id != spec.image_id):
                raise PermissionDenied(f"the registry's {spec.image} is not the image the head built",
                                       "an admin checks cluster.registry")
            spec = dataclasses.replace(spec, image_id=None)
        elif spec.image_id is not None and not self.runtime.image_exists(spec.image_id):
            spec = dataclasses.replace(spec, image_id=None)  # this node has the image under its name only
        return info_dict(self.runtime.create(spec))

    def start(self, cid: str) -> None:
        info = self._mine(cid)
        self._job_of(info)
        mp = self._pin(info)
        try:
            self.runtime.start(info.id)
        finally:
            if mp:
                unpin_workspace(mp, remove_dir=False)

    # -- the workspace pin (a symlink swapped in after the head's check is never followed) ----
    def _pin_point(self, spec):
        if not self.mounts_dir:
            return spec
        real = next(m.source for m in spec.mounts if m.target == "/workspace")
        mp = os.path.join(self.mounts_dir, spec.name)
        os.makedirs(mp, mode=0o700, exist_ok=True)
        mounts = tuple(dataclasses.replace(m, source=mp) if m.target == "/workspace" else m for m in spec.mounts)
        return dataclasses.replace(spec, mounts=mounts, labels={**spec.labels, labels.WORKSPACE: real})

    def _pin(self, info: ContainerInfo) -> str | None:
        """Pin the workspace (opened as the user's own, no symlinks) for this start."""
        real = info.labels.get(labels.WORKSPACE)
        if not self.mounts_dir or not real:
            return None
        from ds01.services.identity import caller_from_uid

        who = caller_from_uid(int(info.labels[labels.UID]), None, "")
        try:
            return pin_workspace(who, real, self.template, os.path.join(self.mounts_dir, info.name))
        except OSError as e:  # fail closed: never hand Docker an unpinned user path
            raise PermissionDenied(f"could not pin the workspace {real} on node {self.node}: {e.strerror}") from None

    def stop(self, cid: str, timeout: float) -> None:
        self.runtime.stop(self._mine(cid).id, timeout)

    def remove(self, cid: str, force: bool) -> bool:
        try:
            info = self._mine(cid)
        except NotFound:
            return False
        done = self.runtime.remove(info.id, force=force)
        if self.mounts_dir:
            unpin_workspace(os.path.join(self.mounts_dir, info.name))
        return done

    def inspect(self, cid: str) -> dict[str, Any] | None:
        try:
            return info_dict(self._mine(cid))
        except NotFound:
            return None

    def list(self, selector: dict[str, str]) -> list[dict[str, Any]]:
        sel = {**selector, **labels.managed(self.instance), labels.NODE: self.node}
        return [info_dict(i) for i in self.runtime.list(sel)]

    def stats(self, cid: str) -> dict:
        return self.runtime.stats(self._mine(cid).id)

    def logs(self, cid: str, tail: int) -> str:
        return self.runtime.logs(self._mine(cid).id, tail)

    def sample(self, cid: str, ignore: list[str]) -> dict[str, Any]:
        """What idle reclaim needs of a container here: its cgroup's CPU time, busy processes
        (``ignore``: names that do not count), network bytes (services/sampling.py)."""
        from ds01.services.sampling import CgroupReader, init_pid

        info = self._mine(cid)
        if self._reader is None:
            self._reader = CgroupReader()
        pid = init_pid(self.runtime, info.id)
        paths = self._reader.from_pid(pid) if pid else self._reader.from_id(info.id)
        pids = self._reader.pids(paths) if paths else None
        return {"cpu_ns": self._reader.cpu_ns(paths) if paths else None,
                "processes": None if pids is None else self._reader.busy_processes(pids, frozenset(ignore)),
                "net_bytes": self._reader.net_bytes(pid) if pid else None}

    def follow_logs(self, cid: str):
        return self.runtime.follow_logs(self._mine(cid).id)

    def exec_start(self, body: dict[str, Any]) -> ExecHandle:
        try:
            cid, cmd, user = str(body["container"]), [str(c) for c in body["cmd"]], str(body["user"])
            env = {str(k): str(v) for k, v in (body.get("env") or {}).items()}
            workdir, tty = str(body.get("workdir") or "/workspace"), bool(body.get("tty"))
        except (KeyError, TypeError) as e:
            raise InvalidInput(f"malformed exec request: {e}") from None
        info = self._mine(cid)
        self._job_of(info)
        owner = info.labels.get(labels.UID, "")
        try:
            import pwd

            want = f"{owner}:{pwd.getpwuid(int(owner)).pw_gid}"
        except (KeyError, ValueError):
            want = None
        if want is None or user != want:
            raise PermissionDenied("an exec runs as the container's owner (uid:gid) only")
        return self.runtime.exec_start(info.id, cmd, user=user, env=env, workdir=workdir, tty=tty)

    def exec_state(self, exec_id: str) -> dict[str, Any]:
        return {"exit_code": self.runtime.exec_exit_code(exec_id), "pid": self.runtime.exec_pid(exec_id)}

    def exec_signal(self, exec_id: str, cid: str, sig: int) -> bool:
        """``sig`` to the exec's process group, checked to be in this node's DS01 container."""
        from ds01.services.exec import signal_group

        info = self._mine(cid)
        pid = self.runtime.exec_pid(exec_id)
        return pid is not None and signal_group(pid, info.id, sig)

    # -- the container's life is the job's --------------------------------------------------
    def sweep(self) -> int:
        """Stop every running container of this node whose Slurm job is no longer running."""
        stopped = 0
        for info in self.runtime.list({**labels.managed(self.instance), labels.NODE: self.node}):
            if info.status != "running":
                continue
            try:
                job = self.slurm.job(int(info.labels.get(labels.SLURM_JOB, "0")))
            except Exception as e:  # Slurm not answering: keep running, look again next time
                log.warning("cannot read the job of %s: %s", info.name, e)
                continue
            if job is None or not job.running or job.node != self.node:
                log.info("stopping %s: its Slurm job %s ended", info.name, info.labels.get(labels.SLURM_JOB))
                try:
                    self.runtime.stop(info.id, 10)
                    stopped += 1
                except Exception as e:
                    log.warning("could not stop %s: %s", info.name, e)
        return stopped

    def watch(self, every: float = 3.0) -> None:
        while not self._stop.wait(every):
            try:
                self.sweep()
            except Exception:
                log.exception("sweep failed")

    def close(self) -> None:
        self._stop.set()
