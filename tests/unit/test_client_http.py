"""The CLI's HTTP client against a real aiohttp server on a Unix socket: plain, chunked
(streaming) and error responses, and a missing daemon."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from aiohttp import web

from ds01 import errors
from ds01.client.http import Client


@pytest.fixture
def server(tmp_path):
    sock = str(tmp_path / "s.sock")

    async def ok(request):
        body = await request.json() if request.can_read_body else None
        return web.json_response({"echo": body, "q": dict(request.query)})

    async def fail(request):
        return web.json_response({"error": {"code": "policy_denied", "message": "no", "hint": "ask"}}, status=403)

    async def stream(request):
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(3):
            await resp.write(json.dumps({"stream": f"line {i}"}).encode() + b"\n")
        await resp.write(json.dumps({"error": {"code": "build_failed", "message": "boom"}}).encode() + b"\n")
        return resp

    app = web.Application()
    app.add_routes([web.post("/ok", ok), web.get("/ok", ok), web.get("/fail", fail), web.post("/stream", stream)])
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.UnixSite(runner, sock).start())
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    yield sock
    loop.call_soon_threadsafe(loop.stop)
    t.join(5)


def test_json_roundtrip_and_query(server):
    c = Client(server)
    assert c.call("POST", "/ok", {"a": [1, "é"]}) == {"echo": {"a": [1, "é"]}, "q": {}}
    assert c.call("GET", "/ok", params={"x": "1 2", "flag": True, "none": None, "off": False})["q"] == \
        {"x": "1 2", "flag": "1"}


def test_error_is_reraised_as_its_class(server):
    with pytest.raises(errors.PolicyDenied) as e:
        Client(server).call("GET", "/fail")
    assert e.value.message == "no" and e.value.hint == "ask" and e.value.exit_code == 6


def test_stream_yields_lines_then_raises(server):
    got = []
    with pytest.raises(errors.BuildFailed):
        for item in Client(server).stream("POST", "/stream", {}):
            got.append(item["stream"])
    assert got == ["line 0", "line 1", "line 2"]


def test_missing_daemon(tmp_path):
    with pytest.raises(errors.DaemonUnavailable) as e:
        Client(str(tmp_path / "nope.sock")).call("GET", "/x")
    assert "cannot reach" in e.value.message and e.value.exit_code == 9


def test_quote_matches_urllib():
    from urllib.parse import quote

    from ds01.client.http import q

    for s in ["abc", "a b/c", "../x", "é漢", "ds01-1001-p.x_y~z", "%2F", "?&=#"]:
        assert q(s) == quote(s, safe="")
