"""Observability routes: thin wrappers over the status and usage services.

    GET /v1/status                 devices + holders + processes, capacity, queue, own containers/limits
    GET /v1/events                 ?since=2h&user=U&type=container,gpu&result=denied&limit=N
                                   (users: their own; admins: everyone's or ?user=U)
    GET /v1/usage                  ?since=30d&until=…&by=user|group|project&user=U
                                   (users: their own; admins: everyone's or ?user=U)
    GET /v1/admin/dashboard        admins: per-user totals, CPU/memory, near limits, lifecycle, charts
                                   (?stats=0)
"""

from __future__ import annotations

from aiohttp import web

from ds01.daemon.http import caller, in_thread, json_response, query, require_admin, target
from ds01.daemon.services import Services
from ds01.errors import InvalidInput


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


def _csv(text: str | None) -> list[str] | None:
    return [t.strip() for t in (text or "").split(",") if t.strip()] or None


def routes(s: Services) -> list[web.RouteDef]:
    ctx, status, usage = s.ctx, s.status, s.usage

    async def get_status(request: web.Request) -> web.Response:
        query(request, set())
        return json_response(await in_thread(status.status, caller(request)))

    async def get_events(request: web.Request) -> web.Response:
        q = query(request, {"since", "user", "type", "result", "limit", "all"})
        now = ctx.clock()
        since = _since(q.get("since"), now, now - 86400)
        who = caller(request)
        user = target(request, ctx, q["user"]) if q.get("user") else None
        limit = _int(q.get("limit"), 200, 1, 10000, "limit")
        types = _csv(q.get("type"))
        # container.exec (one per shell/command) is noise unless asked for: ?all=1 or by name
        hide = () if q.get("all") or (types and "container.exec" in types) else ("container.exec",)
        return json_response(await in_thread(status.events, who, since, user, types,
                                             _csv(q.get("result")), limit, hide))

    async def get_usage(request: web.Request) -> web.Response:
        q = query(request, {"since", "until", "by", "user", "all_users"})
        if q.get("all_users"):
            require_admin(request, ctx, "--all-users")
        now = ctx.clock()
        since = _since(q.get("since"), now, now - 30 * 86400)
        until = _since(q.get("until"), now, now) if q.get("until") else None
        user = target(request, ctx, q["user"]) if q.get("user") else None
        return json_response(await in_thread(usage.report, caller(request), since, until, q.get("by") or "user",
                                             user))

    async def get_dashboard(request: web.Request) -> web.Response:
        q = query(request, {"stats"})
        who = require_admin(request, ctx, "the admin dashboard")
        dash = await in_thread(status.dashboard, who, q.get("stats", "1") not in ("0", "false", ""))
        if s.charts is not None:  # admins see names: the sparklines and `dashboard --web`'s charts
            dash["charts"] = await in_thread(s.charts.view, False)
        return json_response(dash)

    return [
        web.get("/v1/status", get_status),
        web.get("/v1/events", get_events),
        web.get("/v1/usage", get_usage),
        web.get("/v1/admin/dashboard", get_dashboard),
    ]
