"""The CLI's side of the API: JSON over HTTP on the daemon's Unix socket.

Stdlib only and no http.client (see _Response), so every CLI command starts fast. Errors sent by the daemon are
re-raised as the same DS01Error class (the code travels over the wire).
"""

from __future__ import annotations

import json
import os
import socket
# typing is only for annotations (strings here): importing it costs every CLI start ~5 ms
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterator

from ds01.errors import DaemonUnavailable, DS01Error, from_dict


class _Response:
    """Just enough HTTP/1.1 for one request on a local socket: status, headers, and a body framed by
    Content-Length, chunked encoding, or connection close.

    Why not ``http.client``: importing it (with ``email`` and ``ssl``) costs ~40 ms, paid by every
    CLI command; a client that only ever talks to our own daemon on a Unix socket needs none of it.
    """

    def __init__(self, sock: socket.socket):
        self._f = sock.makefile("rb")
        line = self._f.readline(65537)
        if not line:  # closed before a byte of answer: the daemon stopped (or was killed) meanwhile
            raise _cut_off()
        parts = line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise DS01Error(f"the daemon sent an invalid response: {line[:80]!r}")
        self.status = int(parts[1])
        self.headers: dict[str, str] = {}
        while True:
            h = self._f.readline(65537)
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode("latin-1").partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        self._left = int(self.headers["content-length"]) if "content-length" in self.headers else None
        self._buf = b""

    def _chunks(self) -> Iterator[bytes]:
        if self._chunked:
            while True:
                head = self._f.readline(1024)
                if not head:  # the connection ended without the last (empty) chunk
                    raise _cut_off()
                size = int(head.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self._f.readline(1024)
                    return
                data = self._f.read(size)
                if len(data) < size:
                    raise _cut_off()
                self._f.readline(3)
                yield data
        elif self._left is not None:
            while self._left > 0:
                data = self._f.read1(min(self._left, 65536))
                if not data:
                    raise _cut_off()
                self._left -= len(data)
                yield data
        else:
            while data := self._f.read1(65536):
                yield data

    def read(self) -> bytes:
        return b"".join(self._chunks())

    def lines(self) -> Iterator[bytes]:
        buf = b""
        for chunk in self._chunks():
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                yield line
        if buf:
            yield buf


def _cut_off() -> DaemonUnavailable:
    return DaemonUnavailable("the DS01 daemon closed the connection before it finished answering "
                             "(it stopped or restarted meanwhile)",
                             "try again in a moment; if it persists, ask an admin to check ds01d")


def socket_path_from_env() -> str:
    """Where the CLI looks for the daemon: ``DS01_SOCKET``, else under ``DS01_ROOT``, else /run.
    (Plain strings: importing pathlib would cost every command ~5 ms.)"""
    explicit = os.environ.get("DS01_SOCKET")
    if explicit:
        return explicit
    root = os.environ.get("DS01_ROOT") or "/"
    return os.path.join(root, "run/ds01/ds01.sock")


def q(segment: str) -> str:
    """Quote one path segment."""
    # RFC 3986 unreserved characters stay, everything else is %-encoded (as urllib.parse.quote
    # with safe=""; spelled out because urllib.parse costs every command ~4 ms to import)
    return "".join(c if (c.isascii() and c.isalnum()) or c in "-._~" else
                   "".join(f"%{b:02X}" for b in c.encode()) for c in segment)


class Client:
    """One instance per CLI invocation; each call opens its own connection."""

    def __init__(self, socket_path: str | None = None, timeout: float | None = 600):
        if socket_path is None:
            socket_path = socket_path_from_env()
        self.socket_path = str(socket_path)
        self.timeout = timeout

    def _open(self, method: str, path: str, body: Any, params: dict[str, Any] | None):
        if params:
            clean = {k: ("1" if v is True else v) for k, v in params.items() if v not in (None, False)}
            if clean:
                path = f"{path}?" + "&".join(f"{q(str(k))}={q(str(v))}" for k, v in clean.items())
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        head += f"Content-Length: {len(payload)}\r\n\r\n"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
            sock.sendall(head.encode("latin-1") + payload)
            return sock, _Response(sock)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            sock.close()
            raise DaemonUnavailable(
                f"cannot reach the DS01 daemon at {self.socket_path} ({e.strerror or e})",
                "ask an admin to start ds01d (or set DS01_SOCKET / DS01_ROOT to where it runs)",
            ) from None
        except PermissionError:
            sock.close()
            raise DaemonUnavailable(
                f"permission denied opening {self.socket_path}",
                "the socket should be world-connectable; ask an admin to check ds01d's socket_mode",
            ) from None
        except OSError as e:
            sock.close()
            raise DaemonUnavailable(f"lost the connection to the DS01 daemon ({e})",
                                    "try again; if it persists, ask an admin to check ds01d") from None

    @staticmethod
    def _raise_for(resp: _Response, raw: bytes) -> None:
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            data = {}
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            raise from_dict(data["error"])
        raise DS01Error(f"daemon answered HTTP {resp.status}: {raw[:200]!r}")

    def call(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        conn, resp = self._open(method, path, body, params)
        try:
            raw = resp.read()
        except OSError as e:
            raise DaemonUnavailable(f"lost the connection to the DS01 daemon ({e})") from None
        finally:
            conn.close()
        if resp.status >= 400:
            self._raise_for(resp, raw)
        return json.loads(raw) if raw else None

    def stream(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Iterator[dict]:
        """Yield the JSON lines of a streaming (NDJSON) response; an ``{"error": …}`` line raises."""
        conn, resp = self._open(method, path, body, params)
        try:
            if resp.status >= 400:
                self._raise_for(resp, resp.read())
            for line in resp.lines():
                if not line.strip():
                    continue
                item = json.loads(line)
                if isinstance(item, dict) and isinstance(item.get("error"), dict):
                    raise from_dict(item["error"])
                yield item
        except OSError as e:
            raise DaemonUnavailable(f"lost the connection to the DS01 daemon ({e})",
                                    "try again; if it persists, ask an admin to check ds01d") from None
        finally:
            conn.close()
