"""The head's client of one node agent (cluster mode, issue 18): JSON over TCP, each request
carrying a fresh MUNGE credential bound to it (see ``daemon/agent.py``)."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

from ds01.errors import DS01Error, NodeUnavailable, from_dict
from ds01.policy.placement import request_digest
from ds01.runtime import munge
from ds01.runtime.base import ContainerGone


class NodeClient:
    def __init__(self, node: str, address: str, port: int, timeout: float = 5.0, munge_socket: str = ""):
        self.node, self.address, self.port = node, address, port
        self.timeout, self.munge_socket = timeout, munge_socket

    def _down(self, why: object) -> NodeUnavailable:
        return NodeUnavailable(f"the DS01 agent on node {self.node} ({self.address}:{self.port}) is not answering: {why}",
                               "its containers show 'unknown' until it is back; an admin starts it with "
                               f"'ds01d --node {self.node}' on that server")

    def _headers(self, method: str, path: str, raw: bytes) -> dict[str, str]:
        cred = munge.encode(request_digest(method, path, raw), self.munge_socket)
        return {"X-DS01-Credential": cred, "Content-Type": "application/json", "Content-Length": str(len(raw))}

    def call(self, method: str, path: str, body: dict | None = None, timeout: float | None = None) -> Any:
        raw = json.dumps(body).encode() if body is not None else b""
        headers = self._headers(method, path, raw)
        conn = http.client.HTTPConnection(self.address, self.port, timeout=timeout or self.timeout)
        try:
            conn.request(method, path, body=raw, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise self._down(e) from None
        finally:
            conn.close()
        try:
            out = json.loads(data)
        except ValueError:
            raise self._down(f"an answer that is not JSON (HTTP {resp.status})") from None
        if "error" in out:
            err = out["error"]
            if err.get("gone"):
                raise ContainerGone(err.get("message", "the container no longer exists"), err.get("hint"))
            e = from_dict(err)
            if type(e) is DS01Error and resp.status >= 500:
                e.message = f"node {self.node}: {e.message}"
            raise e
        return out.get("result")

    def stream(self, path: str):
        """GET ``path`` as a byte stream (no timeout once it began): the container's output."""
        headers = self._headers("GET", path, b"")
        conn = http.client.HTTPConnection(self.address, self.port, timeout=self.timeout)
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise self._down(e) from None
        if resp.status != 200:
            data = resp.read()
            conn.close()
            try:
                raise from_dict(json.loads(data)["error"])
            except (ValueError, KeyError):
                raise self._down(f"HTTP {resp.status}") from None
        if conn.sock is not None:
            conn.sock.settimeout(None)
        try:
            while chunk := resp.read1(65536):
                yield chunk
        except (OSError, http.client.HTTPException):
            return
        finally:
            conn.close()

    def exec_open(self, body: dict) -> tuple[str, socket.socket]:
        """Start an exec on the node: (exec id, a socket carrying its raw stream both ways)."""
        raw = json.dumps(body).encode()
        path = "/v1/exec"
        headers = self._headers("POST", path, raw)
        try:
            sock = socket.create_connection((self.address, self.port), timeout=self.timeout)
        except OSError as e:
            raise self._down(e) from None
        try:
            req = f"POST {path} HTTP/1.1\r\nHost: {self.address}\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            sock.sendall(req.encode() + raw)
            status, head = _read_head(sock)
            if status != 101:
                n = int(head.get("content-length", "0") or 0)
                data = b""
                while len(data) < n:
                    chunk = sock.recv(n - len(data))
                    if not chunk:
                        break
                    data += chunk
                sock.close()
                try:
                    err = json.loads(data)["error"]
                except (ValueError, KeyError):
                    raise self._down(f"HTTP {status} to an exec") from None
                if err.get("gone"):
                    raise ContainerGone(err.get("message", "the container no longer exists"))
                raise from_dict(err)
            exec_id = head.get("x-ds01-exec", "")
        except OSError as e:
            sock.close()
            raise self._down(e) from None
        sock.settimeout(None)
        return exec_id, sock


def _read_head(sock: socket.socket, limit: int = 16384) -> tuple[int, dict[str, str]]:
    """The status and headers of a response, read byte by byte: the exec's stream follows the
    blank line at once, and no byte of it may be taken into a buffer here."""
    buf = b""
    while not buf.endswith(b"\r\n\r\n"):
        b = sock.recv(1)
        if not b or len(buf) > limit:
            raise OSError("the agent closed the connection before answering")
        buf += b
    lines = buf.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        raise OSError(f"not an HTTP answer: {lines[0][:80]!r}") from None
    head = {}
    for line in lines[1:]:
        k, sep, v = line.partition(":")
        if sep:
            head[k.strip().lower()] = v.strip()
    return status, head
