"""Cheap per-container measurements for the lifecycle tick, read straight from the kernel.

No ``docker stats`` (one streaming HTTP call per container, ~1 s each) and never ``nvidia-smi``:
the tick reads a handful of small files per container.

* **Where**: a container's cgroup is found once, from ``/proc/<init pid>/cgroup`` (the engine
  reports the pid), joined with the host's cgroup mount points from ``/proc/self/mountinfo``;
  without a pid, the usual cgroupfs/systemd paths are tried. Cached per container id (the path of
  a Docker container does not change when it restarts).
* **CPU**: cgroup v1 ``cpuacct.usage`` (ns), or cgroup v2 ``cpu.stat`` ``usage_usec``. A rate is
  the difference of two readings over the wall time between them.
* **Processes**: ``cgroup.procs`` and each pid's ``/proc/<pid>/comm``; shells, init
  (docker-init/tini), terminal multiplexers and ``sleep infinity`` are not counted.
* **Network** (optional): ``/proc/<pid>/net/dev`` of a process in the container (its network
  namespace), bytes in + out of every interface but ``lo``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger("ds01d")


@dataclass(frozen=True)
class CgroupPaths:
    cpu: str  # directory holding cpuacct.usage (v1) or cpu.stat (v2)
    version: int  # 1 or 2
    procs: str  # the cgroup.procs file to list the container's processes


def cgroup_mounts(mountinfo: str = "/proc/self/mountinfo") -> tuple[dict[str, str], str | None]:
    """(v1 controller -> mount point, v2 mount point) of this host, from mountinfo."""
    v1: dict[str, str] = {}
    v2: str | None = None
    try:
        with open(mountinfo) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return v1, v2
    for line in lines:
        left, _, right = line.partition(" - ")
        parts, rparts = left.split(), right.split()
        if len(parts) < 5 or len(rparts) < 3:
            continue
        mount_point, fstype, opts = parts[4], rparts[0], rparts[2]
        if fstype == "cgroup2":
            if v2 is None:
                v2 = mount_point
        elif fstype == "cgroup":
            for o in opts.split(","):
                if o in ("cpu", "cpuacct", "pids", "memory", "cpuset", "devices", "freezer", "blkio") \
                        or o.startswith("name="):
                    v1.setdefault(o, mount_point)
    return v1, v2


class CgroupReader:
    """Locates and reads containers' cgroups. ``root`` and ``proc`` are relocatable for tests."""

    def __init__(self, proc: str = "/proc", sys_cgroup: str = "/sys/fs/cgroup",
                 mountinfo: str | None = None):
        self.proc = proc
        self.sys_cgroup = sys_cgroup
        self.v1, self.v2 = cgroup_mounts(mountinfo or f"{proc}/self/mountinfo")

    # -- locating ---------------------------------------------------------------------------
    def from_pid(self, pid: int) -> CgroupPaths | None:
        """The cgroup of ``pid`` (the container's init), from ``/proc/<pid>/cgroup``."""
        try:
            with open(f"{self.proc}/{pid}/cgroup") as fh:
                lines = fh.read().splitlines()
        except OSError:
            return None
        v2_rel = None
        for line in lines:
            hid, _, rest = line.partition(":")
            controllers, _, rel = rest.partition(":")
            if rel.strip() in ("", "/"):
                # never a container's: the pid was reused by a host process (or is one), and the
                # root cgroup would make the whole host look like the container's work
                continue
            if hid == "0" and controllers == "":
                v2_rel = rel
                continue
            if "cpuacct" in controllers.split(","):
                mount = self.v1.get("cpuacct")
                if mount:
                    d = _join(mount, rel)
                    if os.path.exists(f"{d}/cpuacct.usage"):
                        return CgroupPaths(cpu=d, version=1, procs=f"{d}/cgroup.procs")
        if v2_rel is not None and self.v2:
            d = _join(self.v2, v2_rel)
            if os.path.exists(f"{d}/cpu.stat"):
                return CgroupPaths(cpu=d, version=2, procs=f"{d}/cgroup.procs")
        return None

    def from_id(self, docker_id: str) -> CgroupPaths | None:
        """Without a pid: the usual places Docker puts a container's cgroup."""
        b = self.sys_cgroup
        for d in (f"{b}/cpuacct/docker/{docker_id}", f"{b}/cpu,cpuacct/docker/{docker_id}",
                  f"{b}/cpuacct/system.slice/docker-{docker_id}.scope",
                  f"{b}/cpu,cpuacct/system.slice/docker-{docker_id}.scope"):
            if os.path.exists(f"{d}/cpuacct.usage"):
                return CgroupPaths(cpu=d, version=1, procs=f"{d}/cgroup.procs")
        for d in (f"{b}/system.slice/docker-{docker_id}.scope", f"{b}/docker/{docker_id}",
                  f"{b}/unified/system.slice/docker-{docker_id}.scope", f"{b}/unified/docker/{docker_id}"):
            if os.path.exists(f"{d}/cpu.stat"):
                return CgroupPaths(cpu=d, version=2, procs=f"{d}/cgroup.procs")
        return None

    # -- reading ----------------------------------------------------------------------------
    @staticmethod
    def cpu_ns(paths: CgroupPaths) -> int | None:
        """Total CPU time used by the container's processes since its cgroup was made, in ns."""
        try:
            if paths.version == 1:
                with open(f"{paths.cpu}/cpuacct.usage", "rb") as fh:
                    return int(fh.read())
            with open(f"{paths.cpu}/cpu.stat", "rb") as fh:
                for line in fh:
                    if line.startswith(b"usage_usec "):
                        return int(line.split()[1]) * 1000
        except (OSError, ValueError):
            return None
        return None

    @staticmethod
    def pids(paths: CgroupPaths) -> list[int] | None:
        try:
            with open(paths.procs, "rb") as fh:
                return [int(x) for x in fh.read().split()]
        except (OSError, ValueError):
            return None

    def busy_processes(self, pids: list[int], ignore: frozenset[str]) -> int:
        """Processes that are neither shells, init, multiplexers nor ``sleep infinity``. Entries
        of ``ignore`` with a '/' match the command's path (e.g. ``/.vscode-server/``)."""
        paths = [p.encode() for p in ignore if "/" in p]
        n = 0
        for pid in pids:
            try:
                with open(f"{self.proc}/{pid}/comm", "rb") as fh:
                    comm = fh.read().rstrip(b"\n").decode("utf-8", "replace")
            except OSError:
                continue  # exited meanwhile
            if comm in ignore:
                continue
            if comm == "sleep" and self._sleeps_forever(pid):
                continue
            if paths and self._path_matches(pid, paths):
                continue
            n += 1
        return n

    def _path_matches(self, pid: int, paths: list[bytes]) -> bool:
        try:
            with open(f"{self.proc}/{pid}/cmdline", "rb") as fh:
                argv0 = fh.read(4096).split(b"\0", 1)[0]
        except OSError:
            return False
        return any(p in argv0 for p in paths)

    def _sleeps_forever(self, pid: int) -> bool:
        try:
            with open(f"{self.proc}/{pid}/cmdline", "rb") as fh:
                args = fh.read().split(b"\0")
        except OSError:
            return False
        return len(args) >= 2 and args[1] in (b"infinity", b"inf")

    def net_bytes(self, pid: int) -> int | None:
        """Bytes received + sent on every interface but ``lo`` of ``pid``'s network namespace."""
        try:
            with open(f"{self.proc}/{pid}/net/dev", "rb") as fh:
                lines = fh.read().splitlines()[2:]
        except OSError:
            return None
        total = 0
        for line in lines:
            name, _, rest = line.partition(b":")
            if name.strip() == b"lo":
                continue
            f = rest.split()
            if len(f) >= 9:
                total += int(f[0]) + int(f[8])
        return total


def _join(mount: str, rel: str) -> str:
    return mount.rstrip("/") + "/" + rel.lstrip("/") if rel not in ("", "/") else mount


def init_pid(runtime: object, docker_id: str) -> int | None:
    """The host pid of a running container's init process, from the engine (one inspect).

    Only the Docker backend can tell; other backends return None and the cgroup is found by id."""
    api = None if getattr(runtime, "remote", False) else getattr(runtime, "api", None)
    if api is None:  # cluster mode: the node's agent measures (services/node.py ``sample``)
        return None
    try:
        pid = int((api.inspect_container(docker_id).get("State") or {}).get("Pid") or 0)
    except Exception:  # the container went away meanwhile: the caller sees no cgroup
        return None
    return pid or None
