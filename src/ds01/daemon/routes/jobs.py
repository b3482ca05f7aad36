"""Batch job routes (issue 14): thin wrappers over :class:`ds01.services.jobs.JobService`.

    POST /v1/jobs                 submit (202: queued; the ids)
    GET  /v1/jobs                 ?all=1 (ended too), ?state=S, ?all_users=1 (admins)
    GET  /v1/jobs/{id}            one job's record
    GET  /v1/jobs/{id}/logs       ?offset=N | ?tail=N: a piece of its log
    POST /v1/jobs/{id}/cancel     queued or running
    POST /v1/jobs/{id}/rerun      the same image id, command and resources, as a new job
"""

from __future__ import annotations

from aiohttp import web

from ds01.daemon.http import caller, in_thread, int_param, json_response, parse, query, require_admin
from ds01.daemon.services import Services
from ds01.models import api

HINT = "'job-list --all' lists your jobs"


def routes(s: Services) -> list[web.RouteDef]:
    ctx, jobs = s.ctx, s.jobs

    def job_id(request: web.Request) -> int:
        return int_param(request.match_info["id"], "a job id", HINT)

    async def submit(request: web.Request) -> web.Response:
        b = await parse(request, api.SubmitJob)
        out = await in_thread(jobs.submit, caller(request), b.project, b.command, request=b.gpu_request(),
                              time=b.time, name=b.name, array=b.array, after=b.after, env=b.env,
                              requeue=b.requeue, mail=b.mail, mail_default=b.mail_default,
                              image_id=b.image_id)
        return json_response(out, status=202)

    async def list_(request: web.Request) -> web.Response:
        q = query(request, {"all", "state", "all_users"})
        who = caller(request)
        if q.get("all_users"):
            require_admin(request, ctx, "--all-users")
            who = None
        return json_response(await in_thread(jobs.list, who, bool(q.get("all")), q.get("state") or None))

    async def show(request: web.Request) -> web.Response:
        query(request, set())
        return json_response(await in_thread(jobs.show, caller(request), job_id(request)))

    async def logs(request: web.Request) -> web.Response:
        q = query(request, {"offset", "tail"})
        offset = int_param(q["offset"], "offset", "a byte offset") if "offset" in q else None
        tail = int_param(q["tail"], "--tail", "a number of lines") if "tail" in q else None
        return json_response(await in_thread(jobs.logs, caller(request), job_id(request), offset, tail))

    async def cancel(request: web.Request) -> web.Response:
        return json_response(await in_thread(jobs.cancel, caller(request), job_id(request)))

    async def rerun(request: web.Request) -> web.Response:
        return json_response(await in_thread(jobs.rerun, caller(request), job_id(request)), status=202)

    return [
        web.post("/v1/jobs", submit),
        web.get("/v1/jobs", list_),
        web.get("/v1/jobs/{id}", show),
        web.get("/v1/jobs/{id}/logs", logs),
        web.post("/v1/jobs/{id}/cancel", cancel),
        web.post("/v1/jobs/{id}/rerun", rerun),
    ]
