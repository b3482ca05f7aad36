"""Image routes (issue 3): thin wrappers over :class:`ds01.services.images.ImageService`.

    GET  /v1/images                       own images (?all_users=1 admins, ?user=U admins)
    GET  /v1/images-catalog               catalog rows marked runnable/default (?framework=F)
    GET  /v1/images-select                base image for image-create (?framework=F[==VER])
    GET  /v1/images/{project}             one own image (?user=U admins)
    POST /v1/images/{project}/build       NDJSON stream: {"stream": …}* then {"result": …} | {"error": …}
    POST /v1/images/{project}/delete      {"force": bool, "user": U}
    POST /v1/admin/base-image/bootstrap   NDJSON stream, admins only

Streaming: everything that can refuse a build (context, policy, limits) runs before the response
starts, so those refusals are ordinary HTTP errors; after that, failures arrive as a final
``{"error": …}`` line. A client that goes away cancels its build.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from ds01.daemon.app import Api, caller, json_response, parse, query
from ds01.errors import DS01Error
from ds01.models import api as models
from ds01.services.images import ImageService

log = logging.getLogger("ds01d")
IMAGES = web.AppKey("images", ImageService)



async def stream_ndjson(request: web.Request, items: Iterator[dict], cancel: threading.Event | None = None
                        ) -> web.StreamResponse:
    """Run the blocking generator ``items`` in a worker thread and write each item as a JSON
    line. A DS01Error it raises becomes the last line ``{"error": …}``."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict | None] = asyncio.Queue()

    def put(item: dict | None) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def pump() -> None:
        try:
            for item in items:
                put(item)
        except DS01Error as e:
            put({"error": e.to_dict()})
        except Exception:
            log.exception("internal error in a streamed request %s", request.path)
            put({"error": DS01Error("internal error in ds01d", "an admin can find the details in the daemon log")
                 .to_dict()})
        finally:
            put(None)

    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    worker = loop.run_in_executor(None, pump)
    gone = False
    try:
        while (item := await queue.get()) is not None:
            if gone:
                continue  # keep draining so the worker can finish (and free its slot)
            try:
                await resp.write(json.dumps(item, default=str).encode() + b"\n")
            except (ConnectionError, RuntimeError):
                gone = True
                if cancel is not None:
                    cancel.set()
    except asyncio.CancelledError:
        if cancel is not None:
            cancel.set()
        raise
    finally:
        await asyncio.shield(worker)
    if not gone:
        try:
            await resp.write_eof()
        except (ConnectionError, RuntimeError):
            pass
    return resp


class ImageRoutes:
    def __init__(self, api: Api, images: ImageService):
        self.api = api
        self.images = images

    def _scope(self, request: web.Request, q: dict[str, str]):
        if q.get("all_users"):
            if not caller(request).is_admin:
                raise self.api._admin_only("--all-users")
            return None
        return self.api.target(request, q.get("user"))

    async def list(self, request: web.Request) -> web.Response:
        scope = self._scope(request, query(request, {"all_users", "user"}))
        return json_response(await self.api.run(self.images.list, scope))

    async def catalog(self, request: web.Request) -> web.Response:
        q = query(request, {"framework"})
        return json_response(await self.api.run(self.images.catalog, q.get("framework")))

    async def select(self, request: web.Request) -> web.Response:
        q = query(request, {"framework"})
        return json_response(await self.api.run(self.images.select_base, q.get("framework")))

    async def get(self, request: web.Request) -> web.Response:
        who = self.api.target(request, query(request, {"user"}).get("user"))
        return json_response(await self.api.run(self.images.get, who, request.match_info["project"]))

    async def build(self, request: web.Request) -> web.StreamResponse:
        body = await parse(request, models.BuildImage)
        who = self.api.target(request, body.user)
        plan = await self.api.run(self.images.prepare_build, caller(request), who, request.match_info["project"],
                                  body.no_cache)
        cancel = threading.Event()
        return await stream_ndjson(request, self.images.run_build(plan, cancel), cancel)

    async def delete(self, request: web.Request) -> web.Response:
        body = await parse(request, models.DeleteImage)
        who = self.api.target(request, body.user)
        return json_response(await self.api.run(self.images.delete, caller(request), who,
                                                request.match_info["project"], body.force))

    async def bootstrap(self, request: web.Request) -> web.StreamResponse:
        body = await parse(request, models.BootstrapBaseImage)
        gen = self.images.bootstrap(caller(request), body.suite, body.tag, body.force)
        # Run the checks (admin, names, already there) before the stream starts, so a refusal
        # is a plain HTTP error: pull the first item in a worker thread.
        first = await self.api.run(_first, gen)
        return await stream_ndjson(request, _chain(first, gen))


def _first(gen: Iterator[dict]) -> Any:
    return next(gen, None)


def _chain(first: Any, gen: Iterator[dict]) -> Iterator[dict]:
    if first is not None:
        yield first
        yield from gen


def register(app: web.Application, api: Api) -> None:
    """Add the image routes (called from ``build_app``)."""
    images = api.images
    app[IMAGES] = images
    r = ImageRoutes(api, images)
    app.add_routes([
        web.get("/v1/images", r.list),
        web.get("/v1/images-catalog", r.catalog),
        web.get("/v1/images-select", r.select),
        web.get("/v1/images/{project}", r.get),
        web.post("/v1/images/{project}/build", r.build),
        web.post("/v1/images/{project}/delete", r.delete),
        web.post("/v1/admin/base-image/bootstrap", r.bootstrap),
    ])
