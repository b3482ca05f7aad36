"""Connection bounds for the daemon's listeners (issue 15): one user cannot exhaust the daemon.

* :class:`ConnectionGuard` wraps an asyncio protocol factory (the aiohttp server of the API
  socket, of the status page). Each accepted connection is counted per uid (SO_PEERCRED on the
  Unix socket) and in total; over a bound it gets one HTTP 503 with a one-line JSON error (code
  ``busy``, which the CLI turns into ``Busy``) and is closed, instead of being served or failing
  ``accept``. The last ``reserve`` connections of the total are for root and admins, so they can
  still look at (and fix) a daemon someone is flooding. A connection with no request in progress
  (none sent yet, a slow partial request, an idle keep-alive) is closed after ``idle`` seconds.
* Refusals are logged and reported (an audit event) at most once per ``report_every`` seconds,
  with counts: a flood writes a line per window, not a line (or a traceback) per attempt.
* :func:`serve_wsgi`: the same bounds for a threaded WSGI listener (the Prometheus metrics).
* :func:`raise_nofile_limit` and :func:`quiet_accept_errors` for the process as a whole.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
import struct
import threading
import time
from collections import Counter
from typing import Any, Callable

log = logging.getLogger("ds01d")

LINGER_S = 0.5  # a refused client gets this long to send its request, so it reads the 503 (no EPIPE)
LINGER_MAX = 256  # refused connections lingering at once; beyond, closed right after the 503


def busy_response(message: str, hint: str) -> bytes:
    """A complete HTTP/1.1 503 whose body is the API's error shape on one line (code ``busy``)."""
    body = json.dumps({"error": {"code": "busy", "message": message, "hint": hint}}).encode() + b"\n"
    head = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\nRetry-After: 5\r\n\r\n")
    return head.encode() + body


def peer_uid(sock: Any) -> int | None:
    """The uid on the other end of a Unix socket (SO_PEERCRED); None for TCP or on error."""
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return struct.unpack("3i", raw)[1]


class ConnectionGuard:
    """Counts and bounds the connections of one listener. ``per_user`` 0 = no per-uid bound
    (TCP listeners: no uid to count by); ``is_admin(uid)`` says who may use the reserve (cached);
    ``on_refused(count, by_uid, reason)`` is called once per report window with what was refused."""

    def __init__(self, name: str, total: int, per_user: int = 0, reserve: int = 0, idle: float = 5.0,
                 is_admin: Callable[[int], bool] | None = None,
                 on_refused: Callable[[int, dict[int | None, int], str], None] | None = None,
                 report_every: float = 10.0, label: str = "ds01d"):
        self.name, self.total, self.per_user, self.label = name, total, per_user, label
        self.reserve = min(reserve, max(0, total - 1))
        self.idle, self.report_every = idle, report_every
        self._is_admin, self._on_refused = is_admin, on_refused
        self._admins: dict[int, tuple[float, bool]] = {}
        self.open = 0
        self.by_uid: Counter[int | None] = Counter()
        self._conns: dict[Any, _Guarded] = {}  # transport -> connection, for the middleware
        self.lingering = 0
        self._refused: Counter[int | None] = Counter()
        self._why = ""
        self._last_report = -1e9
        self._flush: asyncio.TimerHandle | None = None
        self.refused_total = 0

    # -- decisions -------------------------------------------------------------------------
    def admin(self, uid: int | None) -> bool:
        if uid == 0:
            return True
        if uid is None or self._is_admin is None:
            return False
        now = time.monotonic()
        hit = self._admins.get(uid)
        if hit is None or now - hit[0] > 30:
            try:
                hit = (now, bool(self._is_admin(uid)))
            except Exception:  # an unknown uid is no admin
                hit = (now, False)
            if len(self._admins) > 4096:
                self._admins.clear()
            self._admins[uid] = hit
        return hit[1]

    def admit(self, uid: int | None) -> str | None:
        """None to serve a new connection of ``uid``, else why it is refused."""
        if self.open >= self.total:
            return f"{self.label} is serving its maximum of {self.total} connections"
        if self.per_user and self.by_uid[uid] >= self.per_user and not self.admin(uid):
            return f"you already have {self.by_uid[uid]} connections open to {self.label} (the limit per user)"
        if self.open >= self.total - self.reserve and not self.admin(uid):
            return f"{self.label} is serving {self.open} connections; the rest are reserved for admins"
        return None

    # -- bookkeeping -----------------------------------------------------------------------
    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory that guards the connections ``factory``'s protocols serve."""
        return lambda: _Guarded(self, factory)

    def note_refused(self, uid: int | None, why: str) -> None:
        self.refused_total += 1
        self._refused[uid] += 1
        self._why = why
        if self._flush is None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, self._last_report + self.report_every - loop.time())
            self._flush = loop.call_later(delay, self._report)

    def _report(self) -> None:
        self._flush = None
        self._last_report = asyncio.get_running_loop().time()
        counts, self._refused = dict(self._refused), Counter()
        n = sum(counts.values())
        if not n:
            return
        top = ", ".join(f"uid {u}: {c}" if u is not None else f"tcp: {c}"
                        for u, c in Counter(counts).most_common(5))
        log.warning("%s: refused %d connection(s) (%s; open now %d): %s", self.name, n, top, self.open, self._why)
        if self._on_refused is not None:
            try:
                self._on_refused(n, counts, self._why)
            except Exception:  # reporting must never break the listener
                log.exception("could not record refused connections")

    def middleware(self) -> Any:
        """aiohttp middleware marking a connection busy while one of its requests is handled
        (the idle timer leaves it alone then: exec sessions and build streams last for hours)."""
        from aiohttp import web

        @web.middleware
        async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
            conn = self._conns.get(request.transport)
            if conn is None:
                return await handler(request)
            conn.active += 1
            try:
                return await handler(request)
            finally:
                conn.active -= 1
                conn.last = conn.loop.time()

        return guard

    def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
            self._report()


class _Guarded(asyncio.Protocol):
    """One accepted connection: refused with a 503, or handed to the wrapped protocol and
    watched for idleness."""

    def __init__(self, guard: ConnectionGuard, factory: Callable[[], asyncio.Protocol]):
        self.guard, self.factory = guard, factory
        self.inner: asyncio.Protocol | None = None
        self.transport: Any = None
        self.uid: int | None = None
        self.active = 0
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._lingers = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        g = self.guard
        self.uid = peer_uid(transport.get_extra_info("socket"))
        why = g.admit(self.uid)
        if why is not None:
            g.note_refused(self.uid, why)
            transport.write(busy_response(why, "try again in a moment; if it persists, tell an admin"))
            if g.lingering < LINGER_MAX:
                g.lingering += 1
                self._lingers = True
                self._timer = self.loop.call_later(LINGER_S, transport.close)
            else:
                transport.close()
            return
        g.open += 1
        g.by_uid[self.uid] += 1
        g._conns[transport] = self
        self._timer = self.loop.call_at(self.last + g.idle, self._check_idle)
        self.inner = self.factory()
        self.inner.connection_made(transport)

    def _check_idle(self) -> None:
        now = self.loop.time()
        t = self.transport
        if self.active or t.get_write_buffer_size():
            due = now + self.guard.idle
        elif now - self.last >= self.guard.idle:
            t.close()
            return
        else:
            due = self.last + self.guard.idle
        self._timer = self.loop.call_at(due, self._check_idle)

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            self.transport.close()  # refused: the 503 is out; what the client sent is not read
            return
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.inner is None:
            return None
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        g = self.guard
        if self._timer is not None:
            self._timer.cancel()
        if self._lingers:
            self._lingers = False
            g.lingering -= 1
        if self.inner is None:
            return
        g.open -= 1
        g.by_uid[self.uid] -= 1
        if g.by_uid[self.uid] <= 0:
            del g.by_uid[self.uid]
        g._conns.pop(self.transport, None)
        self.inner.connection_lost(exc)


# -- sites -------------------------------------------------------------------------------------
def unix_site(runner: Any, path: str, guard: ConnectionGuard, backlog: int = 1024) -> Any:
    """An aiohttp site on a Unix socket whose connections go through ``guard``."""
    from aiohttp import web

    class GuardedUnixSite(web.UnixSite):
        async def start(self) -> None:
            await web.BaseSite.start(self)
            self._server = await asyncio.get_running_loop().create_unix_server(
                guard.wrap(self._runner.server), self._path, backlog=self._backlog)

    return GuardedUnixSite(runner, path, backlog=backlog)


def tcp_site(runner: Any, host: str, port: int, guard: ConnectionGuard, backlog: int = 128) -> Any:
    """An aiohttp site on TCP whose connections go through ``guard``."""
    from aiohttp import web

    class GuardedTCPSite(web.TCPSite):
        async def start(self) -> None:
            await web.BaseSite.start(self)
            self._server = await asyncio.get_running_loop().create_server(
                guard.wrap(self._runner.server), self._host, self._port, backlog=self._backlog,
                reuse_address=self._reuse_address)

    return GuardedTCPSite(runner, host, port, backlog=backlog, reuse_address=True)


# -- a bounded threaded WSGI listener (metrics) --------------------------------------------------
class _Throttle:
    """Rate-limited warnings: at most one line per ``every`` seconds, with the count since."""

    def __init__(self, every: float = 10.0):
        self.every, self.last, self.n = every, -1e9, 0
        self.lock = threading.Lock()

    def warn(self, fmt: str, *args: Any) -> None:
        with self.lock:
            self.n += 1
            now = time.monotonic()
            if now - self.last < self.every:
                return
            n, self.n, self.last = self.n, 0, now
        log.warning(fmt + " (%d time(s) in the last %.0f s)", *args, n, self.every)


def serve_wsgi(host: str, port: int, app: Any, max_connections: int, timeout: float) -> tuple[Any, threading.Thread]:
    """Serve ``app`` on ``host:port``: a thread per connection, at most ``max_connections`` at
    once (more get a 503 and are closed), each socket with ``timeout`` (a slow or idle client
    frees its thread), errors logged rate-limited without tracebacks. Returns (server, thread)."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    refusals, failures = _Throttle(), _Throttle()
    busy = busy_response("too many connections to the metrics listener", "scrape less often")

    class Handler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
            pass

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        block_on_close = False
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        request_queue_size = 128  # (socketserver's 5 drops a burst of connects: SYN retries of seconds)
        active = 0
        lock = threading.Lock()

        def process_request(self, request: Any, client_address: Any) -> None:
            with self.lock:
                ok = self.active < max_connections
                if ok:
                    self.active += 1
            if not ok:
                refusals.warn("metrics listener: refused a connection from %s: %d open", client_address[0],
                              max_connections)
                try:
                    request.sendall(busy)
                except OSError:
                    pass
                self.shutdown_request(request)
                return
            request.settimeout(timeout)
            try:
                super().process_request(request, client_address)
            except BaseException:
                with self.lock:
                    self.active -= 1
                raise

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            try:
                super().process_request_thread(request, client_address)
            finally:
                with self.lock:
                    self.active -= 1

        def handle_error(self, request: Any, client_address: Any) -> None:
            import sys

            failures.warn("metrics listener: a connection from %s failed: %s", client_address[0], sys.exc_info()[1])

    httpd = Server((host, port), Handler)
    httpd.set_app(app)
    thread = threading.Thread(target=httpd.serve_forever, name="ds01d-metrics", daemon=True)
    thread.start()
    return httpd, thread


def refusal_auditor(events: Any, listener: str) -> Callable[[int, dict, str], None]:
    """The audit of refused connections: one ``daemon.busy`` event per report window, with counts
    by uid (a flood is one event per window, not one per attempt)."""
    import pwd

    def audit(n: int, by_uid: dict, why: str) -> None:
        top = max(by_uid, key=lambda u: by_uid[u]) if by_uid else None
        try:
            name = pwd.getpwuid(top).pw_name if top is not None else None
        except KeyError:
            name = None
        events.emit("daemon.busy", user=name, uid=top, target=listener, result="denied", reason="busy",
                    data={"refused": n, "by_uid": {str(u): c for u, c in by_uid.items()}, "message": why})

    return audit


# -- the process -------------------------------------------------------------------------------
def raise_nofile_limit() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; returns (soft, hard) as they are now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as e:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, e)
    return soft, hard


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """asyncio logs a traceback each time ``accept`` fails for lack of file descriptors (and
    retries every second): log one line per 10 s instead; everything else as before."""
    throttle = _Throttle()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        msg = str(context.get("message", ""))
        if msg.startswith("socket.accept() out of system resource"):
            throttle.warn("accept failed: %s", context.get("exception"))
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
