"""Pure decisions about containers: what a container gets, and whom a reference names.

Everything security-relevant about a container is decided here from (caller, project, limits,
devices, config) — never from request fields — so it can be tested without Docker.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from ds01 import labels as keys
from ds01.errors import InvalidInput, NotFound
from ds01.models.config import Config
from ds01.models.container import Account, ContainerSpec, Mount, Tmpfs
from ds01.names import container_name
from ds01.policy.environment import container_environment
from ds01.policy.isolation import refuse_gpu_handoff_volumes, user_network

# Security options of every user container. Not configurable: an admin has no knob that weakens
# them, and users cannot express them (models/api.py).
CAP_DROP = ("ALL",)
NO_NEW_PRIVILEGES = True
INIT = True  # reap zombies; PID 1 forwards SIGTERM so stop is graceful
# HOME is a tmpfs (private, writable, ephemeral like the container; work belongs in /workspace).
# It counts against the memory limit, hence a quarter of it, within these bounds.
HOME_TMPFS_MIN = 64 * 1024**2
HOME_TMPFS_MAX = 4 * 1024**3


class Who(Protocol):
    uid: int
    gid: int
    name: str
    group: str


class LimitsLike(Protocol):
    cpus: float
    memory: int
    shm_size: int
    pids: int


def gpu_env(device_ids: Iterable[str]) -> dict[str, str]:
    """Always explicit: ``void`` when CPU-only, so an image's ``ENV NVIDIA_VISIBLE_DEVICES=all``
    or a ``default-runtime: nvidia`` engine can never leak GPUs."""
    ids = ",".join(device_ids)
    return {"NVIDIA_VISIBLE_DEVICES": ids or "void", "CUDA_VISIBLE_DEVICES": ids}


def user_env(who: Who, device_ids: Iterable[str] = ()) -> dict[str, str]:
    home = f"/home/{who.name}"
    return {
        "HOME": home,
        "USER": who.name,
        "LOGNAME": who.name,
        "DS01_PROJECT_DIR": "/workspace",
        **gpu_env(device_ids),
    }


def labels(cfg: Config, who: Who, project: str, image: str, device_ids: Iterable[str], now: float,
           instance: str) -> dict[str, str]:
    return {
        **keys.managed(instance),
        keys.USER: who.name,
        keys.UID: str(who.uid),
        keys.PROJECT: project,
        keys.IMAGE: image,
        keys.GPUS: ",".join(device_ids),
        keys.CREATED_AT: f"{now:.3f}",
    }


def home_tmpfs(account: Account, memory: int) -> Tmpfs:
    """The caller's HOME: owned by them, mode 0700, a quarter of the memory limit (bounded)."""
    size = max(HOME_TMPFS_MIN, min(memory // 4, HOME_TMPFS_MAX))
    return Tmpfs(account.home, size=size, uid=account.uid, gid=account.gid, mode=0o700, exec=True)


def build_spec(cfg: Config, who: Who, project: str, image: str, limits: LimitsLike, workspace: str,
               now: float, instance: str, device_ids: tuple[str, ...] = (),
               ports: tuple[tuple[int, str, int], ...] = (), command: tuple[str, ...] | None = None,
               host_cpus: int | None = None, image_id: str | None = None,
               image_volumes: Iterable[str] = (), image_env: Iterable[str] = (),
               ca_text: str | None = None) -> ContainerSpec:
    """``image_volumes``: the image's declared VOLUMEs (refused under the GPU hand-off path);
    ``image_env``: its ``ENV`` and ``ca_text`` the admin's CA bundle (policy/environment.py)."""
    refuse_gpu_handoff_volumes(image_volumes, f"the image {image!r}")
    env = user_env(who, device_ids)
    extra_env, files = container_environment(cfg.build, image_env, env, ca_text)
    mounts = [Mount(workspace, "/workspace")]
    mounts += [Mount(m.source, m.target, read_only=True) for m in cfg.containers.data_mounts]
    binding = cfg.gpu.binding
    # The runtime binding hands devices over via NVIDIA_VISIBLE_DEVICES; selecting the nvidia
    # runtime even for CPU-only containers keeps one code path (it honours "void").
    runtime = cfg.gpu.runtime_name if binding == "runtime" else None
    account = Account(name=who.name, uid=who.uid, gid=who.gid, group=who.group, home=f"/home/{who.name}")
    memory = int(limits.memory)
    return ContainerSpec(
        name=container_name(cfg.containers.name_prefix, who.uid, project),
        image=image,
        labels=labels(cfg, who, project, image, device_ids, now, instance),
        account=account,
        env={**env, **extra_env},
        mounts=tuple(mounts),
        # A limit above the host's CPU count means "no CPU limit"; Docker refuses such values.
        cpus=float(min(limits.cpus, host_cpus)) if host_cpus else float(limits.cpus),
        memory=memory,
        shm_size=int(limits.shm_size),
        pids=int(limits.pids),
        cap_drop=CAP_DROP,
        no_new_privileges=NO_NEW_PRIVILEGES,
        init=INIT,
        tmpfs=(home_tmpfs(account, memory),),
        network=user_network(instance, who.uid),
        runtime=runtime,
        gpu_device_ids=tuple(device_ids),
        gpu_binding=binding,
        ports=ports,
        hostname=project.replace("_", "-").replace(".", "-")[:63],
        command=command,
        image_id=image_id,
        files=files,
    )


class RecordLike(Protocol):
    project: str
    docker_name: str
    docker_id: str | None


def resolve_ref(ref: str, records: Iterable[RecordLike]):
    """Find the caller's container named by ``ref``: a project, the Docker name, or an id prefix
    (≥ 6 hex chars). Only the caller's own records are searched, so another user's container is
    indistinguishable from one that does not exist."""
    recs = list(records)
    for r in recs:
        if r.project == ref or r.docker_name == ref:
            return r
    if len(ref) >= 6 and all(c in "0123456789abcdef" for c in ref):
        hits = [r for r in recs if r.docker_id and r.docker_id.startswith(ref)]
        if len(hits) == 1:
            return hits[0]
    raise NotFound(f"you have no container {ref!r}", "'container-list' shows your containers")


def check_ports(ports: list[int] | None, cluster: bool = False) -> list[int]:
    """The container ports to publish on the host's loopback (at most 4). In cluster mode none:
    the container's node is not the head, so a port there is out of reach; ``container-ssh`` with
    ``-L`` forwards to a server in the container instead."""
    out = []
    for p in ports or []:
        if not isinstance(p, int) or isinstance(p, bool) or not 1 <= p <= 65535:
            raise InvalidInput(f"invalid container port {p!r}", "use a port number between 1 and 65535")
        out.append(p)
    if len(out) > 4:
        raise InvalidInput("at most 4 ports can be published per container")
    if out and cluster:
        raise InvalidInput("published ports are not available in cluster mode",
                           "reach a server in the container with 'ssh -L PORT:localhost:PORT <project>.ds01' "
                           "(container-ssh)")
    return out
