"""Prometheus metrics (``prometheus-client``) on a local TCP address (default 127.0.0.1:9101).

Two kinds of series:
- **state** read at scrape time by one collector from the state DB (three indexed queries) and the
  GPU source (utilization cached ≤ 1 s): devices, holders, capacity, containers by state, queue;
- **counters and histograms** fed live: API latency (an aiohttp middleware), and, from the event
  log's listener hook, lifecycle actions by reason, queue waits, image build durations. Lifecycle
  counters start from the state DB's event history, so they stay monotonic across restarts.

Every label value a dashboard plots is pre-created (every device, every container state, every
API route, the known lifecycle reasons), so panels have no holes before the first occurrence.

The listener is a threaded WSGI server (prometheus-client's app, ``connections.serve_wsgi``: at most
``observability.metrics.max_connections`` at once, each with a timeout): a scrape never waits for
the daemon's event loop, and a slow or flooding scraper cannot stall the API.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from ds01 import __version__

log = logging.getLogger("ds01d")

CONTAINER_STATES = ("creating", "created", "running", "exited")
# (action, reason) pairs pre-created at 0. The lifecycle loop emits lifecycle.* events with a reason.
KNOWN_LIFECYCLE = (
    ("lifecycle.stop", "idle_timeout"),
    ("lifecycle.stop", "max_runtime"),
    ("lifecycle.remove", "container_hold_after_stop"),
    ("lifecycle.remove", "never_started"),
    ("lifecycle.warn", "idle_timeout"),
    ("lifecycle.warn", "max_runtime"),
    ("gpu.release", "gpu_hold_after_stop expired"),
    ("container.gone", "removed outside DS01"),
)
LIFECYCLE_PREFIXES = ("lifecycle.", "gpu.release", "container.gone")
API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
BUILD_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)


def is_lifecycle(action: str) -> bool:
    return action.startswith(LIFECYCLE_PREFIXES)


def endpoint_of(request: Any) -> str:
    """``GET /v1/containers/{ref}/start``: the route's template, never the raw path (bounded
    label values)."""
    try:
        info = request.match_info
        route = info.route
        res = route.resource
        if res is None or getattr(info, "http_exception", None) is not None:
            return "unmatched"
        return f"{route.method} {res.canonical}"
    except Exception:
        return "unmatched"


class Metrics:
    """The daemon's registry. ``api``: anything with the services' ``ctx`` (the daemon passes
    its ``Services``); ``status``: the StatusService whose cached utilization scrapes share."""

    def __init__(self, api: Any, status: Any = None):
        self.api = api
        self.ctx = api.ctx
        self.status = status
        disable_created_metrics()  # no *_created series: half the lines, nothing a dashboard uses
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.api_latency = Histogram("ds01_api_request_duration_seconds", "API request latency by endpoint",
                                     ["endpoint"], buckets=API_BUCKETS, registry=r)
        self.api_requests = Counter("ds01_api_requests", "API requests by endpoint and status class",
                                    ["endpoint", "code"], registry=r)
        self.queue_wait = Histogram("ds01_queue_wait_seconds", "Time a queued GPU request waited until served",
                                    buckets=WAIT_BUCKETS, registry=r)
        self.build_duration = Histogram("ds01_image_build_duration_seconds", "Image build durations",
                                        ["cached"], buckets=BUILD_BUCKETS, registry=r)
        self.lifecycle = Counter("ds01_lifecycle_actions", "Lifecycle actions by action and reason",
                                 ["action", "reason"], registry=r)
        self.denials = Counter("ds01_denials", "Refused requests by reason code", ["reason"], registry=r)
        for c in ("true", "false"):
            self.build_duration.labels(c)
        for a, why in KNOWN_LIFECYCLE:
            self.lifecycle.labels(a, why)
        for code in ("policy_denied", "permission_denied", "capacity_exhausted", "invalid_input", "not_found"):
            self.denials.labels(code)
        self._seed_lifecycle()
        self.collector = StateCollector(self)
        r.register(self.collector)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.address: tuple[str, int] | None = None

    # -- feeds -----------------------------------------------------------------------------
    def _seed_lifecycle(self) -> None:
        """Start the lifecycle counters from the recorded history (monotonic across restarts)."""
        try:
            rows = self.ctx.store.event_counts(LIFECYCLE_PREFIXES)
        except Exception:
            log.exception("could not read lifecycle history for metrics")
            return
        for row in rows:
            self.lifecycle.labels(row["action"], row["reason"]).inc(row["n"])

    def on_event(self, ev: dict[str, Any]) -> None:
        action = ev.get("action") or ""
        data = ev.get("data") or {}
        if is_lifecycle(action):
            self.lifecycle.labels(action, ev.get("reason") or "").inc()
        if ev.get("result") == "denied" and ev.get("reason"):
            self.denials.labels(str(ev["reason"])).inc()
        if action == "queue.served" and isinstance(data.get("waited_s"), (int, float)):
            self.queue_wait.observe(float(data["waited_s"]))
        elif action == "image.build" and ev.get("result") == "ok" and isinstance(data.get("seconds"), (int, float)):
            self.build_duration.labels("true" if data.get("up_to_date") else "false").observe(float(data["seconds"]))

    def precreate_endpoints(self, app: Any) -> None:
        for route in app.router.routes():
            res = route.resource
            if res is None or route.method == "HEAD":
                continue
            ep = f"{route.method} {res.canonical}"
            self.api_latency.labels(ep)
            for code in ("2xx", "4xx", "5xx"):
                self.api_requests.labels(ep, code)

    def middleware(self) -> Callable:
        from aiohttp import web

        @web.middleware
        async def timing(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
            t0 = time.perf_counter()
            code = 500
            try:
                resp = await handler(request)
                code = resp.status
                return resp
            except web.HTTPException as e:
                code = e.status
                raise
            finally:
                ep = endpoint_of(request)
                self.api_latency.labels(ep).observe(time.perf_counter() - t0)
                self.api_requests.labels(ep, f"{code // 100}xx").inc()

        return timing

    # -- listener --------------------------------------------------------------------------
    def start(self, listen: str) -> tuple[str, int] | None:
        """Serve on ``host:port`` in a background thread. A bind failure is logged, not fatal
        (observability must never keep the daemon from serving users)."""
        if not listen:
            return None
        from prometheus_client import make_wsgi_app

        from ds01.daemon.connections import serve_wsgi

        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        try:  # bounded threads, socket timeouts, rate-limited errors (issue 15)
            self._server, self._thread = serve_wsgi(
                host, int(port), make_wsgi_app(self.registry), self.ctx.config.observability.metrics.max_connections,
                self.ctx.config.daemon.connection_idle_timeout)
        except OSError as e:
            log.error("metrics listener on %s failed: %s (metrics are off)", listen, e)
            self.ctx.events.emit("daemon.metrics", target=listen, result="error", reason=str(e))
            return None
        self.address = self._server.server_address[:2]
        log.info("metrics on http://%s:%d/metrics", *self.address)
        return self.address

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class StateCollector(Collector):
    """State series computed at scrape time. Cheap by construction: three indexed DB queries,
    one cached utilization read, and no Docker calls."""

    def __init__(self, metrics: Metrics):
        self.m = metrics
        self._temps: tuple[float, dict[str, float]] = (0.0, {})

    def describe(self):  # no describe-time work (the registry would otherwise collect at register)
        return []

    def _utilization(self) -> dict:
        st = self.m.status
        if st is not None:
            return st.utilization()
        try:
            return self.m.ctx.gpu_source.utilization()
        except Exception:
            return {}

    def _temperatures(self) -> dict[str, float]:
        """GPU temperatures (°C) from NVML, cached 5 s; {} where the source has none (simulated)."""
        t, data = self._temps
        if time.monotonic() - t < 5:
            return data
        src = self.m.ctx.gpu_source
        data = {}
        try:
            data = src.temperatures()
        except Exception as e:  # best effort: a failing sensor must not fail the scrape
            log.debug("GPU temperature unavailable: %s", e)
            data = {}
        self._temps = (time.monotonic(), data)
        return data

    def collect(self):
        t0 = time.perf_counter()
        ctx = self.m.ctx
        inv = ctx.inventory
        store = ctx.store
        now = ctx.clock()
        allocs = store.open_allocations()
        held = {a["device"]: a for a in allocs}
        util = self._utilization()
        temps = self._temperatures()

        info = InfoMetricFamily("ds01_build", "DS01 version and instance")
        info.add_metric([], {"version": __version__, "instance": ctx.instance,
                             "gpu_source": getattr(ctx.gpu_source, "kind", "?")})
        yield info
        yield GaugeMetricFamily("ds01_up", "1 while ds01d serves", value=1)

        labels = ["device", "uuid"]
        dev_info = GaugeMetricFamily("ds01_gpu_device_info", "Every GPU / MIG instance (value 1)",
                                     labels=["device", "uuid", "kind", "name", "profile", "parent", "allocatable",
                                             "node"])
        allocated = GaugeMetricFamily("ds01_gpu_allocated", "1 if the device is held by a container", labels=labels)
        equiv = GaugeMetricFamily("ds01_gpu_device_equivalents", "GPU-equivalents of the device", labels=labels)
        util_g = GaugeMetricFamily("ds01_gpu_utilization_percent",
                                   "GPU utilization (NaN where the driver gives none, e.g. MIG)", labels=labels)
        mem_used = GaugeMetricFamily("ds01_gpu_memory_used_bytes", "Device memory in use (NaN if unknown)",
                                     labels=labels)
        mem_total = GaugeMetricFamily("ds01_gpu_memory_total_bytes", "Device memory", labels=labels)
        held_s = GaugeMetricFamily("ds01_gpu_held_seconds", "Seconds the current holder has held the device "
                                   "(0 when free)", labels=labels)
        holder = GaugeMetricFamily("ds01_gpu_holder_info", "Who holds a device (value 1)",
                                   labels=["device", "uuid", "user", "project"])
        temp = GaugeMetricFamily("ds01_gpu_temperature_celsius", "GPU temperature (NVML only)", labels=labels)
        allocatable = set(d.uuid for d in inv.allocatable)
        for d in inv.devices:
            lv = [d.label, d.uuid]
            dev_info.add_metric([d.label, d.uuid, d.kind, d.name, d.profile or "", d.parent_uuid or "",
                                 "true" if d.uuid in allocatable else "false", d.node or ""], 1)
            mem_total.add_metric(lv, d.memory_bytes)
            u = util.get(d.uuid)
            util_g.add_metric(lv, math.nan if u is None or u.gpu_percent is None else u.gpu_percent)
            mem_used.add_metric(lv, math.nan if u is None or u.memory_used_bytes is None else u.memory_used_bytes)
            if d.uuid in temps:
                temp.add_metric(lv, temps[d.uuid])
            if d.uuid not in allocatable:
                continue
            a = held.get(d.uuid)
            allocated.add_metric(lv, 1 if a else 0)
            equiv.add_metric(lv, d.equivalents)
            held_s.add_metric(lv, max(0.0, now - a["start"]) if a else 0)
            if a:
                holder.add_metric([d.label, d.uuid, a["user"], a["project"]], 1)
        yield from (dev_info, allocated, equiv, util_g, mem_used, mem_total, held_s, holder, temp)

        total = inv.total_equivalents
        used = sum(a["equivalents"] for a in allocs if a["device"] in allocatable)
        yield GaugeMetricFamily("ds01_gpu_total_equivalents", "Allocatable GPU-equivalents", value=total)
        yield GaugeMetricFamily("ds01_gpu_allocated_equivalents", "GPU-equivalents held", value=used)
        yield GaugeMetricFamily("ds01_gpu_free_equivalents", "GPU-equivalents free", value=max(0.0, total - used))

        per_user: dict[str, float] = {}
        # users seen in the last week stay listed at 0, so their series do not vanish between jobs
        for name in store.allocation_users(since=now - 7 * 86400):
            per_user[name] = 0.0
        for name in ctx.config.users:
            per_user.setdefault(name, 0.0)
        for a in allocs:
            per_user[a["user"]] = per_user.get(a["user"], 0.0) + a["equivalents"]
        ug = GaugeMetricFamily("ds01_user_gpu_equivalents", "GPU-equivalents held per user", labels=["user"])
        for name, eq in sorted(per_user.items()):
            ug.add_metric([name], round(eq, 6))
        yield ug

        by_state = {s: 0 for s in CONTAINER_STATES}
        by_state.update(store.container_counts(CONTAINER_STATES))
        cg = GaugeMetricFamily("ds01_containers", "Managed containers by state", labels=["state"])
        for s, n in by_state.items():
            cg.add_metric([s], n)
        yield cg

        waiting = store.waiting()
        yield GaugeMetricFamily("ds01_queue_length", "GPU requests waiting", value=len(waiting))
        oldest = max((now - w["enqueued_at"] for w in waiting), default=0.0)
        yield GaugeMetricFamily("ds01_queue_oldest_wait_seconds", "How long the oldest waiting request has waited",
                                value=max(0.0, oldest))
        yield GaugeMetricFamily("ds01_scrape_collect_seconds", "Time this collector took",
                                value=time.perf_counter() - t0)
