"""Observability routes (issue 7): thin wrappers over the status and usage services.

    GET /v1/status                 devices + holders + processes, capacity, queue, own containers/limits
    GET /v1/events                 ?since=2h&user=U&type=container,gpu&result=denied&limit=N
                                   (users: their own; admins: everyone's or ?user=U)
    GET /v1/usage                  ?since=30d&until=…&by=user|group|project&user=U
                                   (users: their own; admins: everyone's or ?user=U)
    GET /v1/admin/dashboard        admins: per-user totals, CPU/memory, near limits, lifecycle (?stats=0)

``register`` also installs the Prometheus registry (``app[METRICS]``), its API-latency middleware
(outermost, so it times refusals too) and the event-log listener that feeds lifecycle counters.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ds01.daemon.app import Api, caller, json_response, query
from ds01.daemon.metrics import Metrics
from ds01.errors import InvalidInput
from ds01.services.status import StatusService
from ds01.services.usage import UsageService

METRICS = web.AppKey("metrics", Metrics)
STATUS = web.AppKey("status", StatusService)
USAGE = web.AppKey("usage", UsageService)



def _since(text: str | None, now: float, default: float | None) -> float:
    from ds01.policy.usage import parse_since

    try:
        return parse_since(text, now, default)
    except ValueError as e:
        raise InvalidInput(str(e)) from None


def _int(text: str | None, default: int, lo: int, hi: int, what: str) -> int:
    if text is None or text == "":
        return default
    try:
        v = int(text)
    except ValueError:
        raise InvalidInput(f"{what} must be a whole number") from None
    if not lo <= v <= hi:
        raise InvalidInput(f"{what} must be between {lo} and {hi}")
    return v


def register(app: web.Application, a: Api) -> None:
    status = StatusService(a.containers, a.gpu)
    usage = UsageService(a.ctx, a.containers)
    metrics = Metrics(a, status)
    app[STATUS] = status
    app[USAGE] = usage
    app[METRICS] = metrics
    a.ctx.events.listeners.append(metrics.on_event)
    app.middlewares.insert(0, metrics.middleware())

    async def _precreate(app: web.Application) -> None:
        metrics.precreate_endpoints(app)

    app.on_startup.append(_precreate)

    async def get_status(request: web.Request) -> web.Response:
        query(request, set())
        return json_response(await a.run(status.status, caller(request)))

    async def get_events(request: web.Request) -> web.Response:
        q = query(request, {"since", "user", "type", "result", "limit"})
        now = a.ctx.clock()
        since = _since(q.get("since"), now, now - 86400)
        who = caller(request)
        user = a.target(request, q["user"]) if q.get("user") else None
        types = [t.strip() for t in (q.get("type") or "").split(",") if t.strip()] or None
        results = [t.strip() for t in (q.get("result") or "").split(",") if t.strip()] or None
        limit = _int(q.get("limit"), 200, 1, 10000, "limit")
        return json_response(await a.run(status.events, who, since, user, types, results, limit))

    async def get_usage(request: web.Request) -> web.Response:
        q = query(request, {"since", "until", "by", "user"})
        now = a.ctx.clock()
        since = _since(q.get("since"), now, now - 30 * 86400)
        until = _since(q.get("until"), now, now) if q.get("until") else None
        user = a.target(request, q["user"]) if q.get("user") else None
        return json_response(await a.run(usage.report, caller(request), since, until, q.get("by") or "user", user))

    async def get_dashboard(request: web.Request) -> web.Response:
        q = query(request, {"stats"})
        who = caller(request)
        if not who.is_admin:
            raise a._admin_only("the admin dashboard")
        return json_response(await a.run(status.dashboard, who, q.get("stats", "1") not in ("0", "false", "")))

    app.add_routes([
        web.get("/v1/status", get_status),
        web.get("/v1/events", get_events),
        web.get("/v1/usage", get_usage),
        web.get("/v1/admin/dashboard", get_dashboard),
    ])


class Observability:
    """The daemon's TCP listeners for people and Prometheus, plus the usage sampler.
    Started by ``serve()`` after the API socket is up; each part failing to bind is logged only."""

    def __init__(self, app: web.Application, a: Api):
        from ds01.daemon.web import StatusPage

        self.app = app
        self.api = a
        cfg = a.ctx.config.observability
        self.cfg = cfg
        self.page = StatusPage(app[STATUS], cfg.web)
        self._sampler: asyncio.Task | None = None

    async def start(self, interval: float) -> None:
        import asyncio

        await asyncio.to_thread(self.app[METRICS].start, self.cfg.metrics.listen)
        await self.page.start(self.cfg.web.listen)
        self._sampler = asyncio.create_task(self._sample(max(5.0, min(interval, 60.0))))

    async def _sample(self, interval: float) -> None:
        import asyncio
        import logging

        while True:
            try:
                await asyncio.to_thread(self.app[USAGE].sample_peaks)
            except Exception:
                logging.getLogger("ds01d").exception("usage sampling failed")
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        import asyncio

        if self._sampler is not None:
            self._sampler.cancel()
            try:
                await self._sampler
            except (asyncio.CancelledError, Exception):
                pass
        await self.page.stop()
        await asyncio.to_thread(self.app[METRICS].stop)
