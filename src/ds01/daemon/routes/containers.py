"""Container routes: thin wrappers over :class:`ds01.services.containers.ContainerService`.

    POST /v1/containers                   create (201; 202 when queued)
    POST /v1/containers/deploy            create + start (200; 202 when queued)
    POST /v1/containers/{ref}/retire      stop + remove
    POST /v1/containers/{ref}/start|stop|remove
    GET  /v1/containers                   ?all_users=1 (admins) | ?user=U (admins), ?running=1
    GET  /v1/containers-stats             same scopes, one stats sample per running container
"""

from __future__ import annotations

from aiohttp import web

from ds01.daemon.http import caller, in_thread, json_response, parse, query, scope, target
from ds01.daemon.services import Services
from ds01.errors import InvalidInput
from ds01.models import api
from ds01.services.processes import refuse_if_working


def routes(s: Services) -> list[web.RouteDef]:
    ctx, svc = s.ctx, s.containers

    def list_scope(request: web.Request):
        return scope(request, ctx, query(request, {"all_users", "user", "running"}))

    async def create(request: web.Request) -> web.Response:
        body = await parse(request, api.CreateContainer)
        who = target(request, ctx, body.user)
        out = await in_thread(svc.create, caller(request), who, body.project, body.image, body.cpu_only,
                              body.gpu_request(), body.ports, body.queue)
        return json_response(out, status=202 if out.get("queued") else 201)

    async def deploy(request: web.Request) -> web.Response:
        body = await parse(request, api.DeployContainer)
        who = target(request, ctx, body.user)
        if body.cpu_only and body.gpu_request().kind != "none":
            raise InvalidInput("--cpu-only conflicts with a GPU request", "use one or the other")
        out = await in_thread(svc.deploy, caller(request), who, body.project, body.image,
                              body.gpu_request(), body.ports, body.queue)
        return json_response(out, status=202 if out.get("queued") else 200)

    async def retire(request: web.Request) -> web.Response:
        body = await parse(request, api.RetireContainer)
        who = target(request, ctx, body.user)
        if body.check_work:  # what it would kill, asked first (services/processes.py)
            await in_thread(refuse_if_working, svc, who, request.match_info["ref"], "container-retire")
        return json_response(await in_thread(svc.retire, caller(request), who, request.match_info["ref"],
                                             body.timeout))

    async def start(request: web.Request) -> web.Response:
        body = await parse(request, api.StartContainer)
        who = target(request, ctx, body.user)
        return json_response(await in_thread(svc.start, caller(request), who, request.match_info["ref"]))

    async def stop(request: web.Request) -> web.Response:
        body = await parse(request, api.StopContainer)
        who = target(request, ctx, body.user)
        if body.check_work:
            await in_thread(refuse_if_working, svc, who, request.match_info["ref"], "container-stop")
        out = await in_thread(svc.stop, caller(request), who, request.match_info["ref"], body.timeout)
        if out.get("gpus"):  # how long they stay reserved for a restart (then they are released)
            out["gpus_held_for"] = svc.limits_for(who).gpu_hold_after_stop
        return json_response(out)

    async def remove(request: web.Request) -> web.Response:
        body = await parse(request, api.RemoveContainer)
        who = target(request, ctx, body.user)
        return json_response(await in_thread(svc.remove, caller(request), who, request.match_info["ref"],
                                             body.force))

    async def list_(request: web.Request) -> web.Response:
        who = list_scope(request)
        running_only = bool(request.query.get("running"))
        return json_response(await in_thread(svc.list, who, not running_only))

    async def stats(request: web.Request) -> web.Response:
        return json_response(await in_thread(svc.stats, list_scope(request)))

    return [
        web.post("/v1/containers", create),
        web.post("/v1/containers/deploy", deploy),
        web.post("/v1/containers/{ref}/retire", retire),
        web.get("/v1/containers", list_),
        web.get("/v1/containers-stats", stats),
        web.post("/v1/containers/{ref}/start", start),
        web.post("/v1/containers/{ref}/stop", stop),
        web.post("/v1/containers/{ref}/remove", remove),
    ]
