"""Every use of docker-py / requests / urllib3 internals, in one place.

The Docker backend needs four things the SDK has no public API for: the raw socket of a hijacked
exec stream, the demultiplexed frames on it, a build whose response this code owns (to cut it at
its deadline), and the socket under a streaming response. Each is one function here, pinned by
``tests/unit/test_docker_compat.py``, so an SDK upgrade that moves an internal breaks one tested
module, not the backend. Frames are decoded by docker-py's own ``docker.utils.socket`` readers.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from typing import Any

from docker.utils import socket as dsock

STDOUT = dsock.STDOUT
STDERR = dsock.STDERR
TTY_READ = 65536  # a terminal's output has no frames: read what is there, up to this much


def raw_socket(attached: Any) -> socket.socket:
    """The socket under ``APIClient.exec_start(..., socket=True)``: over the Unix socket that is
    the response's ``socket.SocketIO``, whose ``_sock`` is the connection itself."""
    return getattr(attached, "_sock", attached)


class _Waiting:
    """A view of a socket for docker-py's readers, which expect a blocking one: the exec socket is
    non-blocking (the event loop writes stdin to it), so a read that finds nothing waits for data
    instead of returning nothing (which docker-py would take for the end of the stream)."""

    def __init__(self, sock: socket.socket):
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv(self, n: int) -> bytes:
        while True:
            try:
                return self._sock.recv(n)
            except (BlockingIOError, InterruptedError):
                p = select.poll()
                p.register(self._sock, select.POLLIN | select.POLLPRI)
                p.poll()


def exec_frames(sock: socket.socket, tty: bool) -> Iterator[tuple[int, bytes]]:
    """The output of an exec as ``(stream, data)``: stream 1 stdout, 2 stderr. With a tty the
    engine sends the terminal's bytes as they are (all stdout); without, its 8-byte-header frames,
    decoded by docker-py (stream 0, stdin echoed, counts as stdout). Blocking; ends at end of
    stream, including after ``sock.shutdown`` from another thread."""
    src = _Waiting(sock)
    if tty:
        while data := dsock.read(src, TTY_READ):
            yield STDOUT, data
        return
    for stream, data in dsock.frames_iter(src, tty=False):
        yield (STDOUT if stream in (0, STDOUT) else STDERR), data


def api_url(api: Any, path: str) -> str:
    """The engine URL of ``path`` at the client's API version (``APIClient._url``)."""
    return api._url(path)


def json_stream(api: Any, resp: Any) -> Iterator[dict]:
    """The JSON messages of a streaming engine response, as docker-py decodes them
    (``APIClient._stream_helper``: one object per message, split across chunks or not)."""
    return api._stream_helper(resp, decode=True)


def response_socket(resp: Any) -> socket.socket:
    """The socket under a streaming ``requests`` response (requests → urllib3 → http.client →
    ``socket.SocketIO``)."""
    return resp.raw._fp.fp.raw._sock


def cut(resp: Any) -> None:
    """Shut down the socket under a streaming response so a blocked read returns at once
    (closing the file object alone does not wake a reader in another thread)."""
    try:
        response_socket(resp).shutdown(socket.SHUT_RDWR)
    except Exception:
        try:
            resp.close()
        except Exception:
            pass
