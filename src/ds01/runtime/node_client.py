"""The head's client of one node agent (cluster mode, issue 18): JSON over TCP, each request
carrying a fresh MUNGE credential bound to it (see ``daemon/agent.py``)."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

from ds01.errors import DS01Error, NodeUnavailable, from_dict
from ds01.policy.placement import request_digest, response_digest
from ds01.runtime import munge
from ds01.runtime.base import ContainerGone


class NodeClient:
    def __init__(self, node: str, address: str, port: int, timeout: float = 5.0, munge_socket: str = "",
                 head_uid: int = 0):
        self.node, self.address, self.port = node, address, port
        self.timeout, self.munge_socket = timeout, munge_socket
        self.head_uid = head_uid  # DS01's uid on every machine: the agents' answers are signed by it

    def _down(self, why: object) -> NodeUnavailable:
        return NodeUnavailable(f"the DS01 agent on node {self.node} ({self.address}:{self.port}) is not answering: {why}",
                               "its containers show 'unknown' until it is back; an admin starts it with "
                               f"'ds01d --node {self.node}' on that server")

    def _headers(self, method: str, path: str, raw: bytes) -> tuple[dict[str, str], str]:
        digest = request_digest(method, path, raw, self.node)
        cred = munge.encode(digest, self.munge_socket)
        return ({"X-DS01-Credential": cred, "Content-Type": "application/json",
                 "Content-Length": str(len(raw))}, digest)

    def _verify(self, digest: str, status: int, body: bytes, cred: str | None, shown: bytes = b"") -> None:
        """The answer is the agent's: a credential of DS01's uid over (request, status, body).
        Anything else (a process that took the port while the agent was down) is 'not answering'."""
        if not cred:
            said = ""
            try:
                said = ": " + json.loads(shown)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                pass
            raise self._down(f"an unsigned answer (HTTP {status}){said}")
        try:
            d = munge.decode(cred, self.munge_socket)
        except DS01Error as e:
            raise self._down(f"an answer without a valid agent credential ({e.message})") from None
        if d.uid != self.head_uid or d.payload != response_digest(digest, status, body):
            raise self._down("an answer not signed by the DS01 agent for this request")

    def call(self, method: str, path: str, body: dict | None = None, timeout: float | None = None) -> Any:
        raw = json.dumps(body).encode() if body is not None else b""
        headers, digest = self._headers(method, path, raw)
        conn = http.client.HTTPConnection(self.address, self.port, timeout=timeout or self.timeout)
        try:
            conn.request(method, path, body=raw, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise self._down(e) from None
        finally:
            conn.close()
        # only a signed answer is believed (an unsigned one is the agent refusing our credential,
        # or not the agent at all): either way the node is not answering as it must
        self._verify(digest, resp.status, data, resp.getheader("X-DS01-Credential"), data)
        if resp.status >= 400:
            raise self._error(resp.status, data)
        try:
            return json.loads(data).get("result")
        except (ValueError, AttributeError):
            raise self._down(f"an answer that is not JSON (HTTP {resp.status})") from None

    def _error(self, status: int, data: bytes) -> DS01Error:
        """The DS01 error a (verified) error answer carries."""
        try:
            err = json.loads(data)["error"]
        except (ValueError, KeyError, TypeError):
            return self._down(f"HTTP {status} without an error body")
        if err.get("gone"):
            return ContainerGone(err.get("message", "the container no longer exists"), err.get("hint"))
        e = from_dict(err)
        if type(e) is DS01Error and status >= 500:
            e.message = f"node {self.node}: {e.message}"
        return e

    def stream(self, path: str):
        """GET ``path`` as a byte stream (no timeout once it began): the container's output."""
        headers, digest = self._headers("GET", path, b"")
        conn = http.client.HTTPConnection(self.address, self.port, timeout=self.timeout)
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise self._down(e) from None
        if resp.status == 200:
            try:
                self._verify(digest, 200, b"stream", resp.getheader("X-DS01-Credential"))
            except DS01Error:
                conn.close()
                raise
        if resp.status != 200:
            data = resp.read()
            conn.close()
            self._verify(digest, resp.status, data, resp.getheader("X-DS01-Credential"), data)
            raise self._error(resp.status, data)
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
        headers, digest = self._headers("POST", path, raw)
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
                self._verify(digest, status, data, head.get("x-ds01-credential"), data)
                raise self._error(status, data)
            exec_id = head.get("x-ds01-exec", "")
            self._verify(digest, 101, exec_id.encode(), head.get("x-ds01-credential"))
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
