"""The admin's wheelhouse (config ``build.wheelhouse``), served read-only to builds.

Builds run on the engine's classic builder, which has no mounts, so a host directory cannot be
bind-mounted into a ``RUN`` step; copying it into the context would store every wheel in a layer
of every image. Instead the daemon serves the directory over HTTP on the address the build
containers reach the host by (the default bridge's gateway, ``docker0``), and every build gets
``PIP_FIND_LINKS`` (and ``PIP_TRUSTED_HOST``: plain HTTP on a local link) as build args; pip
then takes any wheel it finds there before asking an index, so labs without internet can still
install what the admin put there. The DS01-written Dockerfile declares ``ARG PIP_FIND_LINKS``.

Read-only and flat: ``GET``/``HEAD`` of ``/`` (a link per file) and of the regular files directly
in the directory; nothing else (no subdirectories, no symlinks out, no listing of other paths).
"""

from __future__ import annotations

import fcntl
import html
import logging
import os
import socket
import struct
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("ds01d")

DEFAULT_PORT = 9103
_SIOCGIFADDR = 0x8915


def interface_address(name: str = "docker0") -> str | None:
    """The IPv4 address of a network interface (``docker0``: the default bridge's gateway)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            raw = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        return socket.inet_ntoa(raw[20:24])
    except OSError:
        return None


def files(directory: str) -> list[str]:
    """The regular files (not links, not hidden) directly in ``directory``, sorted."""
    try:
        with os.scandir(directory) as it:
            return sorted(e.name for e in it if not e.name.startswith(".") and e.is_file(follow_symlinks=False))
    except OSError:
        return []


def index_page(names: list[str]) -> bytes:
    links = "\n".join(f'<a href="{urllib.parse.quote(n)}">{html.escape(n)}</a><br>' for n in names)
    return f"<!DOCTYPE html><html><body>\n{links}\n</body></html>\n".encode()


def _handler(directory: str):
    class Handler(BaseHTTPRequestHandler):
        server_version = "ds01-wheelhouse"

        def log_message(self, fmt: str, *args) -> None:  # the daemon's log, not stderr
            log.debug("wheelhouse: " + fmt, *args)

        def _send(self, body: bytes | None, path: str | None, ctype: str) -> None:
            size = len(body) if body is not None else os.path.getsize(path or "")
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if self.command == "HEAD":
                return
            if body is not None:
                self.wfile.write(body)
                return
            with open(path or "", "rb") as f:
                while chunk := f.read(1 << 20):
                    self.wfile.write(chunk)

        def do_GET(self) -> None:  # noqa: N802 (http.server's names)
            name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
            if name in ("", "index.html"):
                return self._send(index_page(files(directory)), None, "text/html; charset=utf-8")
            if name not in files(directory):  # only the flat list: no "..", no subdirectories
                self.send_error(404)
                return
            self._send(None, os.path.join(directory, name), "application/octet-stream")

        do_HEAD = do_GET

        def do_POST(self) -> None:  # noqa: N802
            self.send_error(405)

        do_PUT = do_DELETE = do_PATCH = do_POST

    return Handler


class Wheelhouse:
    """Serves one directory while the daemon runs (started on the first build that needs it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._key: tuple[str, str, int] | None = None

    def url(self, directory: str, address: str = "", port: int = DEFAULT_PORT) -> str | None:
        """``http://ADDRESS:PORT/`` for builds, starting the server when needed; None when the
        directory or the address is not there (builds then go without, as before)."""
        if not os.path.isdir(directory):
            log.warning("build.wheelhouse %s is not a directory; builds get no wheelhouse", directory)
            return None
        addr = address or interface_address("docker0")
        if not addr:
            log.warning("no docker0 address to serve build.wheelhouse on; set build.wheelhouse_address")
            return None
        key = (directory, addr, port)
        with self._lock:
            if self._key != key:
                self.close_locked()
                try:
                    srv = ThreadingHTTPServer((addr, port), _handler(directory))
                except OSError as e:
                    log.warning("cannot serve build.wheelhouse on %s:%s: %s", addr, port, e)
                    return None
                srv.daemon_threads = True
                threading.Thread(target=srv.serve_forever, name="ds01-wheelhouse", daemon=True).start()
                self._server, self._key = srv, key
        return f"http://{addr}:{port}/"

    def close_locked(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server, self._key = None, None

    def close(self) -> None:
        with self._lock:
            self.close_locked()
