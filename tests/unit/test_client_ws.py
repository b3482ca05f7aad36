"""The minimal WebSocket client (ds01.client.ws) against a real aiohttp WebSocket server."""

from __future__ import annotations

import asyncio
import threading

import pytest
from aiohttp import WSMsgType, web

from ds01.client.ws import ConnectionClosed, HandshakeFailed, unix_connect


@pytest.fixture
def server(tmp_path):
    path = str(tmp_path / "s.sock")
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    got: list = []

    async def handler(request):
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        await ws.ping(b"hi")
        async for msg in ws:
            got.append(msg.data)
            if msg.type == WSMsgType.TEXT and msg.data == "big":
                await ws.send_bytes(b"\x01" + b"x" * 300000)
            elif msg.type == WSMsgType.TEXT and msg.data == "bye":
                await ws.close()
            elif msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                await (ws.send_str(msg.data) if msg.type == WSMsgType.TEXT else ws.send_bytes(msg.data))
        return ws

    runners = []

    async def main():
        app = web.Application()
        app.router.add_get("/ws", handler)
        runner = web.AppRunner(app)
        runners.append(runner)
        await runner.setup()
        await web.UnixSite(runner, path).start()
        ready.set()

    t = threading.Thread(target=lambda: (loop.run_until_complete(main()), loop.run_forever()), daemon=True)
    t.start()
    ready.wait(10)
    yield path, got
    asyncio.run_coroutine_threadsafe(runners[0].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)
    loop.close()


def test_round_trips_text_binary_big_and_close(server):
    path, got = server
    ws = unix_connect(path, "ws://localhost/ws")
    ws.send('{"a": "é"}')
    assert ws.recv(timeout=5) == '{"a": "é"}'  # the ping before it was answered, not returned
    ws.send(b"\x00\x01" * 40000)
    assert ws.recv(timeout=5) == b"\x00\x01" * 40000
    ws.send("big")
    assert ws.recv(timeout=5) == b"\x01" + b"x" * 300000
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.05)
    ws.send("bye")
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=5)
    with pytest.raises(ConnectionClosed):
        ws.send("late")
    ws.close()


def test_client_close_is_clean(server):
    path, got = server
    ws = unix_connect(path, "ws://localhost/ws")
    ws.send("x")
    assert ws.recv(timeout=5) == "x"
    ws.close()
    assert got == ["x"]


def test_not_a_websocket(server):
    path, _ = server
    with pytest.raises(HandshakeFailed):
        unix_connect(path, "ws://localhost/nope")
    with pytest.raises(FileNotFoundError):
        unix_connect(path + ".missing", "ws://localhost/ws")
