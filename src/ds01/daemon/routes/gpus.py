"""GPU routes: thin wrappers over :class:`ds01.services.gpus.GpuService`.

    GET  /v1/gpus                 the inventory with holders and utilization
    GET  /v1/limits               the caller's effective limits (?user=U admins)
    GET  /v1/queue                own waiting requests (?all_users=1 admins: everyone's)
    POST /v1/queue/{id}/cancel    cancel a waiting request
"""

from __future__ import annotations

from aiohttp import web

from ds01.daemon.http import caller, in_thread, int_param, json_response, query, target
from ds01.daemon.services import Services


def routes(s: Services) -> list[web.RouteDef]:
    ctx, gpu = s.ctx, s.gpu

    async def inventory(request: web.Request) -> web.Response:
        return json_response(await in_thread(gpu.inventory))

    async def limits(request: web.Request) -> web.Response:
        who = target(request, ctx, query(request, {"user"}).get("user"))
        return json_response(await in_thread(gpu.limits, who))

    async def queue(request: web.Request) -> web.Response:
        c = caller(request)
        # a user's query is not checked: only admins have a parameter here
        whose = None if (c.is_admin and query(request, {"all_users"}).get("all_users")) else c
        return json_response(await in_thread(gpu.queue, whose))

    async def cancel(request: web.Request) -> web.Response:
        qid = int_param(request.match_info["id"], "a queue id", "'gpu-queue' lists your waiting requests")
        return json_response(await in_thread(gpu.cancel, caller(request), qid))

    return [
        web.get("/v1/gpus", inventory),
        web.get("/v1/limits", limits),
        web.get("/v1/queue", queue),
        web.post("/v1/queue/{id}/cancel", cancel),
    ]
