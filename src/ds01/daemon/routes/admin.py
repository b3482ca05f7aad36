"""Admin routes for running the lab (issue 16): thin wrappers over
:class:`ds01.services.config_admin.ConfigAdmin`. Admins only (root or the admin group).

    POST /v1/admin/reload          re-read the config file: validate, apply live, name what needs a restart
    GET  /v1/admin/limits          ?user=U | ?group=G (neither: defaults, groups, overrides)
    POST /v1/admin/limits          set/unset one level's limits in the config file, then reload
    GET  /v1/admin/users           every account the lab knows, with group, overrides and holdings
    GET  /v1/admin/doctor          the daemon's own directories and files: owner and mode
    POST /v1/admin/catalog/refresh list registry tags, write the catalog overlay (services.catalog_refresh)
    POST /v1/admin/backup          ?download=1: NDJSON {"backup"}, {"chunk"}…, {"result"} (services.backup)
    POST /v1/admin/cluster/sync    {"apply": bool}: DS01's policy as Slurm settings, diff (services.cluster_sync)
"""

from __future__ import annotations

from aiohttp import web

from ds01.daemon.http import in_thread, json_response, parse, query, require_admin, stream_ndjson
from ds01.daemon.services import Services
from ds01.errors import ConfigError
from ds01.models import api


def routes(s: Services) -> list[web.RouteDef]:
    ctx = s.ctx

    def admin() -> object:
        ca = s.config_admin
        if ca is None:
            raise ConfigError("this daemon was started without a config file path; nothing to reload")
        return ca

    async def reload(request: web.Request) -> web.Response:
        query(request, set())
        who = require_admin(request, ctx, "reloading the configuration")
        return json_response(await in_thread(admin().reload, who, "ds01 admin reload"))

    async def limits_show(request: web.Request) -> web.Response:
        q = query(request, {"user", "group"})
        require_admin(request, ctx, "the lab's limits")
        return json_response(await in_thread(admin().limits_show, q.get("user") or None, q.get("group") or None))

    async def limits_change(request: web.Request) -> web.Response:
        body = await parse(request, api.LimitsChange)
        who = require_admin(request, ctx, "changing limits")
        return json_response(await in_thread(admin().limits_change, who, body.user, body.group, body.defaults,
                                             dict(body.set), list(body.unset)))

    async def users(request: web.Request) -> web.Response:
        query(request, set())
        require_admin(request, ctx, "the list of users")

        def run() -> list[dict]:
            return admin().users(s.containers.list(None))

        return json_response(await in_thread(run))

    async def doctor(request: web.Request) -> web.Response:
        query(request, set())
        require_admin(request, ctx, "the doctor")
        from ds01.services.config_admin import engine_checks, own_path_checks

        def run() -> list[dict]:
            return own_path_checks(admin().own_files) + engine_checks(ctx.runtime.security_options())

        return json_response({"checks": await in_thread(run)})

    async def backup(request: web.Request) -> web.StreamResponse:
        q = query(request, {"download"})
        who = require_admin(request, ctx, "backing up the state")
        from ds01.services.backup import make_backup

        gen = make_backup(ctx, who, q.get("download") == "1")
        first = await in_thread(next, gen)  # the backup itself: a failure is a plain HTTP error
        return await stream_ndjson(request, _chain(first, gen))

    async def catalog_refresh(request: web.Request) -> web.Response:
        body = await parse(request, api.CatalogRefresh)
        who = require_admin(request, ctx, "refreshing the image catalog")
        from ds01.services.catalog_refresh import refresh

        return json_response(await in_thread(refresh, ctx, who, list(body.families), body.registry, body.dry_run))

    async def cluster_sync(request: web.Request) -> web.Response:
        body = await parse(request, api.ClusterSync)
        require_admin(request, ctx, "syncing the cluster's Slurm settings")
        from ds01.services.cluster_sync import sync

        return json_response(await in_thread(sync, ctx, s.containers.placement, body.apply))

    return [
        web.post("/v1/admin/cluster/sync", cluster_sync),
        web.post("/v1/admin/catalog/refresh", catalog_refresh),
        web.post("/v1/admin/backup", backup),
        web.post("/v1/admin/reload", reload),
        web.get("/v1/admin/limits", limits_show),
        web.post("/v1/admin/limits", limits_change),
        web.get("/v1/admin/users", users),
        web.get("/v1/admin/doctor", doctor),
    ]


def _chain(first, gen):
    yield first
    yield from gen
