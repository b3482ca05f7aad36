"""Image routes: thin wrappers over :class:`ds01.services.images.ImageService`.

    GET  /v1/images                       own images (?all_users=1 admins, ?user=U admins)
    GET  /v1/images-catalog               catalog rows marked runnable/default (?framework=F)
    GET  /v1/images-select                base image for image-create (?framework=F[==VER])
    GET  /v1/images/{project}             one own image (?user=U admins)
    POST /v1/images/{project}/build       NDJSON stream of what the service yields, then
                                          {"result": …} | {"error": …}
    POST /v1/images/{project}/delete      {"force": bool, "user": U}
    POST /v1/admin/base-image/bootstrap   NDJSON stream, admins only

Streaming: everything that can refuse a build (context, policy, limits) runs before the response
starts, so those refusals are ordinary HTTP errors; after that, failures arrive as a final
``{"error": …}`` line. A client that goes away cancels its build. The build stream is passed
through as the service yields it (the route knows nothing of its items' shape).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from ds01.daemon.http import caller, in_thread, json_response, parse, query, scope, stream_ndjson, target
from ds01.daemon.services import Services
from ds01.models import api


def routes(s: Services) -> list[web.RouteDef]:
    ctx, images = s.ctx, s.images

    async def list_(request: web.Request) -> web.Response:
        whose = scope(request, ctx, query(request, {"all_users", "user"}))
        return json_response(await in_thread(images.list, whose))

    async def catalog(request: web.Request) -> web.Response:
        q = query(request, {"framework"})
        return json_response(await in_thread(images.catalog, q.get("framework")))

    async def select(request: web.Request) -> web.Response:
        q = query(request, {"framework"})
        return json_response(await in_thread(images.select_base, q.get("framework")))

    async def get(request: web.Request) -> web.Response:
        who = target(request, ctx, query(request, {"user"}).get("user"))
        return json_response(await in_thread(images.get, who, request.match_info["project"]))

    async def build(request: web.Request) -> web.StreamResponse:
        body = await parse(request, api.BuildImage)
        who = target(request, ctx, body.user)
        plan = await in_thread(images.prepare_build, caller(request), who, request.match_info["project"],
                               body.no_cache)
        cancel = threading.Event()
        return await stream_ndjson(request, images.run_build(plan, cancel), cancel)

    async def delete(request: web.Request) -> web.Response:
        body = await parse(request, api.DeleteImage)
        who = target(request, ctx, body.user)
        return json_response(await in_thread(images.delete, caller(request), who, request.match_info["project"],
                                             body.force))

    async def bootstrap(request: web.Request) -> web.StreamResponse:
        body = await parse(request, api.BootstrapBaseImage)
        gen = images.bootstrap(caller(request), body.suite, body.tag, body.force)
        # Run the checks (admin, names, already there) before the stream starts, so a refusal
        # is a plain HTTP error: pull the first item in a worker thread.
        first = await in_thread(next, gen, None)
        return await stream_ndjson(request, _chain(first, gen))

    return [
        web.get("/v1/images", list_),
        web.get("/v1/images-catalog", catalog),
        web.get("/v1/images-select", select),
        web.get("/v1/images/{project}", get),
        web.post("/v1/images/{project}/build", build),
        web.post("/v1/images/{project}/delete", delete),
        web.post("/v1/admin/base-image/bootstrap", bootstrap),
    ]


def _chain(first: Any, gen: Iterator[dict]) -> Iterator[dict]:
    if first is not None:
        yield first
        yield from gen
