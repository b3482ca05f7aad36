"""Lifecycle routes: thin wrappers over :class:`ds01.services.lifecycle.LifecycleService`.

    POST /v1/containers/{ref}/keepalive       postpone idle reclaim ({"seconds": N})
    GET  /v1/admin/exemptions                 admins; ?all=1 includes ended ones
    POST /v1/admin/exemptions                 admins: grant
    POST /v1/admin/exemptions/{id}/revoke     admins
"""

from __future__ import annotations

from aiohttp import web

from ds01.daemon.http import caller, in_thread, int_param, json_response, parse, query, require_admin, target
from ds01.daemon.services import Services
from ds01.models import api


def routes(s: Services) -> list[web.RouteDef]:
    ctx, lc = s.ctx, s.lifecycle

    async def keepalive(request: web.Request) -> web.Response:
        body = await parse(request, api.KeepAlive)
        who = target(request, ctx, body.user)
        return json_response(await in_thread(lc.keepalive, caller(request), who, request.match_info["ref"],
                                             body.seconds))

    async def list_exemptions(request: web.Request) -> web.Response:
        require_admin(request, ctx, "exemptions")
        return json_response(await in_thread(lc.exemptions, bool(query(request, {"all"}).get("all"))))

    async def grant(request: web.Request) -> web.Response:
        body = await parse(request, api.GrantExemption)
        admin = require_admin(request, ctx, "exemptions")
        return json_response(await in_thread(lc.exempt, admin, body.user, body.kind, body.seconds, body.reason),
                             status=201)

    async def revoke(request: web.Request) -> web.Response:
        admin = require_admin(request, ctx, "exemptions")
        ex_id = int_param(request.match_info["id"], "an exemption id", "'ds01 admin exempt --list' shows them")
        return json_response(await in_thread(lc.revoke, admin, ex_id))

    return [
        web.post("/v1/containers/{ref}/keepalive", keepalive),
        web.get("/v1/admin/exemptions", list_exemptions),
        web.post("/v1/admin/exemptions", grant),
        web.post("/v1/admin/exemptions/{id}/revoke", revoke),
    ]
