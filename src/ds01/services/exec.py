"""Interactive exec: a process started in a user's container as that user (``container-run``,
``container-attach``, ``container-ssh``). Entered through ``ContainerService.exec``.

The daemon decides everything about the process but its command and terminal: the caller's
uid:gid, ``/workspace`` as working directory, the user's environment (HOME, USER, the container's
GPUs) from policy. The returned :class:`ExecSession` is what a transport (the daemon's WebSocket)
needs: output frames, the stdin socket, resize, signals, exit code.

Signals: the engine has no "signal an exec" call, but the exec's process leads its own process
group, with a host pid the engine reports. ``signal`` sends to that group from the daemon (root,
on the host), after checking the pid still belongs to this container's cgroup (pids are reused).
A command that cannot start (not on PATH, not executable) is reported the way a shell does
(``foo: command not found``, 127), not with the runtime's own message.
"""

from __future__ import annotations

import os
import re
import select
import signal as _signal
import socket
import time
from collections.abc import Iterator

from ds01.errors import DS01Error, EngineUnavailable, RuntimeFailure
from ds01.policy.containers import user_env
from ds01.runtime.base import ExecHandle, RuntimeBackend
from ds01.services.context import Context
from ds01.services.identity import Caller
from ds01.state.db import ContainerRecord

# the user's login shell where the image has bash, else sh
DEFAULT_SHELL = ["/bin/sh", "-c", 'if command -v bash >/dev/null; then exec bash -l; else exec sh -l; fi']

# what a client may ask to send (container-run forwards the signals it gets)
SIGNALS = {"INT": _signal.SIGINT, "TERM": _signal.SIGTERM, "HUP": _signal.SIGHUP, "QUIT": _signal.SIGQUIT,
           "KILL": _signal.SIGKILL}

# the runtime's own message when the process could not be started at all (it then never ran)
_START_FAILED = re.compile(rb'^OCI runtime exec failed: .*?exec: "(?P<cmd>[^"]*)": (?P<why>[^:\r\n]*)')


def start_failure(data: bytes) -> tuple[bytes, int] | None:
    """(what a shell would print, its exit code) for the runtime's "exec failed" message, or None
    when ``data`` is not one."""
    m = _START_FAILED.match(data)
    if m is None:
        return None
    cmd, why = m.group("cmd").decode("utf-8", "replace"), m.group("why").decode("utf-8", "replace")
    if "not found" in why:
        return f"{cmd}: command not found\n".encode(), 127
    if "no such file" in why:
        return f"{cmd}: no such file or directory\n".encode(), 127
    if "permission denied" in why:
        return f"{cmd}: permission denied (not an executable)\n".encode(), 126
    return f"{cmd}: cannot run it: {why}\n".encode(), 126


def _in_container(pid: int | str, container_id: str, proc: str) -> bool:
    try:
        with open(f"{proc}/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
            return container_id in f.read()
    except OSError:
        return False


def group_members(pgid: int, container_id: str, proc: str = "/proc") -> list[int]:
    """The processes of group ``pgid`` inside the container (its leader may have exited)."""
    out = []
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            state, pgrp = fields[0], int(fields[2])
        except (OSError, ValueError, IndexError):
            continue
        if pgrp == pgid and state != b"Z" and _in_container(name, container_id, proc):
            out.append(int(name))
    return out


def signal_group(pid: int, container_id: str, sig: int, proc: str = "/proc") -> bool:
    """Send ``sig`` to the process group ``pid`` leads, if ``pid`` is still a process of the
    container ``container_id`` (its cgroup path names the container: pids are reused); once the
    leader has exited, to the group's members still in the container. False when none is left."""
    if pid <= 1 or not container_id:
        return False
    try:
        if _in_container(pid, container_id, proc):
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:  # not a group leader (another engine): the process alone
                os.kill(pid, sig)
            return True
    except (OSError, ValueError):  # exited meanwhile
        pass
    members = group_members(pid, container_id, proc)
    for m in members:
        try:
            os.kill(m, sig)
        except OSError:
            pass
    return bool(members)


class ExecSession:
    """A started exec. ``frames()`` blocks (run it in a thread); ``sock`` is non-blocking, for an
    event loop to write stdin to."""

    def __init__(self, runtime: RuntimeBackend, handle: ExecHandle, project: str, container_id: str = ""):
        self.runtime = runtime
        self.handle = handle
        self.project = project
        self.container_id = container_id
        self.sock: socket.socket = handle.sock  # type: ignore[assignment]
        self.sock.setblocking(False)
        self._exit_override: int | None = None
        self._pid: int | None = None

    @property
    def tty(self) -> bool:
        return self.handle.tty

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """``(stream, data)``: 1 stdout, 2 stderr; ends when the process's output does. A start
        failure comes out as a shell would say it, on stderr."""
        frames = iter(self.runtime.exec_frames(self.handle))
        for stream, data in frames:
            failed = start_failure(data) if data.startswith(b"OCI runtime exec failed") else None
            if failed is not None and self.runtime.exec_pid(self.handle.id) is None:
                self._exit_override = failed[1]
                yield 2, failed[0]
            else:
                yield stream, data
            break
        yield from frames

    def pid(self) -> int | None:
        """The process's host pid while it runs (asked once: it does not change)."""
        if self._pid is None:
            self._pid = self.runtime.exec_pid(self.handle.id)
        return self._pid

    def signal(self, name: str) -> bool:
        """Send the signal ``name`` (a key of SIGNALS) to the process's group; False when it is
        not running (any more) or the name is not one of SIGNALS."""
        sig = SIGNALS.get(name)
        if sig is not None and getattr(self.runtime, "remote", False):  # cluster mode: on its node
            return self.runtime.exec_signal(self.handle.id, self.container_id, sig)  # type: ignore[attr-defined]
        pid = self.pid()
        return sig is not None and pid is not None and signal_group(pid, self.container_id, sig)

    def kill(self, grace: float = 2.0) -> None:
        """The client went away: hang up on the process group (as a closed terminal would), then
        SIGKILL what is left of the group after ``grace`` seconds. Blocking."""
        if not self.signal("HUP"):
            return
        if getattr(self.runtime, "remote", False):  # the node's pids are not ours to watch
            time.sleep(grace)
            self.signal("KILL")
            return
        pid = self._pid or 0
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)  # does the group still exist?
            except OSError:
                return
            time.sleep(0.1)
        self.signal("KILL")

    def readable(self) -> bool:
        """Whether more output is already waiting (a reader batches it instead of handing each
        frame over alone)."""
        try:
            return bool(select.select([self.sock], [], [], 0)[0])
        except (OSError, ValueError):  # closed meanwhile
            return False

    def resize(self, rows: int, cols: int) -> bool:
        return self.runtime.exec_resize(self.handle.id, rows, cols)

    def fit(self, rows: int, cols: int) -> bool:
        """The first resize. The engine refuses one until the process has its terminal; retry
        briefly (as the docker CLI does) so the first screen already has the right size."""
        for attempt in range(10):
            if self.resize(rows, cols):
                return True
            time.sleep(0.01 * (attempt + 1))
        return False

    def wait_exit(self) -> int | None:
        """The exit code, waiting up to ~1 s for the engine to record it after the stream ended
        (asked again soon at first: it is usually there at once or within milliseconds)."""
        deadline = time.monotonic() + 1.0
        pause = 0.002
        while True:
            code = self.runtime.exec_exit_code(self.handle.id)
            if code is not None:
                return self._exit_override if self._exit_override is not None else code
            if time.monotonic() >= deadline:
                return None
            time.sleep(pause)
            pause = min(pause * 2, 0.02)

    def exit_lost(self) -> DS01Error:
        """Why the engine has no exit code for a process whose output ended: it does not answer
        (stopped, restarting), or it forgot the exec (restarted) or the container stopped."""
        try:
            info = self.runtime.inspect(self.container_id) if self.container_id else None
        except DS01Error as e:
            if isinstance(e, EngineUnavailable):
                return EngineUnavailable("the container engine stopped answering while the command ran; "
                                         "its exit status is unknown", e.hint)
            return e
        if info is None or info.status != "running":
            return RuntimeFailure("the container stopped while the command ran (did the container engine "
                                  "restart?); its exit status is unknown",
                                  f"see 'container-list' and 'events'; start it again with "
                                  f"'container-start {self.project}'")
        return RuntimeFailure("the container engine lost track of the command (it may have restarted); "
                              "its exit status is unknown", "run the command again")

    def end_input(self) -> None:
        """EOF on the process's stdin."""
        self._shutdown(socket.SHUT_WR)

    def hang_up(self) -> None:
        """Cut both directions: the engine sees the hang-up, a blocked ``frames()`` ends."""
        self._shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _shutdown(self, how: int) -> None:
        try:
            self.sock.shutdown(how)
        except OSError:
            pass


def open_exec(ctx: Context, who: Caller, rec: ContainerRecord, cmd: list[str] | None, *, tty: bool,
              term: str) -> ExecSession:
    """Start ``cmd`` (None: the login shell) in ``rec``'s running container as ``who``."""
    cmd = cmd or DEFAULT_SHELL
    env = {**user_env(who, rec.gpus), "TERM": term}
    if rec.node:  # cluster mode: the container's own GPU variables (the node's indices) stand
        env = {k: v for k, v in env.items() if k not in ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")}
    handle = ctx.runtime.exec_start(rec.docker_id, cmd, user=f"{who.uid}:{who.gid}", env=env,
                                    workdir="/workspace", tty=tty)
    ctx.events.emit("container.exec", user=who.name, uid=who.uid, target=rec.project,
                    data={"cmd": cmd[:8], "tty": tty})
    return ExecSession(ctx.runtime, handle, rec.project, rec.docker_id or "")
