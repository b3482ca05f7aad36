"""The exec relay's reader (daemon/routes/exec.py) and session (services/exec.py) without Docker:
bulk output is batched and joined per stream in order, interactive output goes out frame by
frame, a slow client bounds how far the reader runs ahead, and a hang-up ends a blocked reader."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from types import SimpleNamespace

from ds01.daemon.routes.exec import FrameReader
from ds01.runtime import docker_compat
from ds01.runtime.base import ExecHandle
from ds01.services.exec import ExecSession


def fake_session(frames, readable=lambda: False):
    return SimpleNamespace(frames=lambda: iter(frames), readable=readable)


async def drain(reader: FrameReader) -> list:
    out = []
    while (batch := await reader.next()) is not None:
        out.append(batch)
    return out


def test_frames_already_there_are_one_batch_joined_per_stream_in_order():
    frames = [(1, b"a"), (1, b"b"), (2, b"c"), (1, b"d"), (1, b"e")]

    async def main():
        return await drain(FrameReader(fake_session(frames, readable=lambda: True), asyncio.get_running_loop()))

    assert asyncio.run(main()) == [[(1, b"ab"), (2, b"c"), (1, b"de")]]


def test_interactive_output_goes_out_frame_by_frame():
    async def main():
        return await drain(FrameReader(fake_session([(1, b"$ "), (1, b"ls\r\n")]), asyncio.get_running_loop()))

    assert asyncio.run(main()) == [[(1, b"$ ")], [(1, b"ls\r\n")]]


def test_a_batch_is_bounded_in_bytes():
    chunk = b"x" * 30000

    async def main():
        return await drain(FrameReader(fake_session([(1, chunk)] * 5, readable=lambda: True),
                                       asyncio.get_running_loop()))

    batches = asyncio.run(main())
    assert [len(b[0][1]) for b in batches] == [90000, 60000]  # a batch closes once past 64 KiB


def test_a_slow_client_holds_the_reader_back_and_close_stops_it():
    produced = []

    def endless():
        while True:
            produced.append(1)
            yield 1, b"y" * 100

    async def main():
        reader = FrameReader(SimpleNamespace(frames=endless, readable=lambda: False), asyncio.get_running_loop(),
                             depth=3)
        await asyncio.sleep(0.3)  # nobody reads
        ahead = len(produced)
        first = await reader.next()
        t0 = time.monotonic()
        await reader.close()
        return ahead, first, time.monotonic() - t0

    ahead, first, took = asyncio.run(main())
    assert ahead <= 4 and first == [(1, b"y" * 100)]
    assert took < 1.5


def test_session_hang_up_ends_a_blocked_reader():
    ours, engine = socket.socketpair()
    rt = SimpleNamespace(exec_frames=lambda h: docker_compat.exec_frames(h.sock, h.tty))
    session = ExecSession(rt, ExecHandle(id="e1", sock=ours, tty=False), "p")
    assert ours.getblocking() is False  # the event loop writes stdin to it
    engine.sendall(struct.pack(">BxxxL", 2, 3) + b"err")
    got = []
    t = threading.Thread(target=lambda: got.extend(session.frames()))
    t.start()
    time.sleep(0.2)
    assert t.is_alive() and session.readable() is False
    session.hang_up()
    t.join(2)
    assert not t.is_alive() and got == [(2, b"err")]
    session.close()
    engine.close()
