"""Run a command in a container and *capture* its output (no terminal, nothing printed).

Same WebSocket protocol as :mod:`ds01.client.stream` (see ``ds01.daemon.routes.exec``): one JSON
request, binary frames whose first byte is the stream (1 stdout, 2 stderr), then a text
``{"type": "exit", "code": N}``. Used by the workflows to ask a container something
(``pip list``, "is JupyterLab installed?") or to start a background process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ds01.client.stream import EXIT, messages, open_exec
from ds01.errors import RuntimeFailure

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
    ws = open_exec(project, {"cmd": cmd, "tty": False, "user": user, "start": start}, timeout=timeout)
    out, err = bytearray(), bytearray()
    code = 255
    try:
        if stdin:
            ws.send(stdin)
        ws.send(json.dumps({"type": "eof"}))
        try:
            for stream, payload in messages(ws, timeout=timeout):
                if stream == EXIT:
                    code = payload
                    break
                buf = err if stream == 2 else out
                if len(buf) < MAX_OUTPUT:
                    buf += payload[:MAX_OUTPUT - len(buf)]
        except TimeoutError:
            raise RuntimeFailure(f"'{' '.join(cmd)[:60]}' did not finish within {timeout:.0f} s") from None
    finally:
        try:
            ws.close()
        except Exception:
            pass
    return Captured(code, bytes(out), bytes(err))
