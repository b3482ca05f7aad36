"""``container-ssh``'s byte pipe: this process's stdin/stdout joined to the container's
``sshd -i`` through the exec WebSocket (protocol: ds01.daemon.routes.exec, ``ssh: true``).

Binary-safe and without a terminal: OpenSSH's ``ProxyCommand`` speaks the SSH protocol over our
stdin/stdout; sshd's stderr (its errors) goes to ours, which ssh shows the user.
"""

from __future__ import annotations

import json
import os
import threading

from ds01.client.stream import EXIT, messages, open_exec

CHUNK = 65536


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def bridge(project: str, *, start: bool, out_fd: int, in_fd: int = 0, err_fd: int = 2) -> int:
    """Run the project's container sshd with ``in_fd``/``out_fd`` as its connection; returns its
    exit code (255 when the stream broke). The daemon's refusal is raised as its DS01Error (with
    ``start``, "not running" comes back as a Conflict with ``details.start``)."""
    from ds01.client.ws import ConnectionClosed

    ws = open_exec(project, {"ssh": True, "start": start}, timeout=60)

    def sender() -> None:
        try:
            while True:
                data = os.read(in_fd, CHUNK)
                if not data:
                    ws.send(json.dumps({"type": "eof"}))
                    return
                ws.send(data)
        except (ConnectionClosed, OSError):
            return

    threading.Thread(target=sender, name="ds01-ssh-in", daemon=True).start()
    code = 255
    try:
        for stream, payload in messages(ws):
            if stream == EXIT:
                code = payload
                break
            _write_all(out_fd if stream == 1 else err_fd, payload)
    except OSError:  # ssh closed our stdout: the connection is over
        pass
    finally:
        try:
            ws.close()
        except Exception:
            pass
    return code
