"""A minimal WebSocket client (RFC 6455) over the daemon's Unix socket, stdlib only.

``container-run P -- CMD`` pays for its client's import on every call: the ``websockets``
package costs ~40 ms of it (ssl, email, importlib.metadata), more than the rest of the CLI. Our
peer is always the daemon (aiohttp, no compression, no fragmentation of its own), so this speaks
just what is needed: the handshake, masked frames out, text/binary/ping/close in. The interface
is the part of ``websockets.sync`` the exec client used: ``send``, ``recv(timeout)``, ``close``.

Threads: one thread receives; any may send (sends are serialised).
"""

from __future__ import annotations

import base64
import os
import select
import socket
import struct
import threading

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class ConnectionClosed(Exception):
    """The WebSocket is closed (by either side, or the connection broke)."""


class HandshakeFailed(ConnectionError):
    """The daemon did not upgrade the connection to a WebSocket."""


def _accept_of(key: bytes) -> bytes:
    try:
        from _sha1 import sha1  # the builtin: no OpenSSL load
    except ImportError:  # pragma: no cover
        from hashlib import sha1
    return base64.b64encode(sha1(key + _GUID).digest())


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


class WebSocket:
    def __init__(self, sock: socket.socket, buffered: bytes = b"", max_size: int = 2**22,
                 close_timeout: float = 2):
        self.sock = sock
        self._buf = bytearray(buffered)
        self._lock = threading.Lock()
        self._max = max_size
        self._close_timeout = close_timeout
        self._sent_close = False
        self._got_close = False
        self._parts: list[bytes] = []
        self._part_op = 0

    # -- sending ----------------------------------------------------------------------------
    def _frame(self, op: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | op, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | op, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | op, 0x80 | 127, n)
        key = os.urandom(4)
        with self._lock:
            if self._sent_close and op != 0x8:
                raise ConnectionClosed("the WebSocket is closed")
            try:
                self.sock.sendall(head + key + _mask(payload, key))
            except OSError as e:
                raise ConnectionClosed(str(e)) from None

    def send(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self._frame(0x1, message.encode("utf-8"))
        else:
            self._frame(0x2, bytes(message))

    # -- receiving --------------------------------------------------------------------------
    def _fill(self, n: int, deadline: float | None) -> None:
        import time

        while len(self._buf) < n:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                    raise TimeoutError("no message in time")
            try:
                chunk = self.sock.recv(max(65536, n - len(self._buf)))
            except OSError as e:
                raise ConnectionClosed(str(e)) from None
            if not chunk:
                raise ConnectionClosed("the connection closed")
            self._buf += chunk

    def _next_frame(self, deadline: float | None) -> tuple[bool, int, bytes]:
        """(fin, opcode, payload) of the next frame; nothing is consumed until it is complete."""
        self._fill(2, deadline)
        b0, b1 = self._buf[0], self._buf[1]
        n, at = b1 & 0x7F, 2
        if n == 126:
            self._fill(4, deadline)
            n, at = struct.unpack_from("!H", self._buf, 2)[0], 4
        elif n == 127:
            self._fill(10, deadline)
            n, at = struct.unpack_from("!Q", self._buf, 2)[0], 10
        if n > self._max:
            self.sock.close()
            raise ConnectionClosed(f"message too big ({n} bytes)")
        key = b""
        if b1 & 0x80:  # a server must not mask, but tolerate it
            self._fill(at + 4, deadline)
            key, at = bytes(self._buf[at:at + 4]), at + 4
        self._fill(at + n, deadline)
        payload = bytes(self._buf[at:at + n])
        del self._buf[:at + n]
        return bool(b0 & 0x80), b0 & 0x0F, (_mask(payload, key) if key else payload)

    def recv(self, timeout: float | None = None) -> str | bytes:
        """The next text (str) or binary (bytes) message. ``TimeoutError`` when none comes
        within ``timeout`` s; ``ConnectionClosed`` once the connection is closed."""
        import time

        if self._got_close:
            raise ConnectionClosed("the WebSocket is closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            fin, op, payload = self._next_frame(deadline)
            if op == 0x9:  # ping
                try:
                    self._frame(0xA, payload)
                except ConnectionClosed:
                    pass
                continue
            if op == 0xA:
                continue
            if op == 0x8:
                self._got_close = True
                try:
                    self._frame(0x8, payload[:2])
                    self._sent_close = True
                except ConnectionClosed:
                    pass
                raise ConnectionClosed("closed by the daemon")
            if op in (0x1, 0x2):
                self._part_op, self._parts = op, [payload]
            elif op == 0x0:
                self._parts.append(payload)
            if not fin:
                continue
            data = b"".join(self._parts)
            self._parts = []
            return data.decode("utf-8") if self._part_op == 0x1 else data

    def close(self) -> None:
        """Send a close frame, wait briefly for the daemon's, and close the socket."""
        import time

        try:
            if not self._sent_close:
                self._frame(0x8, struct.pack("!H", 1000))
                self._sent_close = True
            deadline = time.monotonic() + self._close_timeout
            while not self._got_close:
                _, op, _ = self._next_frame(deadline)
                if op == 0x8:
                    self._got_close = True
        except (ConnectionClosed, TimeoutError, OSError):
            pass
        finally:
            try:
                self.sock.close()
            except OSError:
                pass


def unix_connect(path: str, uri: str, *, max_size: int = 2**22, open_timeout: float = 30,
                 close_timeout: float = 2) -> WebSocket:
    """Open a WebSocket to ``uri`` (``ws://host/path``) through the Unix socket ``path``. The
    socket's own errors (FileNotFoundError, ConnectionRefusedError …) propagate;
    ``HandshakeFailed`` when the server does not switch protocols."""
    rest = uri.split("://", 1)[-1]
    host, _, target = rest.partition("/")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(open_timeout)
        sock.connect(path)
        key = base64.b64encode(os.urandom(16))
        sock.sendall(b"GET /" + target.encode() + b" HTTP/1.1\r\nHost: " + host.encode() +
                     b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
                     b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise HandshakeFailed("the daemon closed the connection during the WebSocket handshake")
            data += chunk
            if len(data) > 65536:
                raise HandshakeFailed("the daemon's handshake answer is too long")
        head, _, extra = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or status[1] != "101":
            raise HandshakeFailed(f"the daemon refused the WebSocket: {lines[0]}")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        if headers.get("sec-websocket-accept", "").encode() != _accept_of(key):
            raise HandshakeFailed("the daemon's WebSocket handshake answer does not match")
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return WebSocket(sock, extra, max_size=max_size, close_timeout=close_timeout)
