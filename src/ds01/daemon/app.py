"""The HTTP/JSON API on the Unix socket: thin routes over the services layer.

Routes parse the body into an ``extra="forbid"`` model, take the caller from SO_PEERCRED, call one
service method in a worker thread, and return JSON. Errors become ``{"error": {code, message,
hint}}`` with the HTTP status of their class; every refused change is also an event.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Awaitable, Callable, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from ds01 import __version__
from ds01.daemon.auth import peer_credentials
from ds01.errors import DS01Error, InvalidInput
from ds01.models import api
from ds01.services.containers import ContainerService
from ds01.services.context import Context
from ds01.services.identity import Caller, caller_from_uid, target_of

log = logging.getLogger("ds01d")
M = TypeVar("M", bound=BaseModel)

CALLER = web.AppKey("caller_fn", object)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))


def error_response(e: DS01Error) -> web.Response:
    return json_response({"error": e.to_dict()}, status=e.http_status)


async def parse(request: web.Request, model: type[M]) -> M:
    if not request.can_read_body:
        raw = b"{}"
    else:
        raw = await request.read()
    try:
        data = json.loads(raw or b"{}")
    except ValueError as e:
        raise InvalidInput(f"the request body is not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise InvalidInput("the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise InvalidInput("invalid request: " + validation_summary(e)) from None


def validation_summary(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"]) or "body"
        msg = "unknown field (not part of the API)" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{key}: {msg}")
    return "; ".join(parts)


def query(request: web.Request, allowed: set[str]) -> dict[str, str]:
    """The query parameters, refusing any the endpoint does not know (like unknown body fields)."""
    unknown = set(request.query) - allowed
    if unknown:
        raise InvalidInput(f"unknown query parameter(s): {', '.join(sorted(unknown))}")
    return dict(request.query)


def caller(request: web.Request) -> Caller:
    return request["caller"]


class Api:
    def __init__(self, ctx: Context):
        from ds01.services.gpus import GpuService
        from ds01.services.images import ImageService

        self.ctx = ctx
        self.images = ImageService(ctx)
        self.containers = ContainerService(ctx, on_release=self.kick, images=self.images)
        self.images.containers = self.containers
        self.gpu = GpuService(self.containers)
        from ds01.services.lifecycle import LifecycleService

        self.lifecycle = LifecycleService(ctx, self.containers)
        self.wakeup: asyncio.Event | None = None  # set by the daemon's loop; kick() wakes it

    def kick(self) -> None:
        """Devices were released: wake the periodic loop so the queue is served now, not at the
        next tick. Called from worker threads."""
        if self.wakeup is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self.wakeup.set)

    loop: asyncio.AbstractEventLoop | None = None

    # -- plumbing --------------------------------------------------------------------------
    @web.middleware
    async def middleware(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        try:
            _pid, uid, gid = peer_credentials(request)
            request["caller"] = await asyncio.to_thread(caller_from_uid, uid, gid, self.ctx.config.admin_group)
            return await handler(request)
        except DS01Error as e:
            self._audit_refusal(request, e)
            return error_response(e)
        except web.HTTPRequestEntityTooLarge:
            e2 = InvalidInput(f"the request body is larger than {self.ctx.config.daemon.max_body} bytes")
            self._audit_refusal(request, e2)
            return error_response(e2)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("internal error handling %s %s", request.method, request.path)
            return error_response(DS01Error("internal error in ds01d", "an admin can find the details in the daemon log"))

    def _audit_refusal(self, request: web.Request, e: DS01Error) -> None:
        # Every refused change is an event; a read is one only when it was a permission or policy
        # denial (someone asking for what is not theirs), not a typo'd name.
        if request.method == "GET" and e.http_status != 403:
            return
        c = request.get("caller")
        try:
            self.ctx.events.emit(f"api.{request.method.lower()}", user=c.name if c else None,
                                 uid=c.uid if c else None, target=request.path,
                                 result="denied" if e.http_status < 500 else "error", reason=e.code,
                                 data={"message": e.message})
        except Exception:  # auditing must never turn a clean refusal into a crash
            log.exception("could not record an event")

    def target(self, request: web.Request, user: str | None) -> Caller:
        return target_of(caller(request), user, self.ctx.config.admin_group)

    async def run(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kw)

    # -- routes ----------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        return json_response({"ok": True, "version": __version__, "instance": self.ctx.instance})

    async def whoami(self, request: web.Request) -> web.Response:
        return json_response(caller(request).to_dict())

    async def create_container(self, request: web.Request) -> web.Response:
        body = await parse(request, api.CreateContainer)
        who = self.target(request, body.user)
        out = await self.run(self.containers.create, caller(request), who, body.project, body.image, body.cpu_only,
                             body.gpu_request(), body.ports, body.queue)
        return json_response(out, status=202 if out.get("queued") else 201)

    async def deploy_container(self, request: web.Request) -> web.Response:
        body = await parse(request, api.DeployContainer)
        who = self.target(request, body.user)
        if body.cpu_only and body.gpu_request().kind != "none":
            raise InvalidInput("--cpu-only conflicts with a GPU request", "use one or the other")
        out = await self.run(self.containers.deploy, caller(request), who, body.project, body.image,
                             body.gpu_request(), body.ports, body.queue)
        return json_response(out, status=202 if out.get("queued") else 200)

    async def retire_container(self, request: web.Request) -> web.Response:
        body = await parse(request, api.RetireContainer)
        who = self.target(request, body.user)
        return json_response(
            await self.run(self.containers.retire, caller(request), who, request.match_info["ref"], body.timeout))

    async def gpus(self, request: web.Request) -> web.Response:
        return json_response(await self.run(self.gpu.inventory))

    async def limits(self, request: web.Request) -> web.Response:
        who = self.target(request, query(request, {"user"}).get("user"))
        return json_response(await self.run(self.gpu.limits, who))

    async def queue(self, request: web.Request) -> web.Response:
        c = caller(request)
        scope = None if (c.is_admin and query(request, {"all_users"}).get("all_users")) else c
        return json_response(await self.run(self.gpu.queue, scope))

    async def queue_cancel(self, request: web.Request) -> web.Response:
        try:
            qid = int(request.match_info["id"])
        except ValueError:
            raise InvalidInput("a queue id is a number", "'gpu-queue' lists your waiting requests") from None
        out = await self.run(self.gpu.cancel, caller(request), qid)
        return json_response(out)

    async def start_container(self, request: web.Request) -> web.Response:
        body = await parse(request, api.StartContainer)
        who = self.target(request, body.user)
        return json_response(await self.run(self.containers.start, caller(request), who, request.match_info["ref"]))

    async def stop_container(self, request: web.Request) -> web.Response:
        body = await parse(request, api.StopContainer)
        who = self.target(request, body.user)
        return json_response(
            await self.run(self.containers.stop, caller(request), who, request.match_info["ref"], body.timeout))

    async def remove_container(self, request: web.Request) -> web.Response:
        body = await parse(request, api.RemoveContainer)
        who = self.target(request, body.user)
        return json_response(
            await self.run(self.containers.remove, caller(request), who, request.match_info["ref"], body.force))

    def _list_scope(self, request: web.Request) -> Caller | None:
        q = query(request, {"all_users", "user", "running"})
        c = caller(request)
        if q.get("all_users"):
            if not c.is_admin:
                raise self._admin_only("--all-users")
            return None
        return self.target(request, q.get("user"))

    def _admin_only(self, what: str) -> DS01Error:
        from ds01.errors import PermissionDenied

        return PermissionDenied(f"{what} is for admins only",
                                f"admins are root and members of '{self.ctx.config.admin_group}'")

    async def list_containers(self, request: web.Request) -> web.Response:
        scope = self._list_scope(request)
        running_only = bool(request.query.get("running"))
        return json_response(await self.run(self.containers.list, scope, not running_only))

    async def container_stats(self, request: web.Request) -> web.Response:
        scope = self._list_scope(request)
        return json_response(await self.run(self.containers.stats, scope))

    async def keepalive_container(self, request: web.Request) -> web.Response:
        body = await parse(request, api.KeepAlive)
        who = self.target(request, body.user)
        return json_response(
            await self.run(self.lifecycle.keepalive, caller(request), who, request.match_info["ref"], body.seconds))

    async def list_exemptions(self, request: web.Request) -> web.Response:
        if not caller(request).is_admin:
            raise self._admin_only("exemptions")
        return json_response(await self.run(self.lifecycle.exemptions, bool(query(request, {"all"}).get("all"))))

    async def grant_exemption(self, request: web.Request) -> web.Response:
        body = await parse(request, api.GrantExemption)
        if not caller(request).is_admin:
            raise self._admin_only("exemptions")
        return json_response(await self.run(self.lifecycle.exempt, caller(request), body.user, body.kind,
                                            body.seconds, body.reason), status=201)

    async def revoke_exemption(self, request: web.Request) -> web.Response:
        if not caller(request).is_admin:
            raise self._admin_only("exemptions")
        try:
            ex_id = int(request.match_info["id"])
        except ValueError:
            raise InvalidInput("an exemption id is a number", "'ds01 admin exempt --list' shows them") from None
        return json_response(await self.run(self.lifecycle.revoke, caller(request), ex_id))

    async def exec_container(self, request: web.Request) -> web.StreamResponse:
        from ds01.daemon.exec_stream import serve_exec

        return await serve_exec(self, request)


def build_app(ctx: Context) -> web.Application:
    a = Api(ctx)
    app = web.Application(middlewares=[a.middleware], client_max_size=ctx.config.daemon.max_body)
    app["api"] = a
    app.add_routes([
        web.get("/v1/health", a.health),
        web.get("/v1/whoami", a.whoami),
        web.post("/v1/containers", a.create_container),
        web.post("/v1/containers/deploy", a.deploy_container),
        web.post("/v1/containers/{ref}/retire", a.retire_container),
        web.get("/v1/gpus", a.gpus),
        web.get("/v1/limits", a.limits),
        web.get("/v1/queue", a.queue),
        web.post("/v1/queue/{id}/cancel", a.queue_cancel),
        web.get("/v1/containers", a.list_containers),
        web.get("/v1/containers-stats", a.container_stats),
        web.post("/v1/containers/{ref}/start", a.start_container),
        web.post("/v1/containers/{ref}/stop", a.stop_container),
        web.post("/v1/containers/{ref}/remove", a.remove_container),
        web.get("/v1/containers/{ref}/exec", a.exec_container),
        web.post("/v1/containers/{ref}/keepalive", a.keepalive_container),
        web.get("/v1/admin/exemptions", a.list_exemptions),
        web.post("/v1/admin/exemptions", a.grant_exemption),
        web.post("/v1/admin/exemptions/{id}/revoke", a.revoke_exemption),
    ])
    from ds01.daemon.routes_images import register as register_images

    register_images(app, a)
    from ds01.daemon.routes_status import register as register_status

    register_status(app, a)
    return app
