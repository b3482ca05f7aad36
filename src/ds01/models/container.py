"""What the daemon decided a container gets: pure data, built by ``policy.containers.build_spec``
and applied as is by a runtime backend (``runtime/``), which adds no option of its own."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class Tmpfs:
    """A private in-memory filesystem; it counts against the container's memory limit."""

    target: str
    size: int  # bytes
    uid: int = 0
    gid: int = 0
    mode: int = 0o700
    exec: bool = True


@dataclass(frozen=True)
class Account:
    """The passwd/group entry injected into the container so ``whoami`` and ``$HOME`` work."""

    name: str
    uid: int
    gid: int
    group: str
    home: str
    shell: str = "/bin/sh"


@dataclass(frozen=True)
class ContainerSpec:
    """Everything the daemon decided about a container. Nothing here comes from the user verbatim
    except the image reference (checked against policy) and the command. The security fields
    have no defaults on purpose: whoever builds a spec decides them."""

    name: str
    image: str
    labels: dict[str, str]
    account: Account
    env: dict[str, str]
    mounts: tuple[Mount, ...]
    cpus: float
    memory: int
    shm_size: int
    pids: int
    cap_drop: tuple[str, ...]
    no_new_privileges: bool
    init: bool  # an init as PID 1: reaps zombies and forwards SIGTERM, so a stop is graceful
    tmpfs: tuple[Tmpfs, ...]
    # The user's own Docker network (``policy.isolation.user_network``): the backend creates it
    # when missing and attaches nothing else; ``hostname`` is the container's name on it too.
    network: str
    workdir: str = "/workspace"
    command: tuple[str, ...] | None = None
    runtime: str | None = None
    gpu_device_ids: tuple[str, ...] = ()
    gpu_binding: str = "runtime"
    ports: tuple[tuple[int, str, int], ...] = ()  # (container port, host ip, host port)
    hostname: str | None = None
    # The local image ``image`` named when the daemon checked it (saves the backend a lookup);
    # None = let the backend resolve ``image`` itself.
    image_id: str | None = None
    # (path in the container, text): small root-owned files bound read-only (the login shell's
    # environment, the admin's CA bundle: policy/environment.py)
    files: tuple[tuple[str, str], ...] = ()


def spec_to_dict(spec: ContainerSpec) -> dict:
    """A spec as JSON-able data (the head sends it to a node agent in cluster mode)."""
    import dataclasses

    return dataclasses.asdict(spec)


def spec_from_dict(d: dict) -> ContainerSpec:
    """The inverse of :func:`spec_to_dict`; TypeError/KeyError on a malformed body."""
    d = dict(d)
    d["account"] = Account(**d["account"])
    d["mounts"] = tuple(Mount(**m) for m in d["mounts"])
    d["tmpfs"] = tuple(Tmpfs(**t) for t in d["tmpfs"])
    for k in ("cap_drop", "gpu_device_ids"):
        d[k] = tuple(d.get(k) or ())
    d["command"] = tuple(d["command"]) if d.get("command") is not None else None
    d["ports"] = tuple(tuple(p) for p in d.get("ports") or ())
    d["files"] = tuple(tuple(f) for f in d.get("files") or ())
    return ContainerSpec(**d)
