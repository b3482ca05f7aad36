"""Caller identity from the kernel: SO_PEERCRED on the Unix socket connection."""

from __future__ import annotations

import socket
import struct

from aiohttp import web

from ds01.errors import PermissionDenied


def peer_credentials(request: web.Request) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process on the other end of the socket, as the kernel reports it."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport else None
    if sock is None or sock.family != socket.AF_UNIX:
        raise PermissionDenied("the DS01 API is only served on its Unix socket")
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", raw)
