"""Run a command in a container and *capture* its output (no terminal, nothing printed).

Same WebSocket protocol as :mod:`ds01.client.stream` (see ``ds01.daemon.exec_stream``): one JSON
request, binary frames whose first byte is the stream (1 stdout, 2 stderr), then a text
``{"type": "exit", "code": N}``. Used by the workflows to ask a container something
(``pip list``, "is JupyterLab installed?") or to start a background process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ds01.client.http import q
from ds01.errors import DaemonUnavailable, RuntimeFailure, from_dict

MAX_OUTPUT = 8 * 1024 * 1024  # bytes kept per stream; more is dropped (a runaway command)


@dataclass
class Captured:
    """Exit code and the two output streams of one command."""

    code: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def err_text(self) -> str:
        return self.stderr.decode("utf-8", errors="replace")


def capture_exec(project: str, cmd: list[str], *, stdin: bytes = b"", start: bool = False,
                 user: str | None = None, timeout: float = 120) -> Captured:
    """Run ``cmd`` in PROJECT's container without a terminal; ``stdin`` is sent then closed.

    Raises the daemon's DS01Error for a refusal (e.g. Conflict when the container is not running
    and ``start`` is false), DaemonUnavailable when the socket is unreachable, and RuntimeFailure
    when the command does not finish within ``timeout`` seconds."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import unix_connect

    from ds01.paths import client_socket_path

    path = str(client_socket_path())
    try:
        ws = unix_connect(path, uri=f"ws://localhost/v1/containers/{q(project)}/exec", max_size=2**22,
                          open_timeout=30, close_timeout=2)
    except (FileNotFoundError, ConnectionRefusedError) as e:
        raise DaemonUnavailable(f"cannot reach the DS01 daemon at {path} ({e})", "ask an admin to start ds01d")
    out, err = bytearray(), bytearray()
    code = 255
    try:
        ws.send(json.dumps({"cmd": cmd, "tty": False, "user": user, "start": start}))
        _expect_started(ws, timeout)
        if stdin:
            ws.send(stdin)
        ws.send(json.dumps({"type": "eof"}))
        while True:
            try:
                msg = ws.recv(timeout=timeout)
            except TimeoutError:
                raise RuntimeFailure(f"'{' '.join(cmd)[:60]}' did not finish within {timeout:.0f} s") from None
            except ConnectionClosed:
                break
            if isinstance(msg, bytes):
                buf = err if msg[:1] == b"\x02" else out
                if len(buf) < MAX_OUTPUT:
                    buf += msg[1:MAX_OUTPUT - len(buf) + 1]
                continue
            ctl = json.loads(msg)
            if ctl.get("type") == "exit":
                code = int(ctl.get("code", 255))
                break
            if ctl.get("type") == "error":
                raise from_dict(ctl["error"])
    finally:
        try:
            ws.close()
        except Exception:
            pass
    return Captured(code, bytes(out), bytes(err))


def _expect_started(ws, timeout: float) -> None:
    try:
        msg = ws.recv(timeout=timeout)
    except TimeoutError:
        raise RuntimeFailure("the daemon did not start the command in time") from None
    ctl = json.loads(msg) if isinstance(msg, str) else {}
    if ctl.get("type") == "error":
        raise from_dict(ctl["error"])
