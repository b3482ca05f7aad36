"""SSH routes (``container-ssh``, issue 13). The session itself runs over the exec WebSocket
(``ssh: true``, ds01.daemon.routes.exec); this table only tells the laptop side what to trust.

    GET /v1/ssh/host-key    the caller's container host key (public half), for known_hosts
"""

from __future__ import annotations

from aiohttp import web

from ds01.daemon.http import caller, in_thread, json_response
from ds01.daemon.services import Services


def routes(s: Services) -> list[web.RouteDef]:
    async def host_key(request: web.Request) -> web.Response:
        if s.ssh is None:
            raise web.HTTPNotFound()
        return json_response({"public_key": await in_thread(s.ssh.public_host_key, caller(request))})

    return [web.get("/v1/ssh/host-key", host_key)]
