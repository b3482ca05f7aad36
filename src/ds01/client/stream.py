"""``container-run`` / ``container-attach``: a terminal (or plain pipes) to a process in the
container, over the daemon's exec WebSocket (see ds01.daemon.exec_stream for the protocol)."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import sys
import threading

from ds01.errors import DaemonUnavailable, from_dict
from ds01.client.http import q


def _term_size() -> os.terminal_size:
    """The real terminal's size (COLUMNS/LINES from the environment may be stale)."""
    try:
        return os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return shutil.get_terminal_size()


def run_exec(project: str, cmd: list[str] | None, *, start: bool, user: str | None = None) -> int:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import unix_connect

    from ds01.paths import client_socket_path

    tty = sys.stdin.isatty() and sys.stdout.isatty()
    size = _term_size()
    path = str(client_socket_path())
    try:
        ws = unix_connect(path, uri=f"ws://localhost/v1/containers/{q(project)}/exec", max_size=2**22,
                          open_timeout=30, close_timeout=2)
    except (FileNotFoundError, ConnectionRefusedError) as e:
        raise DaemonUnavailable(f"cannot reach the DS01 daemon at {path} ({e})", "ask an admin to start ds01d")
    ws.send(json.dumps({"cmd": cmd, "tty": tty, "rows": size.lines, "cols": size.columns,
                        "term": os.environ.get("TERM", "xterm"), "user": user, "start": start}))
    # wait for started / error
    msg = ws.recv()
    ctl = json.loads(msg) if isinstance(msg, str) else {}
    if ctl.get("type") == "error":
        ws.close()
        raise from_dict(ctl["error"])

    stop = threading.Event()
    wake_r, wake_w = os.pipe()
    old_attrs = None
    if tty:
        import termios
        import tty as ttymod

        old_attrs = termios.tcgetattr(sys.stdin.fileno())
        ttymod.setraw(sys.stdin.fileno())
        # SIGWINCH only pokes a pipe; the sender thread does the resize message.
        signal.signal(signal.SIGWINCH, lambda *_: os.write(wake_w, b"w"))

    def sender() -> None:
        fd = sys.stdin.fileno()
        try:
            while not stop.is_set():
                r, _, _ = select.select([fd, wake_r], [], [], 0.5)
                if wake_r in r:
                    os.read(wake_r, 64)
                    s = _term_size()
                    ws.send(json.dumps({"type": "resize", "rows": s.lines, "cols": s.columns}))
                if fd in r:
                    data = os.read(fd, 65536)
                    if not data:
                        ws.send(json.dumps({"type": "eof"}))
                        return
                    ws.send(data)
        except (ConnectionClosed, OSError):
            return

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    code = 255
    out, err = sys.stdout.buffer, sys.stderr.buffer
    try:
        while True:
            try:
                msg = ws.recv()
            except ConnectionClosed:
                break
            if isinstance(msg, bytes):
                target = err if msg[:1] == b"\x02" else out
                target.write(msg[1:])
                target.flush()
            else:
                ctl = json.loads(msg)
                if ctl.get("type") == "exit":
                    code = int(ctl.get("code", 255))
                    break
                if ctl.get("type") == "error":
                    raise from_dict(ctl["error"])
    finally:
        stop.set()
        if old_attrs is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, old_attrs)
        try:
            ws.close()
        except Exception:
            pass
    return code
