"""Image pull and housekeeping routes (issue 17): thin wrappers over ``services.pulls`` and
``services.image_admin``.

    POST /v1/images-pull              {"ref"}: NDJSON progress of the one shared pull, then
                                      {"pulled": …} | {"error": …}
    POST /v1/admin/images/pull        {"refs", "defaults"}: NDJSON, admins only
    GET  /v1/admin/images/usage       every image on the host with its use, admins only
    POST /v1/admin/images/prune       {"unused_for", "dry_run", "only"}, admins only

The policy checks (``images.allowed``, whose image it is) run before the stream starts, so a
refusal is a plain HTTP error.
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web

from ds01.daemon.http import caller, in_thread, json_response, parse, require_admin, stream_ndjson
from ds01.daemon.services import Services
from ds01.models import api


def _chain(first: dict | None, rest: Iterator[dict]) -> Iterator[dict]:
    if first is not None:
        yield first
    yield from rest


def routes(s: Services) -> list[web.RouteDef]:
    ctx, images = s.ctx, s.images

    def _checked(who, ref: str) -> None:
        from ds01.images.catalog import check_image_allowed

        check_image_allowed(ref, ctx.config.images.allowed)
        images.check_use(who, ref)  # DS01's namespace: only the caller's own (as if missing)

    async def pull(request: web.Request) -> web.StreamResponse:
        body = await parse(request, api.PullImage)
        who = caller(request)
        await in_thread(_checked, who, body.ref)
        gen = images.pulls.ensure(who, body.ref)
        first = await in_thread(next, gen, None)  # starts (or joins) the pull; errors before the stream
        return await stream_ndjson(request, _chain(first, gen))

    async def admin_pull(request: web.Request) -> web.StreamResponse:
        body = await parse(request, api.AdminPullImages)
        who = require_admin(request, ctx, "pulling images for the lab")
        gen = images.housekeeping.pull(who, body.refs, body.defaults)
        first = await in_thread(next, gen, None)
        return await stream_ndjson(request, _chain(first, gen))

    async def usage(request: web.Request) -> web.Response:
        require_admin(request, ctx, "listing every image")
        return json_response({"images": await in_thread(images.housekeeping.usage)})

    async def prune(request: web.Request) -> web.Response:
        body = await parse(request, api.PruneImages)
        who = require_admin(request, ctx, "pruning images")
        return json_response(await in_thread(images.housekeeping.prune, who, body.unused_for, body.dry_run,
                                             body.only))

    return [
        web.post("/v1/images-pull", pull),
        web.post("/v1/admin/images/pull", admin_pull),
        web.get("/v1/admin/images/usage", usage),
        web.post("/v1/admin/images/prune", prune),
    ]
