"""Interactive exec, proxied over a WebSocket on the daemon's socket.

The user never gets a Docker socket: ds01d creates the exec (as the user's uid:gid, in
/workspace) and copies bytes between Docker's hijacked exec stream and the WebSocket.

Protocol (client ⇄ daemon):
* client → first text message: :class:`ds01.models.api.ExecRequest` JSON.
* client → binary: stdin bytes. text ``{"type":"resize","rows":R,"cols":C}``; ``{"type":"eof"}``.
* daemon → binary: first byte is the stream (1 stdout, 2 stderr), the rest is data.
* daemon → text ``{"type":"started"}`` once running, ``{"type":"exit","code":N}`` at the end, or
  ``{"type":"error","error":{…}}`` for a refusal (then the socket closes).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct

from aiohttp import WSMsgType, web
from pydantic import ValidationError

from ds01.daemon.app import Api, caller, validation_summary
from ds01.errors import DS01Error, InvalidInput
from ds01.models.api import ExecRequest
from ds01.policy.containers import user_env

log = logging.getLogger("ds01d")


async def serve_exec(api: Api, request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(max_msg_size=1024 * 1024, heartbeat=30, compress=False)
    await ws.prepare(request)
    try:
        first = await ws.receive(timeout=30)
        if first.type != WSMsgType.TEXT:
            raise InvalidInput("the first message must be the exec request (JSON text)")
        try:
            req = ExecRequest.model_validate_json(first.data)
        except ValidationError as e:
            raise InvalidInput("invalid exec request: " + validation_summary(e)) from None
        me = caller(request)
        who = api.target(request, req.user)
        rec = await api.run(api.containers.exec_target, who, request.match_info["ref"], req.start, me)
        cmd = req.cmd or ["/bin/sh", "-c", 'if command -v bash >/dev/null; then exec bash -l; else exec sh -l; fi']
        env = {**user_env(who, rec.gpus), "TERM": req.term}
        handle = await api.run(api.ctx.runtime.exec_start, rec.docker_id, cmd, user=f"{who.uid}:{who.gid}",
                               env=env, workdir="/workspace", tty=req.tty)
        api.ctx.events.emit("container.exec", user=who.name, uid=who.uid, target=rec.project,
                            data={"cmd": cmd[:8], "tty": req.tty})
    except DS01Error as e:
        await ws.send_str(json.dumps({"type": "error", "error": e.to_dict()}))
        await ws.close()
        return ws
    if req.tty:
        # The engine refuses a resize until the process has its terminal; retry briefly (as the
        # docker CLI does) so the first screen already has the right size.
        for attempt in range(10):
            if await api.run(api.ctx.runtime.exec_resize, handle.id, req.rows, req.cols):
                break
            await asyncio.sleep(0.01 * (attempt + 1))
    await ws.send_str(json.dumps({"type": "started"}))
    sock: socket.socket = handle.sock  # type: ignore[assignment]
    sock.setblocking(False)
    loop = asyncio.get_running_loop()

    async def pump_out() -> None:
        buf = b""
        while True:
            data = await loop.sock_recv(sock, 65536)
            if not data:
                break
            if req.tty:
                await ws.send_bytes(b"\x01" + data)
                continue
            # Docker multiplexes stdout/stderr as [stream, 0, 0, 0, size(be32)] + payload.
            buf += data
            while len(buf) >= 8:
                stream, size = buf[0], struct.unpack(">I", buf[4:8])[0]
                if len(buf) < 8 + size:
                    break
                await ws.send_bytes(bytes([1 if stream in (0, 1) else 2]) + buf[8:8 + size])
                buf = buf[8 + size:]

    async def pump_in() -> None:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                await loop.sock_sendall(sock, msg.data)
            elif msg.type == WSMsgType.TEXT:
                try:
                    ctl = json.loads(msg.data)
                except ValueError:
                    continue
                if ctl.get("type") == "resize":
                    rows, cols = int(ctl.get("rows", 24)), int(ctl.get("cols", 80))
                    if 0 < rows <= 1000 and 0 < cols <= 1000:
                        await api.run(api.ctx.runtime.exec_resize, handle.id, rows, cols)
                elif ctl.get("type") == "eof":
                    try:
                        sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break

    out_task = asyncio.create_task(pump_out())
    in_task = asyncio.create_task(pump_in())
    try:
        done, _ = await asyncio.wait({out_task, in_task}, return_when=asyncio.FIRST_COMPLETED)
        if in_task in done and not out_task.done():
            # client went away: the process keeps its terminal until Docker notices the hang-up
            out_task.cancel()
        else:
            await out_task
        code = None
        for _ in range(50):
            code = await api.run(api.ctx.runtime.exec_exit_code, handle.id)
            if code is not None:
                break
            await asyncio.sleep(0.02)
        if not ws.closed:
            await ws.send_str(json.dumps({"type": "exit", "code": code if code is not None else 255}))
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
        try:
            sock.close()
        except OSError:
            pass
    return ws
