"""The HTTP helpers every route module shares: request parsing, query checks, JSON and NDJSON
responses, the caller and admin guards, and the identity/audit middleware.

Routes parse the body into an ``extra="forbid"`` model, take the caller from SO_PEERCRED (set on
the request by :func:`api_middleware`), call one service method in a worker thread, and return
JSON. Errors become ``{"error": {code, message, hint}}`` with the HTTP status of their class; every
refused change is also an event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any, Awaitable, Callable, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from ds01.daemon.auth import peer_credentials
from ds01.errors import DS01Error, InvalidInput, PermissionDenied
from ds01.services.context import Context
from ds01.services.identity import Caller, caller_from_uid, target_of

log = logging.getLogger("ds01d")
M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CALLER = web.RequestKey("caller", Caller)
CONTEXT = web.RequestKey("context", Context)  # for helpers that audit (stream_ndjson)


# -- responses ---------------------------------------------------------------------------------
def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))


def error_response(e: DS01Error) -> web.Response:
    return json_response({"error": e.to_dict()}, status=e.http_status)


def internal_error() -> DS01Error:
    return DS01Error("internal error in ds01d", "an admin can find the details in the daemon log")


async def stream_ndjson(request: web.Request, items: Iterator[dict], cancel: threading.Event | None = None
                        ) -> web.StreamResponse:
    """Run the blocking generator ``items`` in a worker thread and write each item as a JSON
    line, as it comes. A DS01Error it raises becomes the last line ``{"error": …}``; a client that
    goes away sets ``cancel`` (the generator's producer stops early)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict | None] = asyncio.Queue()

    def put(item: dict | None) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def pump() -> None:
        try:
            for item in items:
                put(item)
        except DS01Error as e:
            ctx = request.get(CONTEXT)
            if ctx is not None and e.http_status == 403:  # a refusal after the stream began: audited too
                audit_refusal(ctx, request, e)
            put({"error": e.to_dict()})
        except Exception:
            log.exception("internal error in a streamed request %s", request.path)
            put({"error": internal_error().to_dict()})
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


# -- requests ----------------------------------------------------------------------------------
async def parse(request: web.Request, model: type[M]) -> M:
    """The JSON body as ``model`` (an empty body is ``{}``); anything else is InvalidInput."""
    raw = await request.read() if request.can_read_body else b"{}"
    try:
        data = json.loads(raw or b"{}")
    except ValueError as e:
        raise InvalidInput(f"the request body is not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise InvalidInput("the request body must be a JSON object")
    return validate(model, data, "invalid request: ")


def validate(model: type[M], data: Any, prefix: str) -> M:
    try:
        return model.model_validate_json(data) if isinstance(data, (str, bytes)) else model.model_validate(data)
    except ValidationError as e:
        raise InvalidInput(prefix + validation_summary(e)) from None


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


def int_param(text: str, what: str, hint: str) -> int:
    """A numeric path segment (a queue or exemption id)."""
    try:
        return int(text)
    except ValueError:
        raise InvalidInput(f"{what} is a number", hint) from None


async def in_thread(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """Services block (Docker, SQLite, NVML): every call runs in a worker thread."""
    return await asyncio.to_thread(fn, *args, **kw)


# -- who -------------------------------------------------------------------------------------
def caller(request: web.Request) -> Caller:
    return request[CALLER]


def target(request: web.Request, ctx: Context, user: str | None) -> Caller:
    """The account the request acts on: the caller, or (admins only) ``user``."""
    return target_of(caller(request), user, ctx.config.admin_group)


def admin_only(ctx: Context, what: str) -> DS01Error:
    return PermissionDenied(f"{what} is for admins only",
                            f"admins are root and members of '{ctx.config.admin_group}'")


def require_admin(request: web.Request, ctx: Context, what: str) -> Caller:
    who = caller(request)
    if not who.is_admin:
        raise admin_only(ctx, what)
    return who


def scope(request: web.Request, ctx: Context, q: dict[str, str]) -> Caller | None:
    """Whose objects a listing shows: ``?all_users=1`` (admins: everyone's, None), else
    ``?user=U`` (admins) or the caller."""
    if q.get("all_users"):
        require_admin(request, ctx, "--all-users")
        return None
    return target(request, ctx, q.get("user"))


# -- middleware ------------------------------------------------------------------------------
def api_middleware(ctx: Context) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Identity (SO_PEERCRED → ``request[CALLER]``), errors as JSON, and the audit of refusals."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[CONTEXT] = ctx
        try:
            _pid, uid, gid = peer_credentials(request)
            request[CALLER] = await asyncio.to_thread(caller_from_uid, uid, gid, ctx.config.admin_group)
            return await handler(request)
        except DS01Error as e:
            audit_refusal(ctx, request, e)
            return error_response(e)
        except web.HTTPRequestEntityTooLarge:
            e2 = InvalidInput(f"the request body is larger than {ctx.config.daemon.max_body} bytes")
            audit_refusal(ctx, request, e2)
            return error_response(e2)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("internal error handling %s %s", request.method, request.path)
            return error_response(internal_error())

    return middleware


def audit_refusal(ctx: Context, request: web.Request, e: DS01Error, action: str | None = None) -> None:
    """Record a refusal as an event. Every refused change is one; a read is one only when it was a
    permission or policy denial (someone asking for what is not theirs), not a typo'd name.
    ``action`` names what was refused when the request is not a plain change (``container.exec``
    over a WebSocket, which is a GET): always recorded, a NotFound included (another user's
    container looks missing, so a refused attempt on it is a NotFound)."""
    if action is None and request.method == "GET" and e.http_status != 403:
        return
    c = request.get(CALLER)
    try:
        ctx.events.emit(action or f"api.{request.method.lower()}", user=c.name if c else None,
                        uid=c.uid if c else None, target=request.path,
                        result="denied" if e.http_status < 500 else "error", reason=e.code,
                        data={"message": e.message})
    except Exception:  # auditing must never turn a clean refusal into a crash
        log.exception("could not record an event")
