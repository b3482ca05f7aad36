"""Who and what is serving.

    GET /v1/health    {"ok", "version", "instance"} (no identity needed beyond the socket)
    GET /v1/whoami    the caller as the kernel reported it, plus the daemon's workspace base
"""

from __future__ import annotations

from aiohttp import web

from ds01 import __version__
from ds01.daemon.http import caller, json_response
from ds01.daemon.services import Services


def routes(s: Services) -> list[web.RouteDef]:
    async def health(request: web.Request) -> web.Response:
        return json_response({"ok": True, "version": __version__, "instance": s.ctx.instance})

    async def whoami(request: web.Request) -> web.Response:
        # workspace_base: the configured template ("{home}/workspace"), so the CLI writes projects
        # where the daemon will look for them
        return json_response({**caller(request).to_dict(),
                              "workspace_base": s.ctx.config.containers.workspace_base,
                              "workspace_group": s.ctx.config.containers.workspace_group})

    return [
        web.get("/v1/health", health),
        web.get("/v1/whoami", whoami),
    ]
