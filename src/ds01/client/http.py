"""The CLI's side of the API: JSON over HTTP on the daemon's Unix socket.

Stdlib only (http.client), so every CLI command starts fast. Errors sent by the daemon are
re-raised as the same DS01Error class (the code travels over the wire).
"""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote, urlencode

from ds01.errors import DaemonUnavailable, DS01Error, from_dict


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


def q(segment: str) -> str:
    """Quote one path segment."""
    return quote(segment, safe="")


class Client:
    """One instance per CLI invocation; each call opens its own connection."""

    def __init__(self, socket_path: Path | str | None = None, timeout: float | None = 600):
        if socket_path is None:
            from ds01.paths import client_socket_path

            socket_path = client_socket_path()
        self.socket_path = str(socket_path)
        self.timeout = timeout

    def _open(self, method: str, path: str, body: Any, params: dict[str, Any] | None):
        if params:
            clean = {k: ("1" if v is True else v) for k, v in params.items() if v not in (None, False)}
            if clean:
                path = f"{path}?{urlencode(clean, doseq=True)}"
        conn = _UnixConnection(self.socket_path, self.timeout)
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            conn.request(method, path, body=payload, headers=headers)
            return conn, conn.getresponse()
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise DaemonUnavailable(
                f"cannot reach the DS01 daemon at {self.socket_path} ({e.strerror or e})",
                "ask an admin to start ds01d (or set DS01_SOCKET / DS01_ROOT to where it runs)",
            ) from None
        except PermissionError:
            raise DaemonUnavailable(
                f"permission denied opening {self.socket_path}",
                "the socket should be world-connectable; ask an admin to check ds01d's socket_mode",
            ) from None

    @staticmethod
    def _raise_for(resp: http.client.HTTPResponse, raw: bytes) -> None:
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
            while True:
                line = resp.readline()
                if not line:
                    break
                if not line.strip():
                    continue
                item = json.loads(line)
                if isinstance(item, dict) and isinstance(item.get("error"), dict):
                    raise from_dict(item["error"])
                yield item
        finally:
            conn.close()
