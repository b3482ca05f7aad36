"""Interactive exec, proxied over a WebSocket on the daemon's socket.

    GET /v1/containers/{ref}/exec   (WebSocket upgrade)

The user never gets a Docker socket: ``ContainerService.exec`` starts the process (as the user's
uid:gid, in /workspace) and this route only copies bytes between the session and the WebSocket.

Protocol (client ⇄ daemon):
* client → first text message: :class:`ds01.models.api.ExecRequest` JSON. With ``ssh`` the
  process is the container's sshd in inetd mode (``container-ssh``, ds01.services.ssh): the
  binary messages are then the SSH connection itself.
* client → binary: stdin bytes. text ``{"type":"resize","rows":R,"cols":C}``; ``{"type":"eof"}``;
  ``{"type":"signal","signal":"INT"}`` (INT, TERM, HUP, QUIT, KILL: to the process's group).
* daemon → binary: first byte is the stream (1 stdout, 2 stderr), the rest is data.
* daemon → text ``{"type":"started"}`` once running, ``{"type":"exit","code":N}`` at the end, or
  ``{"type":"error","error":{…}}`` for a refusal (then the socket closes).

A client that goes away before the exit (killed, connection lost) takes the process with it: its
group gets SIGHUP, then SIGKILL (``ExecSession.kill``), so nothing keeps running unseen, holding
GPUs and defeating idle reclaim.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Iterator

from aiohttp import WSMsgType, web

from ds01.daemon.http import audit_refusal, caller, in_thread, target, validate
from ds01.daemon.services import Services
from ds01.errors import DS01Error, InvalidInput
from ds01.models.api import ExecRequest
from ds01.services.exec import ExecSession

log = logging.getLogger("ds01d")


def routes(s: Services) -> list[web.RouteDef]:
    async def exec_(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=1024 * 1024, heartbeat=30, compress=False)
        await ws.prepare(request)
        ssh = False
        try:
            first = await ws.receive(timeout=30)
            if first.type != WSMsgType.TEXT:
                raise InvalidInput("the first message must be the exec request (JSON text)")
            req = validate(ExecRequest, first.data, "invalid exec request: ")
            who = target(request, s.ctx, req.user)
            ssh = req.ssh
            if ssh:
                if req.cmd or req.tty or s.ssh is None:
                    raise InvalidInput("an ssh session takes no command and no terminal (sshd makes its own)")
                session = await in_thread(s.ssh.open, caller(request), who, request.match_info["ref"],
                                          start=req.start)
            else:
                session = await in_thread(s.containers.exec, caller(request), who, request.match_info["ref"],
                                          req.cmd, tty=req.tty, term=req.term, start=req.start)
        except DS01Error as e:
            # refused run/attach/exec/ssh: audited (issue 15); not the "not running" container-ssh
            # answers itself by starting the container and asking again
            if not (ssh and e.details.get("start")):
                audit_refusal(s.ctx, request, e, "container.ssh" if ssh else "container.exec")
            await ws.send_str(json.dumps({"type": "error", "error": e.to_dict()}))
            await ws.close()
            return ws
        await relay(ws, session, req.rows, req.cols)
        return ws

    return [web.get("/v1/containers/{ref}/exec", exec_)]


class FrameReader:
    """A session's output, read in a thread of its own (a session can last for hours: it must not
    hold a worker of the shared pool) and handed to the event loop in batches: the frames that
    were already there when one was read (up to ``BATCH`` bytes), so bulk output costs one
    hand-over per batch while interactive output goes out frame by frame. At most ``depth``
    batches wait for the WebSocket: a slow client slows the process down instead of filling the
    daemon's memory."""

    BATCH = 65536

    def __init__(self, session: ExecSession, loop: asyncio.AbstractEventLoop, depth: int = 4):
        self._loop = loop
        self._queue: asyncio.Queue[list[tuple[int, bytes]] | None] = asyncio.Queue()
        self._room = threading.Semaphore(depth)
        self._stop = threading.Event()
        self._ended = False
        threading.Thread(target=self._run, args=(session.frames(), session.readable), name="ds01d-exec",
                         daemon=True).start()

    def _run(self, frames: Iterator[tuple[int, bytes]], more: Callable[[], bool]) -> None:
        batch: list[tuple[int, bytes]] = []
        size = 0
        try:
            for frame in frames:
                batch.append(frame)
                size += len(frame[1])
                if size < self.BATCH and more():
                    continue
                if not self._hand_over(batch):
                    return
                batch, size = [], 0
        except Exception as e:  # the connection broke, or was cut by close()
            log.info("exec stream ended: %s", e)
        finally:
            try:
                if batch:
                    self._hand_over(batch)
                self._loop.call_soon_threadsafe(self._queue.put_nowait, None)
            except RuntimeError:  # the loop is already closed (daemon shutdown)
                pass

    def _hand_over(self, batch: list[tuple[int, bytes]]) -> bool:
        while not self._room.acquire(timeout=0.5):
            if self._stop.is_set():
                return False
        if self._stop.is_set():
            return False
        self._loop.call_soon_threadsafe(self._queue.put_nowait, batch)
        return True

    async def next(self) -> list[tuple[int, bytes]] | None:
        """The next frames, consecutive ones of a stream joined; None at the end of the output."""
        batch = await self._queue.get()
        if batch is None:
            self._ended = True
            return None
        self._room.release()
        runs: list[tuple[int, list[bytes]]] = []
        for stream, data in batch:
            if runs and runs[-1][0] == stream:
                runs[-1][1].append(data)
            else:
                runs.append((stream, [data]))
        return [(stream, b"".join(parts)) for stream, parts in runs]

    async def close(self, timeout: float = 1.0) -> None:
        """Stop reading and wait (briefly) for the thread to let go of the socket. The stream
        must already be cut (``ExecSession.hang_up``) or ended, or the thread waits for data."""
        self._stop.set()
        try:
            while not self._ended:
                await asyncio.wait_for(self.next(), timeout)
        except asyncio.TimeoutError:
            log.warning("exec reader did not stop within %.1f s", timeout)


async def relay(ws: web.WebSocketResponse, session: ExecSession, rows: int, cols: int) -> None:
    """Copy between the WebSocket and the session until the process ends or the client goes."""
    if session.tty:
        await in_thread(session.fit, rows, cols)
    await ws.send_str(json.dumps({"type": "started"}))
    loop = asyncio.get_running_loop()
    reader = FrameReader(session, loop)

    async def pump_out() -> None:
        while (frames := await reader.next()) is not None:
            for stream, data in frames:
                await ws.send_bytes(bytes([stream]) + data)

    async def pump_in() -> None:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                await loop.sock_sendall(session.sock, msg.data)
            elif msg.type == WSMsgType.TEXT:
                try:
                    ctl = json.loads(msg.data)
                except ValueError:
                    continue
                if ctl.get("type") == "resize":
                    r, c = int(ctl.get("rows", 24)), int(ctl.get("cols", 80))
                    if 0 < r <= 1000 and 0 < c <= 1000:
                        await in_thread(session.resize, r, c)
                elif ctl.get("type") == "eof":
                    session.end_input()
                elif ctl.get("type") == "signal":
                    await in_thread(session.signal, str(ctl.get("signal", "")))
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break

    out_task = asyncio.create_task(pump_out())
    in_task = asyncio.create_task(pump_in())
    try:
        done, _ = await asyncio.wait({out_task, in_task}, return_when=asyncio.FIRST_COMPLETED)
        if in_task in done and not out_task.done():
            # the client went away before the exit: end the process rather than leave it running
            await in_thread(session.kill)
            out_task.cancel()
        else:
            await out_task
        try:
            code = await in_thread(session.wait_exit)
        except DS01Error:  # the engine does not answer: exit_lost says so
            code = None
        if code is None and not ws.closed:  # say what happened rather than a bare 255
            lost = await in_thread(session.exit_lost)
            await ws.send_str(json.dumps({"type": "error", "error": lost.to_dict()}))
        elif not ws.closed:
            await ws.send_str(json.dumps({"type": "exit", "code": code}))
        if not ws.closed:
            # Let the client close after reading "exit": closing first races with its reader
            # (a close frame right behind the last message can be surfaced before the message).
            try:
                await asyncio.wait_for(asyncio.shield(in_task), timeout=5)
            except (asyncio.TimeoutError, Exception):
                pass
            await ws.close()
    except (ConnectionResetError, OSError) as e:
        log.info("exec stream ended: %s", e)
    finally:
        in_task.cancel()
        out_task.cancel()
        session.hang_up()
        await reader.close()
        session.close()
