"""The read-only web status page, served by ds01d on a local TCP address (default 127.0.0.1:9102).

    GET /             server-rendered HTML: GPUs with holders and utilization, capacity, charts
                      (24 h of allocation and utilization per device, the week's GPU-hours per
                      user: inline SVG, ``ds01.svg``), the queue, recent events; refreshes
                      itself (``<meta http-equiv=refresh>``, no JavaScript)
    GET /status.json  the same data as JSON
    GET /healthz      "ok"

Reach it through an SSH tunnel (``ssh -L 9102:127.0.0.1:9102 host``, then http://localhost:9102/):
every link is relative, so it also works behind a reverse proxy under a sub-path. Nothing on it
changes anything. User and project names appear only with ``observability.web.show_user_names``
(default off; ``hide_user_names`` still hides them). The page is rendered at most once a second
however many browsers refresh it.

Every request must name this page in its ``Host`` header (the listen host, 127.0.0.1, localhost
or ::1, with the bound port): a web site the browser visits cannot rebind its own DNS name to the
tunnel's local port and read the page. Connections are bounded (``web.max_connections``; more get
a 503) and closed when idle, like the API socket's (``daemon.connections``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import json
import logging
import socket
import time
from typing import Any, Callable

from aiohttp import web

from ds01.daemon.connections import ConnectionGuard, tcp_site
from ds01.svg import CSS as CHART_CSS
from ds01.svg import charts_html

log = logging.getLogger("ds01d")

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em} h2{font-size:1.1em;margin:1.2em 0 .4em}
table{border-collapse:collapse;background:#fff;min-width:60%} th,td{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:left}
th{background:#eee} td.num{text-align:right;font-variant-numeric:tabular-nums}
.free{color:#1a7f37;font-weight:600} .held{color:#9a3412;font-weight:600} .muted{color:#777}
.bar{display:inline-block;height:.8em;background:#3b82f6;vertical-align:middle}
.barbox{display:inline-block;width:80px;height:.8em;background:#e5e7eb;margin-right:.4em;vertical-align:middle}
.cap{font-size:1.1em} .err{color:#b91c1c}
"""


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _size(n: Any) -> str:
    if n is None or (isinstance(n, float) and n != n):
        return "-"
    from ds01.units import format_size

    return format_size(n)


def _ago(ts: float | None, now: float) -> str:
    if not ts:
        return ""
    from ds01.units import format_duration

    return format_duration(max(0.0, now - ts))


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def render(data: dict[str, Any], refresh: float) -> str:
    now = data["time"]
    inv = data["gpus"]
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f'<meta http-equiv="refresh" content="{int(refresh)}">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        "<title>DS01 status</title>", f"<style>{CSS}{CHART_CSS}</style></head><body>",
        "<h1>DS01 status</h1>",
        f'<div class="muted">updated {_e(_when(now))} · refreshes every {int(refresh)} s · '
        f'<a href="status.json">status.json</a></div>',
    ]
    total, free = inv["total_equivalents"], inv["free_equivalents"]
    pct = 0 if not total else 100.0 * free / total
    out.append(f'<p class="cap" id="capacity">Free: <b>{free:.2f}</b> of {total:.2f} GPU-equivalents ({pct:.0f} %) · '
               f'queued requests: <b>{len(data["queue"])}</b> · driver {_e(inv.get("driver_version") or "-")} '
               f'({_e(inv.get("source"))})</p>')

    out.append('<h2>GPUs</h2><table id="gpus"><thead><tr><th>GPU</th><th>device</th><th>equiv.</th>'
               "<th>holder</th><th>held for</th><th>utilization</th><th>memory used</th><th>processes</th>"
               "</tr></thead><tbody>")
    if not inv["devices"]:
        out.append('<tr><td colspan=8 class="muted">no GPUs on this host</td></tr>')
    for d in inv["devices"]:
        alloc = d.get("allocatable", True)
        kind = d["profile"] if d["kind"] == "mig" else d["name"]
        if not alloc:
            kind = f"{d['name']} (MIG-split)"
        h = d.get("holder")
        if h:
            holder = f'<span class="held">{_e(h["user"])}/{_e(h["project"])}</span>'
        elif alloc:
            holder = '<span class="free">free</span>'
        else:
            holder = '<span class="muted">-</span>'
        u = d.get("utilization") or {}
        g = u.get("gpu_percent")
        if g is None:
            util = '<span class="muted">n/a</span>'
        else:
            util = (f'<span class="barbox"><span class="bar" style="width:{max(0, min(100, g)) * 0.8:.0f}px">'
                    f"</span></span>{g:.0f} %")
        mem = f'{_size(u.get("memory_used_bytes"))} / {_size(d["memory_bytes"])}'
        procs = d.get("processes") or []
        ptxt = []
        for p in procs:
            if p.get("managed"):
                ptxt.append(f'{p["pid"]} ({_e(p.get("user"))}/{_e(p.get("project"))})')
            else:
                who = p.get("container") or p.get("user") or ""
                ptxt.append(f'{p["pid"]} <span class="err">unmanaged {_e(p["kind"])}'
                            f'{(" " + _e(who)) if who else ""}</span>')
        cls = ' class="held-row"' if h else ""
        eq = f"{d['equivalents']:.2f}" if alloc else "-"
        out.append(f'<tr{cls} data-uuid="{_e(d["uuid"])}"><td>{_e(d["label"])}</td><td>{_e(kind)}</td>'
                   f'<td class=num>{eq}</td><td>{holder}</td>'
                   f'<td>{_e(_ago(h["since"], now)) if h else ""}</td><td>{util}</td><td>{_e(mem)}</td>'
                   f'<td>{", ".join(ptxt) or "<span class=muted>-</span>"}</td></tr>')
    out.append("</tbody></table>")

    out.append(charts_html(data.get("charts")))

    out.append('<h2>Queue</h2><table id="queue"><thead><tr><th>#</th><th>user</th><th>project</th>'
               "<th>waiting for</th><th>waited</th></tr></thead><tbody>")
    if not data["queue"]:
        out.append('<tr><td colspan=5 class="muted">nobody is waiting</td></tr>')
    for q in data["queue"]:
        out.append(f'<tr><td>{q["position"]}</td><td>{_e(q["user"])}</td><td>{_e(q["project"])}</td>'
                   f'<td>{_e(q["request"])}</td><td>{_e(_ago(now - q["waiting_s"], now))}</td></tr>')
    out.append("</tbody></table>")

    jobs = data.get("jobs") or {"running": [], "queued": []}
    out.append(f'<h2>Batch jobs</h2><p id="jobs-count">running: <b>{len(jobs["running"])}</b> · queued: '
               f'<b>{len(jobs["queued"])}</b></p><table id="jobs"><thead><tr><th>job</th><th>user</th>'
               "<th>project</th><th>state</th><th>GPUs</th><th>for</th></tr></thead><tbody>")
    if not jobs["running"] and not jobs["queued"]:
        out.append('<tr><td colspan=6 class="muted">no batch jobs</td></tr>')
    for j in jobs["running"] + jobs["queued"]:
        since = j["started_at"] if j["state"] != "queued" else j["submitted_at"]
        label = f'{j["id"]}' + (f'[{j["array_index"]}]' if j.get("array_index") is not None else "")
        out.append(f'<tr><td>{_e(label)}</td><td>{_e(j["user"])}</td><td>{_e(j["project"])}</td>'
                   f'<td>{_e(j["state"])}</td><td>{_e(", ".join(j["gpus"]) or j["request"])}</td>'
                   f'<td>{_e(_ago(since, now))}</td></tr>')
    out.append("</tbody></table>")

    out.append('<h2>Recent events</h2><table id="events"><thead><tr><th>time</th><th>action</th><th>user</th>'
               "<th>target</th><th>result</th></tr></thead><tbody>")
    if not data["events"]:
        out.append('<tr><td colspan=5 class="muted">no events</td></tr>')
    for ev in data["events"]:
        res = ev.get("result") or ""
        rc = "" if res == "ok" else ' class="err"'
        out.append(f'<tr><td>{_e(_when(ev["time"]))}</td><td>{_e(ev["action"])}</td><td>{_e(ev.get("user") or "")}</td>'
                   f'<td>{_e(ev.get("target") or "")}</td><td{rc}>{_e(res)}</td></tr>')
    out.append("</tbody></table>")
    if data.get("names_hidden"):
        out.append('<p class="muted">user names are hidden on this page (admin setting)</p>')
    out.append("</body></html>")
    return "".join(out)


def allowed_hosts(listen_host: str, port: int) -> set[str]:
    """The ``Host`` header values the page answers (lower case): the names of this listener."""
    names = {listen_host.lower(), "127.0.0.1", "localhost", "[::1]"}
    if ":" in listen_host:
        names.add(f"[{listen_host.lower()}]")
    if listen_host in ("0.0.0.0", "::", ""):  # all interfaces: this host's own names too
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    out = {f"{n}:{port}" for n in names}
    if port == 80:
        out |= names
    return out


class StatusPage:
    def __init__(self, status: Any, web_cfg: Any, idle: float = 5.0,
                 on_refused: Callable[[int, dict, str], None] | None = None, charts: Any = None):
        self.status = status
        self.charts = charts
        self.cfg = web_cfg
        self._cache: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()
        self.runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None
        self.hosts: set[str] = set()
        self.guard = ConnectionGuard("status page", web_cfg.max_connections, idle=idle, on_refused=on_refused,
                                     label="the status page")

    @property
    def hide_names(self) -> bool:
        return self.cfg.hide_user_names or not self.cfg.show_user_names

    async def data(self) -> dict[str, Any]:
        async with self._lock:
            if self._cache and time.monotonic() - self._cache[0] < 1.0:
                return self._cache[1]
            d = await asyncio.to_thread(self.status.public, self.hide_names, self.cfg.recent_events)
            if self.charts is not None:
                try:
                    d["charts"] = await asyncio.to_thread(self.charts.view, self.hide_names)
                except Exception:  # the tables still show
                    log.exception("status page charts failed")
            self._cache = (time.monotonic(), d)
            return d

    def headers(self) -> dict[str, str]:
        return {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                "Referrer-Policy": "no-referrer",
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                           "img-src 'self'; base-uri 'none'; form-action 'none'"}

    async def index(self, request: web.Request) -> web.Response:
        try:
            body = render(await self.data(), self.cfg.refresh)
        except Exception:
            log.exception("status page failed")
            return web.Response(status=500, text="status unavailable; see the daemon log", headers=self.headers())
        return web.Response(text=body, content_type="text/html", charset="utf-8", headers=self.headers())

    async def json(self, request: web.Request) -> web.Response:
        d = await self.data()
        return web.Response(text=json.dumps(d, default=str), content_type="application/json",
                            headers=self.headers())

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    @web.middleware
    async def check_host(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Host", "").lower() not in self.hosts:
            return web.Response(status=421, text="unknown Host: open this page as http://localhost:<port>/ "
                                "(or 127.0.0.1) through its SSH tunnel\n", headers=self.headers())
        return await handler(request)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.guard.middleware(), self.check_host])
        app.add_routes([web.get("/", self.index), web.get("/status.json", self.json),
                        web.get("/healthz", self.healthz)])
        return app

    async def start(self, listen: str) -> tuple[str, int] | None:
        """Bind ``host:port``; a failure is logged, not fatal (users are served over the socket)."""
        if not listen:
            return None
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        self.runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self.runner.setup()
        site = tcp_site(self.runner, host, int(port), self.guard)
        try:
            await site.start()
        except OSError as e:
            log.error("status page on %s failed: %s (the page is off)", listen, e)
            await self.runner.cleanup()
            self.runner = None
            return None
        addrs = self.runner.addresses  # what was bound (port 0 = a free one)
        self.address = tuple(addrs[0][:2]) if addrs else (host, int(port))
        self.hosts = allowed_hosts(host, self.address[1])
        log.info("status page on http://%s:%d/", *self.address)
        return self.address

    async def stop(self) -> None:
        self.guard.close()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
