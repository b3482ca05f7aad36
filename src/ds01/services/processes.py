"""The work running in a container: its processes other than shells, so ``container-stop`` and
``container-retire`` can say what they would kill before they kill it.

Read from the kernel like the lifecycle's sampling (``services/sampling.py``): the container's
cgroup lists its pids; ``/proc/<pid>`` gives name, command line, start time and the pid the user
sees inside the container. Not counted (as for idle detection): the names in
``lifecycle.ignore_processes`` (shells, init, multiplexers) and ``sleep infinity``.
"""

from __future__ import annotations

import os
from typing import Any

from ds01.errors import Conflict
from ds01.services.sampling import CgroupReader, init_pid
from ds01.units import format_duration

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def describe(pid: int, proc: str = "/proc", uptime: float | None = None) -> dict[str, Any] | None:
    """``{pid, host_pid, name, command, seconds}`` of one process; None when it has exited."""
    comm, cmdline, stat, status = (_read(f"{proc}/{pid}/{f}") for f in ("comm", "cmdline", "stat", "status"))
    if comm is None or stat is None:
        return None
    inner = pid
    for line in (status or b"").splitlines():
        if line.startswith(b"NSpid:"):
            inner = int(line.split()[-1])  # the innermost namespace: the container's
    seconds = None
    try:
        start_ticks = int(stat.rsplit(b")", 1)[1].split()[19])  # field 22: starttime
        if uptime is None:
            uptime = float((_read(f"{proc}/uptime") or b"0").split()[0])
        seconds = max(0.0, uptime - start_ticks / _CLK_TCK)
    except (IndexError, ValueError):
        pass
    args = [a.decode("utf-8", "replace") for a in (cmdline or b"").split(b"\0") if a]
    name = comm.rstrip(b"\n").decode("utf-8", "replace")
    return {"pid": inner, "host_pid": pid, "name": name, "command": " ".join(args)[:200] or f"[{name}]",
            "seconds": seconds}


def is_work(p: dict[str, Any], ignore: frozenset[str]) -> bool:
    """Whether a process counts as work: not a shell/init/multiplexer, not ``sleep infinity``;
    an ``ignore`` entry with a '/' matches the command's path (the VS Code server)."""
    if p["name"] in ignore or p["pid"] == 1:
        return False
    argv0 = p["command"].split(" ", 1)[0]
    if any("/" in i and i in argv0 for i in ignore):
        return False
    return not (p["name"] == "sleep" and p["command"].split()[1:2] in (["infinity"], ["inf"]))


def work_processes(runtime: Any, docker_id: str | None, ignore: frozenset[str],
                   reader: CgroupReader | None = None) -> list[dict[str, Any]]:
    """The processes doing work in a running container, oldest first; [] when it is not running."""
    pid = init_pid(runtime, docker_id) if docker_id else None
    if not pid:
        return []
    reader = reader or CgroupReader()
    paths = reader.from_pid(pid) or reader.from_id(str(docker_id))
    pids = reader.pids(paths) if paths else None
    out = []
    for p in pids or []:
        d = describe(p, reader.proc)
        if d is not None and p != pid and is_work(d, ignore):
            out.append(d)
    return sorted(out, key=lambda d: -(d["seconds"] or 0))


def listing(procs: list[dict[str, Any]], limit: int = 10) -> str:
    """The processes as an indented table (pid inside the container, running for, command)."""
    lines = [f"  {'PID':>7}  {'RUNNING':>9}  COMMAND"]
    for p in procs[:limit]:
        ran = format_duration(p["seconds"]) if p.get("seconds") is not None else "?"
        lines.append(f"  {p['pid']:>7}  {ran:>9}  {p['command'][:100]}")
    if len(procs) > limit:
        lines.append(f"  … and {len(procs) - limit} more")
    return "\n".join(lines)


def refuse_if_working(containers: Any, who: Any, ref: str, verb: str) -> None:
    """Raise Conflict (``details.processes``) when ``who``'s container ``ref`` runs work;
    ``verb`` (``container-stop``/``container-retire``) names the command for the hint."""
    rec = containers.resolve(who, ref)
    ignore = frozenset(containers.cfg.lifecycle.ignore_processes)
    procs = work_processes(containers.ctx.runtime, rec.docker_id, ignore)
    if not procs:
        return
    n = len(procs)
    raise Conflict(f"{n} process{'es are' if n > 1 else ' is'} still running in the container of "
                   f"{rec.project!r} (they would be killed):\n{listing(procs)}",
                   f"'{verb} {rec.project} --yes' kills them anyway; or let them finish first",
                   details={"processes": procs, "project": rec.project})
