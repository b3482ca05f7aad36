"""Connection bounds (daemon/connections.py), the status page's Host check, the daemon's file modes."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time
import urllib.error
import urllib.request

import pytest
from aiohttp import web

from ds01.client.http import Client
from ds01.daemon import filemodes
from ds01.daemon.connections import ConnectionGuard, busy_response, serve_wsgi, unix_site
from ds01.daemon.web import allowed_hosts
from ds01.errors import Busy
from ds01.paths import Paths


def test_admit_bounds_per_user_in_total_and_keeps_the_reserve_for_admins():
    g = ConnectionGuard("t", total=10, per_user=3, reserve=2, is_admin=lambda uid: uid == 7)
    g.by_uid[1000] = 3
    g.open = 3
    assert "limit per user" in g.admit(1000)
    assert g.admit(1001) is None and g.admit(0) is None
    g.open = 8  # only the reserve is left
    assert "reserved for admins" in g.admit(1001)
    assert g.admit(7) is None and g.admit(0) is None
    g.open = 10
    assert "maximum of 10" in g.admit(0)


def test_the_busy_answer_is_one_http_503_with_the_api_error_shape():
    raw = busy_response("too many", "wait")
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 503 ") and b"Content-Length: %d" % len(body) in head
    assert body.count(b"\n") == 1 and b'"code": "busy"' in body


def _serve(tmp_path, guard: ConnectionGuard, handler):
    """Run an aiohttp app behind ``guard`` on a Unix socket in a background loop."""
    import threading

    sock = str(tmp_path / "s.sock")
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def main():
        app = web.Application(middlewares=[guard.middleware()])
        app.router.add_get("/x", handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await unix_site(runner, sock, guard).start()
        ready.set()

    threading.Thread(target=lambda: (loop.run_until_complete(main()), loop.run_forever()), daemon=True).start()
    assert ready.wait(10)
    return sock, loop


def _idle(sock: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    return s


def test_over_the_bound_a_client_gets_busy_and_idle_connections_are_closed(tmp_path):
    async def ok(request):
        return web.json_response({"ok": True})

    guard = ConnectionGuard("t", total=2, per_user=2, idle=0.5)  # (total: the tests may run as root)
    sock, loop = _serve(tmp_path, guard, ok)
    try:
        held = [_idle(sock), _idle(sock)]
        time.sleep(0.1)
        with pytest.raises(Busy) as e:
            Client(sock, timeout=5).call("GET", "/x")
        assert "maximum of 2" in e.value.message and guard.refused_total == 1
        t0 = time.monotonic()
        for s in held:  # no request within the idle timeout: closed by the daemon
            s.settimeout(5)
            assert s.recv(10) == b""
        assert time.monotonic() - t0 < 2
        assert Client(sock, timeout=5).call("GET", "/x") == {"ok": True}
    finally:
        loop.call_soon_threadsafe(loop.stop)


def test_a_request_in_progress_is_not_idle(tmp_path):
    async def slow(request):
        await asyncio.sleep(1.2)
        return web.json_response({"done": True})

    guard = ConnectionGuard("t", total=100, per_user=10, idle=0.3)
    sock, loop = _serve(tmp_path, guard, slow)
    try:
        assert Client(sock, timeout=5).call("GET", "/x") == {"done": True}
    finally:
        loop.call_soon_threadsafe(loop.stop)


def test_the_metrics_listener_serves_a_bounded_number_at_once():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    server, _ = serve_wsgi("127.0.0.1", 0, app, max_connections=2, timeout=0.5)
    port = server.server_address[1]
    try:
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        time.sleep(0.2)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
        assert e.value.code == 503 and b'"busy"' in e.value.read()
        time.sleep(0.8)  # the idle ones time out and free their threads
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read() == b"ok"
        for s in held:
            s.close()
    finally:
        server.shutdown()
        server.server_close()


def test_the_status_page_answers_only_its_own_names():
    hosts = allowed_hosts("127.0.0.1", 9102)
    assert {"127.0.0.1:9102", "localhost:9102", "[::1]:9102"} <= hosts
    assert "evil.example:9102" not in hosts and "localhost:8080" not in hosts and "localhost" not in hosts
    assert "localhost" in allowed_hosts("127.0.0.1", 80)


def test_file_modes_are_fixed_at_start_and_a_symlink_stops_it(tmp_path):
    paths = Paths.under(tmp_path)
    paths.log_dir.mkdir(parents=True, mode=0o755)
    os.chmod(paths.log_dir, 0o755)
    paths.events.write_text("{}\n")
    os.chmod(paths.events, 0o644)
    changed = filemodes.enforce(paths, paths.socket.parent)
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(paths.log_dir) == 0o750 and mode(paths.events) == 0o600 and mode(paths.state_dir) == 0o700
    assert mode(paths.socket.parent) == 0o755 and any(str(paths.log_dir) in c for c in changed)
    assert filemodes.enforce(paths, paths.socket.parent) == []  # nothing left to fix
    os.rmdir(paths.state_dir / "mounts")
    os.symlink("/etc", paths.state_dir / "mounts")
    with pytest.raises(Exception, match="not a directory"):
        filemodes.enforce(paths, None)
