"""``ds01d --node NAME``: the node agent's server (cluster mode, issue 18).

A small threaded HTTP/JSON server on the node's address, for the head only: every request must
carry a MUNGE credential made by the head's uid whose payload is the request's digest
(``policy.placement.request_digest``: method, path, body), so a credential is good for one request
once (munged refuses replays). What it may do is decided in ``services/node.py``. An exec is
answered ``101`` and the connection then carries the exec's raw stream both ways.
"""

from __future__ import annotations

import json
import logging
import re
import selectors
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ds01.errors import DS01Error, InvalidInput, NotFound, PermissionDenied
from ds01.policy.placement import request_digest, response_digest
from ds01.runtime import munge
from ds01.runtime.base import ContainerGone

log = logging.getLogger("ds01d.agent")
_CID = r"([A-Za-z0-9_.-]{1,128})"
MAX_BODY = 4 << 20
READ_TIMEOUT = 10.0  # a client that does not send its request in this long is dropped
MAX_CONNECTIONS = 64  # concurrent connections (execs and log streams included)


class _Handler(BaseHTTPRequestHandler):
    server_version = "ds01-agent"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:  # the head logs requests; keep quiet
        log.debug("%s " + fmt, self.address_string(), *args)

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(READ_TIMEOUT)  # slow senders do not hold a thread
        self._digest = ""

    def _sign(self, status: int, body: bytes) -> None:
        """Every answer carries the agent's own credential over (request, status, body)."""
        if self._digest:
            self.send_header("X-DS01-Credential",
                             munge.encode(response_digest(self._digest, status, body), self.server.munge_socket))  # type: ignore[attr-defined]

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self._sign(status, data)
        self.end_headers()
        self.wfile.write(data)

    def _fail(self, e: DS01Error) -> None:
        self._reply(e.http_status, {"error": {**e.to_dict(), "gone": isinstance(e, ContainerGone)}})

    def _handle(self, method: str) -> None:
        agent = self.server.agent  # type: ignore[attr-defined]
        try:
            # nothing is read before the request shows a credential and a sane length
            self.close_connection = True  # one request per connection: no pipelining tricks
            header = self.headers.get("X-DS01-Credential", "")
            if not header:
                raise PermissionDenied("no MUNGE credential in the request")
            try:
                n = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise InvalidInput("a bad Content-Length") from None
            if n < 0 or n > MAX_BODY or self.headers.get("Transfer-Encoding"):
                raise InvalidInput("the body must have a Content-Length of at most 4 MiB")
            raw = self.rfile.read(n) if n else b""
            if len(raw) != n:
                raise InvalidInput("the body ended early")
            cred = munge.decode(header, self.server.munge_socket)  # type: ignore[attr-defined]
            if cred.uid != self.server.head_uid:  # type: ignore[attr-defined]
                raise PermissionDenied(f"credential of uid {cred.uid}: only the head may call an agent")
            digest = request_digest(method, self.path, raw, agent.node)
            if cred.payload != digest:
                raise PermissionDenied("the credential was made for another request (or another node)")
            self._digest = digest  # answers are signed from here on
            body = json.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise InvalidInput("the body must be a JSON object")
            out = self._route(agent, method, body)
            if out is not _UPGRADED:
                self._reply(200, {"result": out})
        except DS01Error as e:
            self._fail(e)
        except (ValueError, KeyError, TypeError) as e:
            self._fail(InvalidInput(f"malformed request: {e}"))
        except Exception as e:  # an agent must answer, never hang the head
            log.exception("agent request failed")
            self._fail(DS01Error(f"node agent error: {e}"))

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _route(self, agent, method: str, body: dict) -> Any:
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        if method == "GET" and path == "/v1/node":
            return agent.describe()
        if method == "POST" and path == "/v1/containers":
            return agent.create(body)
        if method == "POST" and path == "/v1/list":
            return agent.list({str(k): str(v) for k, v in (body.get("selector") or {}).items()})
        m = re.fullmatch(r"/v1/containers/" + _CID + r"/sample", path)
        if method == "POST" and m:
            return agent.sample(m.group(1), [str(x) for x in body.get("ignore") or []])
        if method == "POST" and path == "/v1/exec":
            return self._exec(agent, body)
        m = re.fullmatch(r"/v1/containers/" + _CID + r"(?:/(\w+))?", path)
        if m:
            cid, verb = m.group(1), m.group(2)
            if method == "GET" and verb is None:
                return agent.inspect(cid)
            if method == "GET" and verb == "stats":
                return agent.stats(cid)
            if method == "GET" and verb == "follow":
                return self._follow(agent, cid)
            if method == "GET" and verb == "logs":
                return agent.logs(cid, int((query.get("tail") or ["50"])[0]))
            if method == "POST" and verb == "start":
                return agent.start(cid)
            if method == "POST" and verb == "stop":
                return agent.stop(cid, float(body.get("timeout", 10)))
            if method == "POST" and verb == "remove":
                return agent.remove(cid, bool(body.get("force")))
        m = re.fullmatch(r"/v1/exec/" + _CID + r"/(\w+)", path)
        if m:
            eid, verb = m.group(1), m.group(2)
            if method == "GET" and verb == "state":
                return agent.exec_state(eid)
            if method == "POST" and verb == "resize":
                return agent.runtime.exec_resize(eid, int(body["rows"]), int(body["cols"]))
            if method == "POST" and verb == "signal":
                return agent.exec_signal(eid, str(body["container"]), int(body["signal"]))
        raise NotFound(f"no agent endpoint {method} {path}")

    def _follow(self, agent, cid: str) -> Any:
        """The container's output as a plain byte stream until it exits (batch jobs' logs)."""
        chunks = agent.follow_logs(cid)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Connection", "close")
        self._sign(200, b"stream")
        self.end_headers()
        self.connection.settimeout(None)
        try:
            for chunk in chunks:
                self.wfile.write(chunk)
                self.wfile.flush()
        except OSError:
            pass  # the head went away
        self.close_connection = True
        return _UPGRADED

    def _exec(self, agent, body: dict) -> Any:
        handle = agent.exec_start(body)
        self.send_response(101)
        self.send_header("Upgrade", "ds01-exec")
        self.send_header("Connection", "Upgrade")
        self.send_header("X-DS01-Exec", handle.id)
        self._sign(101, handle.id.encode())
        self.end_headers()
        self.connection.settimeout(None)  # an interactive session may be quiet for long
        self.wfile.flush()
        splice(self.connection, handle.sock)
        self.close_connection = True
        return _UPGRADED


_UPGRADED = object()


def splice(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until both directions ended; an end in one direction is passed on as
    a half-close (stdin's end reaches the process), so output after it still flows."""
    sel = selectors.DefaultSelector()
    for s in (a, b):
        s.setblocking(False)
    peer = {a: b, b: a}
    open_ = {a, b}
    for s in open_:
        sel.register(s, selectors.EVENT_READ)
    try:
        while open_:
            for key, _ in sel.select():
                src: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = src.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if data:
                    peer[src].setblocking(True)
                    try:
                        peer[src].sendall(data)
                    except OSError:
                        return
                    finally:
                        peer[src].setblocking(False)
                    continue
                sel.unregister(src)
                open_.discard(src)
                try:
                    peer[src].shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                if src is b:  # the process's output ended: nothing more to relay
                    return
    finally:
        sel.close()
        for s in (a, b):
            try:
                s.close() if s is b else None
            except OSError:
                pass


class AgentServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], agent, head_uid: int, munge_socket: str = ""):
        self.agent, self.head_uid, self.munge_socket = agent, head_uid, munge_socket
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(addr, _Handler)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):  # full: refuse at once rather than queue forever
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def serve_node(cfg, node: str, listen: str | None, docker_url: str | None, state_dir: str) -> None:
    """Run the agent until SIGTERM/SIGINT: the server, and the sweep that stops containers whose
    job ended."""
    import signal

    from ds01.runtime.docker import DockerBackend
    from ds01.runtime.slurm import SlurmCli
    from ds01.services.node import NodeAgent

    c = cfg.cluster
    slurm = SlurmCli(c.slurm_conf)
    if listen:
        host, _, port = listen.rpartition(":")
        addr = (host, int(port))
    else:
        found = {n.name: n for n in slurm.nodes()}
        if node not in found:
            raise NotFound(f"Slurm has no node {node!r}", "name the node as slurm.conf does (NodeName)")
        addr = (found[node].addr or node, c.agent_port)
    runtime = DockerBackend(docker_url, int(cfg.engine.call_timeout), f"{state_dir}/accounts", float(cfg.engine.timeout))
    base = cfg.containers.workspace_base.split("{", 1)[0].rstrip("/") or "/"
    from ds01.gpu import make_source

    agent = NodeAgent(node, runtime, slurm, cfg.daemon.instance, workspace_root=base, gpu_source=make_source(cfg.gpu),
                      mounts_dir=f"{state_dir}/mounts", template=cfg.containers.workspace_base,
                      allowed=list(cfg.images.allowed))
    _unpin_stale(f"{state_dir}/mounts")
    server = AgentServer(addr, agent, c.head_uid, c.munge_socket)
    threading.Thread(target=agent.watch, name="ds01-agent-sweep", daemon=True).start()

    def _stop(*_: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    log.info("node agent %s listening on %s:%d", node, *addr)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        agent.close()
        server.server_close()


def _unpin_stale(mounts: str) -> None:
    """At start no start is in progress: a pin left by an agent killed mid-start comes off."""
    import os

    from ds01.services.workspace import unpin_workspace

    if os.path.isdir(mounts):
        for name in os.listdir(mounts):
            unpin_workspace(os.path.join(mounts, name), remove_dir=False)
