"""The daemon's composition root and route tables, served on a real Unix socket (SO_PEERCRED)
without Docker: every endpoint is routed, whoami tells the workspace base, the shared helpers
refuse unknown parameters and bad bodies (and audit the refusal), metrics time every request."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import time
from pathlib import Path
from types import SimpleNamespace

import aiohttp
from aiohttp import web

from ds01 import __version__
from ds01.daemon.main import build_app, build_services
from ds01.daemon.metrics import Metrics
from ds01.gpu.simulated import SimulatedSource
from ds01.models.config import Config
from ds01.services.context import Context
from ds01.services.events import EventLog
from ds01.state.db import Store

ROUTES = {
    ("GET", "/v1/health"), ("GET", "/v1/whoami"), ("GET", "/v1/ssh/host-key"),
    ("POST", "/v1/containers"), ("POST", "/v1/containers/deploy"), ("POST", "/v1/containers/{ref}/retire"),
    ("GET", "/v1/containers"), ("GET", "/v1/containers-stats"), ("POST", "/v1/containers/{ref}/start"),
    ("POST", "/v1/containers/{ref}/stop"), ("POST", "/v1/containers/{ref}/remove"),
    ("GET", "/v1/containers/{ref}/exec"), ("POST", "/v1/containers/{ref}/keepalive"),
    ("GET", "/v1/gpus"), ("GET", "/v1/limits"), ("GET", "/v1/queue"), ("POST", "/v1/queue/{id}/cancel"),
    ("GET", "/v1/admin/exemptions"), ("POST", "/v1/admin/exemptions"), ("POST", "/v1/admin/exemptions/{id}/revoke"),
    ("GET", "/v1/images"), ("GET", "/v1/images-catalog"), ("GET", "/v1/images-select"),
    ("GET", "/v1/images/{project}"), ("POST", "/v1/images/{project}/build"), ("POST", "/v1/images/{project}/delete"),
    ("POST", "/v1/admin/base-image/bootstrap"),
    ("POST", "/v1/images-pull"), ("POST", "/v1/admin/images/pull"), ("GET", "/v1/admin/images/usage"),
    ("POST", "/v1/admin/images/prune"),
    ("GET", "/v1/status"), ("GET", "/v1/events"), ("GET", "/v1/usage"), ("GET", "/v1/admin/dashboard"),
    ("POST", "/v1/jobs"), ("GET", "/v1/jobs"), ("GET", "/v1/jobs/{id}"), ("GET", "/v1/jobs/{id}/logs"),
    ("POST", "/v1/jobs/{id}/cancel"), ("POST", "/v1/jobs/{id}/rerun"),
    ("POST", "/v1/admin/reload"), ("GET", "/v1/admin/limits"), ("POST", "/v1/admin/limits"),
    ("GET", "/v1/admin/users"), ("GET", "/v1/admin/doctor"), ("POST", "/v1/admin/cluster/sync"), ("POST", "/v1/admin/backup"),
    ("POST", "/v1/admin/catalog/refresh"),
}


def make(tmp_path: Path, cfg: Config):
    store = Store(tmp_path / "state.db")
    src = SimulatedSource()
    runtime = SimpleNamespace(list=lambda labels: [], inspect=lambda cid: None)
    ctx = Context(config=cfg, store=store, runtime=runtime, events=EventLog(tmp_path / "events.jsonl", store),
                  instance="unit", gpu_source=src, inventory=src.read())
    released: list[int] = []
    s = build_services(ctx, on_release=lambda: released.append(1))
    return s, Metrics(s, s.status)


def test_services_are_wired_through_their_constructors(tmp_path):
    s, _ = make(tmp_path, Config())
    assert s.containers.images is s.images and s.gpu.containers is s.containers
    assert s.lifecycle.containers is s.containers and s.status.containers is s.containers
    assert s.usage.containers is s.containers and s.status.gpu is s.gpu
    assert not hasattr(s.images, "containers")  # no back-reference: a narrow callback instead
    s.lifecycle.close()


def test_every_endpoint_is_routed(tmp_path):
    s, metrics = make(tmp_path, Config())
    app = build_app(s, metrics)
    got = {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}
    assert got == ROUTES
    s.lifecycle.close()


def test_served_on_a_unix_socket(tmp_path):
    cfg = Config.model_validate({"containers": {"workspace_base": "/srv/work/{user}"}})
    s, metrics = make(tmp_path, cfg)
    sock = str(tmp_path / "api.sock")

    async def main() -> list:
        runner = web.AppRunner(build_app(s, metrics), access_log=None, handle_signals=False)
        await runner.setup()
        await web.UnixSite(runner, sock).start()
        out = []
        try:
            async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sock)) as http:
                for method, path, body in (("GET", "/v1/health", None), ("GET", "/v1/whoami", None),
                                           ("GET", "/v1/containers?bogus=1", None),
                                           ("POST", "/v1/containers", b"{not json"),
                                           ("POST", "/v1/containers", b'{"project": "p", "evil": 1}'),
                                           ("POST", "/v1/queue/x/cancel", None)):
                    async with http.request(method, "http://ds01" + path, data=body) as r:
                        out.append((r.status, await r.json()))
        finally:
            await runner.cleanup()
        return out

    health, whoami, bogus, bad_json, extra, qid = asyncio.run(main())
    assert health == (200, {"ok": True, "version": __version__, "instance": "unit"})
    me = pwd.getpwuid(os.getuid())
    assert whoami[0] == 200 and whoami[1]["user"] == me.pw_name and whoami[1]["uid"] == os.getuid()
    assert whoami[1]["workspace_base"] == "/srv/work/{user}"
    assert bogus[0] == 400 and bogus[1]["error"]["message"] == "unknown query parameter(s): bogus"
    assert bad_json[0] == 400 and "not valid JSON" in bad_json[1]["error"]["message"]
    assert extra[0] == 400 and "evil: unknown field (not part of the API)" in extra[1]["error"]["message"]
    assert qid[0] == 400 and qid[1]["error"]["message"] == "a queue id is a number"
    # refused changes are audited (the refused read is not: not a permission denial)
    audited = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    posts = [e for e in audited if e["action"] == "api.post"]
    assert len(posts) == 3 and {e["result"] for e in posts} == {"denied"}
    assert not [e for e in audited if e["action"] == "api.get"]
    assert metrics.api_requests.labels("GET /v1/health", "2xx")._value.get() == 1
    assert metrics.api_requests.labels("POST /v1/containers", "4xx")._value.get() == 2
    s.lifecycle.close()


def test_waker_kicks_from_any_thread_and_wakes_early():
    from ds01.daemon.loops import Waker

    async def main() -> float:
        w = Waker(asyncio.get_running_loop())
        await asyncio.to_thread(w.kick)
        await asyncio.wait_for(w.event.wait(), 1)
        w.event.clear()
        t0 = time.monotonic()
        w.at(0.05)
        w.at(0.1)  # replaces the first
        await asyncio.wait_for(w.event.wait(), 1)
        return time.monotonic() - t0

    assert 0.09 <= asyncio.run(main()) < 0.5
