"""``ds01 admin dashboard --web``: the admin dashboard as a web page, served by the CLI itself
(stdlib ``http.server``, run as the admin) on a local port, each load asking the daemon over
its socket. Same charts as the status page (``ds01.svg``: inline SVG, works offline), plus the
dashboard's tables, with user names (admins see them).

Other users on this host can reach a 127.0.0.1 port too, so the page lives under a random path
(``http://127.0.0.1:PORT/<token>/``) printed only to the admin; anything else is a 404. The
``Host`` header must name this listener (a web site cannot rebind its DNS name onto the port).
"""

from __future__ import annotations

import datetime as dt
import html
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from ds01.svg import CSS as CHART_CSS
from ds01.svg import charts_html

PAGE_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em} h2{font-size:1.1em;margin:1.2em 0 .4em}
table{border-collapse:collapse;background:#fff;min-width:60%} th,td{padding:.25em .7em;border-bottom:1px solid #ddd;
text-align:left} th{background:#eee} .muted{color:#777} .warn{color:#9a3412}
"""

Sections = Callable[[dict], tuple[list[str], list[tuple[str, list[str], list[list[Any]], str]]]]


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def render(st: dict, sections: Sections, refresh: int = 10) -> str:
    """The page: header lines, the charts, then every dashboard section as a table."""
    head, secs = sections(st)
    when = dt.datetime.fromtimestamp(st["time"]).strftime("%Y-%m-%d %H:%M:%S")
    out = ["<!doctype html><html lang=en><head><meta charset=utf-8>",
           f'<meta http-equiv="refresh" content="{int(refresh)}">',
           "<title>DS01 admin dashboard</title>", f"<style>{PAGE_CSS}{CHART_CSS}</style></head><body>",
           "<h1>DS01 admin dashboard</h1>",
           f'<div class="muted">updated {_e(when)} · refreshes every {int(refresh)} s · '
           '<a href="dashboard.json">dashboard.json</a></div>']
    out += [f'<p class="{"warn" if h.startswith("warning") else ""}">{_e(h)}</p>' for h in head]
    out.append(charts_html(st.get("charts")))
    for title, cols, rows, empty in secs:
        if title.startswith("GPU history"):  # the terminal's sparklines: the charts above say it better
            continue
        ident = "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")
        out.append(f'<h2>{_e(title)}</h2><table id="{_e(ident)}"><thead><tr>'
                   + "".join(f"<th>{_e(c)}</th>" for c in cols) + "</tr></thead><tbody>")
        if not rows:
            out.append(f'<tr><td colspan={len(cols)} class="muted">{_e(empty)}</td></tr>')
        for r in rows:
            out.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>")
        out.append("</tbody></table>")
    out.append("</body></html>")
    return "".join(out)


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, fetch: Callable[[], dict], sections: Sections, refresh: int = 10):
        self.sections, self.refresh = sections, refresh
        self._fetch, self._lock = fetch, threading.Lock()
        self.token = secrets.token_urlsafe(16)
        super().__init__((host, port), _Handler)
        self.port = self.server_address[1]
        self.hosts = {f"{n}:{self.port}" for n in ("127.0.0.1", "localhost", "[::1]", host.lower())}

    def fetch(self) -> dict:
        with self._lock:  # one daemon connection, shared by the handler threads
            return self._fetch()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.token}/"


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the terminal shows the URL only
        pass

    def _send(self, code: int, body: str, ctype: str = "text/plain; charset=utf-8") -> None:
        data = body.encode()
        self.send_response(code)
        for k, v in (("Content-Type", ctype), ("Content-Length", str(len(data))), ("Cache-Control", "no-store"),
                     ("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
                     ("Referrer-Policy", "no-referrer"),
                     ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
                                                 "form-action 'none'")):
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        srv = self.server
        if self.headers.get("Host", "").lower() not in srv.hosts:
            return self._send(421, "unknown Host: open the URL ds01 printed\n")
        base = f"/{srv.token}/"
        if not self.path.startswith(base):
            return self._send(404, "not found\n")
        rest = self.path[len(base):].split("?")[0]
        try:
            if rest == "":
                return self._send(200, render(srv.fetch(), srv.sections, srv.refresh), "text/html; charset=utf-8")
            if rest == "dashboard.json":
                return self._send(200, json.dumps(srv.fetch(), default=str), "application/json")
        except Exception as e:  # the daemon went away, or refused: say so on the page
            msg = getattr(e, "message", None) or str(e) or type(e).__name__
            return self._send(502, f"the daemon did not answer: {msg}\n")
        return self._send(404, "not found\n")


def serve(fetch: Callable[[], dict], sections: Sections, port: int, refresh: int = 10,
          announce: Callable[[str], None] | None = None) -> None:
    """Serve until Ctrl-C on 127.0.0.1:``port`` (0: a free one)."""
    srv = DashboardServer("127.0.0.1", port, fetch, sections, refresh)
    (announce or (lambda m: print(m, flush=True)))(f"admin dashboard on {srv.url}  (Ctrl-C to stop; from your machine: "
             f"ssh -L {srv.port}:127.0.0.1:{srv.port} <this host>, then open that URL)")
    try:
        srv.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
