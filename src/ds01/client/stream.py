"""The exec WebSocket, client side (protocol: ds01.daemon.routes.exec).

``run_exec`` gives ``container-run`` / ``container-attach`` a terminal (or plain pipes);
``capture_exec`` (ds01.client.capture) runs a command and keeps its output. Both use
:func:`open_exec` and :func:`messages` below.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import threading
TYPE_CHECKING = False  # (not typing's: its import costs every CLI start)
if TYPE_CHECKING:
    from typing import Any, Iterator

from ds01.client.api import exec_path
from ds01.errors import DaemonUnavailable, RuntimeFailure, from_dict

EXIT = 0  # the "stream" number messages() uses for the exit code


def open_exec(project: str, request: dict[str, Any], timeout: float | None = 30):
    """Connect, send the exec request and wait until the daemon says the process runs.
    Raises the daemon's refusal as its DS01Error class."""
    from ds01.client.http import socket_path_from_env
    from ds01.client.ws import HandshakeFailed, unix_connect

    path = socket_path_from_env()
    try:
        ws = unix_connect(path, uri="ws://localhost" + exec_path(project), max_size=2**22,
                          open_timeout=30, close_timeout=2)
    except (FileNotFoundError, ConnectionRefusedError) as e:
        raise DaemonUnavailable(f"cannot reach the DS01 daemon at {path} ({e})", "ask an admin to start ds01d")
    except HandshakeFailed as e:
        raise DaemonUnavailable(f"the DS01 daemon at {path} did not open the stream ({e})",
                                "ask an admin to check ds01d") from None
    try:
        ws.send(json.dumps(request))
        try:
            msg = ws.recv(timeout=timeout)
        except TimeoutError:
            raise RuntimeFailure("the daemon did not start the command in time") from None
        ctl = json.loads(msg) if isinstance(msg, str) else {}
        if ctl.get("type") == "error":
            raise from_dict(ctl["error"])
    except BaseException:
        ws.close()
        raise
    return ws


def messages(ws, timeout: float | None = None) -> Iterator[tuple[int, Any]]:
    """``(1, bytes)`` stdout, ``(2, bytes)`` stderr, then ``(EXIT, code)``. A refusal raises; a
    connection that closes without an exit code yields ``(EXIT, 255)``. ``TimeoutError`` when no
    message comes within ``timeout``."""
    from ds01.client.ws import ConnectionClosed

    while True:
        try:
            msg = ws.recv(timeout=timeout)
        except ConnectionClosed:
            yield EXIT, 255
            return
        if isinstance(msg, bytes):
            yield (2 if msg[:1] == b"\x02" else 1), msg[1:]
            continue
        ctl = json.loads(msg)
        if ctl.get("type") == "exit":
            yield EXIT, int(ctl.get("code", 255))
            return
        if ctl.get("type") == "error":
            raise from_dict(ctl["error"])


def _term_size() -> os.terminal_size:
    """The real terminal's size (COLUMNS/LINES from the environment may be stale)."""
    try:
        return os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        import shutil

        return shutil.get_terminal_size()


# Signals this client passes on to the remote process (its process group), by name
FORWARDED = {signal.SIGINT: "INT", signal.SIGTERM: "TERM", signal.SIGHUP: "HUP"}


def forward_signals(wake_w: int) -> dict:
    """Catch SIGINT/SIGTERM/SIGHUP: each only writes its number to the wake pipe, for the sender
    thread to pass on (a handler must not use the WebSocket: the main thread may be inside it).
    A signal this process ignores (SIGHUP under nohup) stays ignored. Returns the old handlers."""
    old = {}
    for sig in FORWARDED:
        if signal.getsignal(sig) == signal.SIG_IGN:
            continue
        old[sig] = signal.signal(sig, lambda n, _f: os.write(wake_w, bytes([n])))
    return old


def run_exec(project: str, cmd: list[str] | None, *, start: bool, user: str | None = None) -> int:
    """Attach this process's stdin/stdout/stderr (raw terminal when both are TTYs) to a process in
    the container; returns its exit code.

    SIGINT, SIGTERM and SIGHUP sent to this client go to the remote process's group (so Ctrl-C on
    ``container-run P -- CMD | cat`` ends CMD, exit 130; SIGTERM to a terminal session hangs it
    up); the second one sends SIGKILL."""
    from ds01.client.ws import ConnectionClosed

    tty = sys.stdin.isatty() and sys.stdout.isatty()
    size = _term_size() if tty else os.terminal_size((80, 24))  # only a terminal has a size that matters
    ws = open_exec(project, {"cmd": cmd, "tty": tty, "rows": size.lines, "cols": size.columns,
                             "term": os.environ.get("TERM", "xterm"), "user": user, "start": start}, timeout=None)
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
    old_handlers = forward_signals(wake_w)
    sent: list[str] = []

    def sender() -> None:
        fds = [sys.stdin.fileno(), wake_r]
        try:
            while not stop.is_set():
                r, _, _ = select.select(fds, [], [], 0.5)
                if wake_r in r:
                    for b in os.read(wake_r, 64):
                        if b == ord("w"):
                            s = _term_size()
                            ws.send(json.dumps({"type": "resize", "rows": s.lines, "cols": s.columns}))
                        elif b in FORWARDED:
                            # an interactive shell ignores SIGTERM; it ends on a hang-up, as when
                            # its terminal window is closed
                            name = "HUP" if tty and b == signal.SIGTERM else FORWARDED[b]
                            sent.append("KILL" if sent else name)  # a second one insists
                            ws.send(json.dumps({"type": "signal", "signal": sent[-1]}))
                if fds[0] in r:
                    data = os.read(fds[0], 65536)
                    if not data:
                        ws.send(json.dumps({"type": "eof"}))
                        fds = [wake_r]  # still pass on signals and resizes
                        continue
                    ws.send(data)
        except (ConnectionClosed, OSError):
            return

    threading.Thread(target=sender, daemon=True).start()
    code = 255
    sinks = {1: sys.stdout.buffer, 2: sys.stderr.buffer}
    try:
        for stream, payload in messages(ws):
            if stream == EXIT:
                code = payload
                break
            try:
                sinks[stream].write(payload)
                sinks[stream].flush()
            except BrokenPipeError:  # the reader of our output is gone ("| head"): as SIGPIPE would
                code = 128 + signal.SIGPIPE
                os.dup2(os.open(os.devnull, os.O_WRONLY), sinks[stream].fileno())  # no flush error at exit
                break
    finally:
        stop.set()
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        if old_attrs is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, old_attrs)
        try:
            ws.close()
        except Exception:
            pass
    return code
