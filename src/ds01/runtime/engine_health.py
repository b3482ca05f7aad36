"""The engine's health as the daemon sees it: bounded waits, a clear error when it does not answer,
and the outages it noticed (issue 16).

Every request to the engine goes through :func:`install`'s wrapper of the client's
``requests.Session.send``:

* a quick read (an inspect, a list; a GET) waits ``quick`` seconds for the engine's answer, a
  change (create, start, remove; any other method) ``slow`` seconds; a request that set its own
  timeout (a build: none; a stop: its grace plus the default) keeps it. A stream's long life is
  unaffected: docker-py drops the socket's timeout once a streaming answer has begun (logs,
  archives), an exec socket is the relay's, a build sets none.
* a change after more than :data:`PROBE_AFTER` seconds without an answer is preceded by a ping
  (quick), so a hung engine is reported in seconds, not after the change's long wait;
* a refused connection, a broken one or an expired wait is :class:`~ds01.errors.EngineUnavailable`
  ("the container engine is not answering", exit code 10), never an internal error.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

from ds01.errors import EngineUnavailable

NOT_ANSWERING = "the container engine is not answering"
HINT = ("it may be stopped or restarting; try again in a minute, and if it persists ask an admin to "
        "check the Docker engine (systemctl status docker)")
CONNECT = 2.0  # a local socket connects at once when anyone listens
PROBE_AFTER = 2.0
# GETs that take long by nature (stats waits for a second sample, top runs ps, df sums every
# layer; archives, exports and logs stream; search and distribution ask a registry)
SLOW_GETS = ("/stats", "/top", "/system/df", "/archive", "/export", "/get", "/logs", "/events", "/changes",
             "/images/search", "/json/size")
OUTAGES_KEPT = 16
PROBE_EVERY = 1.0  # while the engine is away: how often it is asked whether it is back


def engine_down(detail: str = "") -> EngineUnavailable:
    msg = NOT_ANSWERING + (f" ({detail})" if detail else "")
    return EngineUnavailable(msg, HINT)


def request_timeout(method: str, path: str, timeout: Any, default: Any, quick: float,
                    slow: float) -> Any:
    """The timeout one engine request gets: its own when it set one, else (connect, answer) with
    the quick answer wait for reads and the slow one for changes and slow reads."""
    if timeout is not default and timeout != default:
        return timeout
    path, _, query = path.partition("?")
    if "size=1" in query or "size=true" in query.lower():  # an inspect that sums the layer's files
        path += "/size"
    if method in ("GET", "HEAD") and not path.endswith(SLOW_GETS) and "/distribution/" not in path:
        return (CONNECT, quick)
    return (CONNECT, slow)


class EngineHealth:
    """When the engine last answered, and the outages this daemon saw: ``(last answer before,
    first answer after)`` in wall time, the last :data:`OUTAGES_KEPT` of them."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self._lock = threading.Lock()
        self.last_ok = 0.0  # monotonic
        self._last_ok_wall = 0.0
        self.down_since: float | None = None  # wall time of the last answer before the outage
        self.outages: list[tuple[float, float]] = []
        # asks the engine (a ping): while it is away, a thread does every PROBE_EVERY, so the
        # outage's end is when it answers again, not the next request's time
        self.probe: Callable[[], Any] | None = None
        self._probing = False

    def answered(self) -> None:
        with self._lock:
            self.last_ok, self._last_ok_wall = time.monotonic(), self.clock()
            if self.down_since is not None:
                self.outages = [*self.outages, (self.down_since, self._last_ok_wall)][-OUTAGES_KEPT:]
                self.down_since = None

    def failed(self) -> None:
        with self._lock:
            if self.down_since is None:
                self.down_since = self._last_ok_wall or self.clock()
            start, self._probing = self.probe is not None and not self._probing, True
        if start:
            threading.Thread(target=self._until_back, name="ds01d-engine-probe", daemon=True).start()

    def _until_back(self) -> None:
        try:
            while self.down_since is not None:
                time.sleep(PROBE_EVERY)
                try:
                    self.probe()  # type: ignore[misc]
                except Exception:
                    pass
        finally:
            with self._lock:
                self._probing = False

    def stale(self) -> bool:
        return time.monotonic() - self.last_ok > PROBE_AFTER


def install(api: Any, health: EngineHealth, quick: float, slow: float) -> None:
    """Wrap ``api`` (a docker-py ``APIClient``, a ``requests.Session``) so that every request gets
    its bounded wait and an engine that does not answer raises :class:`EngineUnavailable`."""
    import requests

    broken = (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
              requests.exceptions.ChunkedEncodingError, OSError)
    send = api.send
    default = api.timeout

    def guarded_send(request: Any, **kw: Any) -> Any:
        method = (request.method or "GET").upper()
        path = request.path_url or ""
        kw["timeout"] = request_timeout(method, path, kw.get("timeout", default), default, quick, slow)
        if method not in ("GET", "HEAD") and health.stale() and not path.endswith("/_ping"):
            probe = api.prepare_request(requests.Request("GET", api.base_url + "/_ping"))
            guarded_send(probe, timeout=(CONNECT, quick))
        try:
            resp = send(request, **kw)
        except broken as e:
            health.failed()
            raise engine_down(_why(e)) from None
        health.answered()
        return resp

    api.send = guarded_send
    health.probe = lambda: guarded_send(api.prepare_request(requests.Request("GET", api.base_url + "/_ping")),
                                        timeout=(CONNECT, quick)).close()


def _why(e: BaseException) -> str:
    import requests

    if isinstance(e, requests.exceptions.Timeout):
        return "no answer in time"
    text = str(e).lower()
    if "refused" in text or "no such file" in text:
        return "connection refused"
    return "connection lost"


def engine_started_at(pidfile: str = "/var/run/docker.pid") -> float | None:
    """When the local engine's process started (wall time), from its pid file and /proc; None
    where that cannot be told (a remote engine, no pid file, another /proc)."""
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/stat") as f:
            # the fields after the command (which may hold spaces) start at the last ')'
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
