"""Interactive exec: a process started in a user's container as that user (``container-run``,
``container-attach``, ``container-ssh``). Entered through ``ContainerService.exec``.

The daemon decides everything about the process but its command and terminal: the caller's
uid:gid, ``/workspace`` as working directory, the user's environment (HOME, USER, the container's
GPUs) from policy. The returned :class:`ExecSession` is what a transport (the daemon's WebSocket)
needs: output frames, the stdin socket, resize, exit code.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

from ds01.policy.containers import user_env
from ds01.runtime.base import ExecHandle, RuntimeBackend
from ds01.services.context import Context
from ds01.services.identity import Caller
from ds01.state.db import ContainerRecord

# the user's login shell where the image has bash, else sh
DEFAULT_SHELL = ["/bin/sh", "-c", 'if command -v bash >/dev/null; then exec bash -l; else exec sh -l; fi']


class ExecSession:
    """A started exec. ``frames()`` blocks (run it in a thread); ``sock`` is non-blocking, for an
    event loop to write stdin to."""

    def __init__(self, runtime: RuntimeBackend, handle: ExecHandle, project: str):
        self.runtime = runtime
        self.handle = handle
        self.project = project
        self.sock: socket.socket = handle.sock  # type: ignore[assignment]
        self.sock.setblocking(False)

    @property
    def tty(self) -> bool:
        return self.handle.tty

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """``(stream, data)``: 1 stdout, 2 stderr; ends when the process's output does."""
        return self.runtime.exec_frames(self.handle)

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
        """The exit code, waiting up to ~1 s for the engine to record it after the stream ended."""
        for _ in range(50):
            code = self.runtime.exec_exit_code(self.handle.id)
            if code is not None:
                return code
            time.sleep(0.02)
        return None

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
    handle = ctx.runtime.exec_start(rec.docker_id, cmd, user=f"{who.uid}:{who.gid}", env=env,
                                    workdir="/workspace", tty=tty)
    ctx.events.emit("container.exec", user=who.name, uid=who.uid, target=rec.project,
                    data={"cmd": cmd[:8], "tty": tty})
    return ExecSession(ctx.runtime, handle, rec.project)
