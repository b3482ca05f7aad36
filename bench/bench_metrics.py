"""Cost of one Prometheus scrape of ds01d with 100 managed containers (over HTTP, end to end).

8-GPU simulated host (4 cards MIG-split, 30 allocatable devices), 100 containers (all devices held),
10 queued requests, 5,000 events in history, ~40 API endpoints with latency histograms.

Run: PYTHONPATH=src python bench/bench_metrics.py [scrapes]
The bar (issue 7) is <= 50 ms per scrape.
"""

from __future__ import annotations

import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

from ds01.daemon.metrics import Metrics
from ds01.gpu.simulated import SimulatedSource
from ds01.models.config import Config, SimulatedGpu, SimulatedInventory
from ds01.services.events import EventLog
from ds01.state.db import Store


def host() -> SimulatedInventory:
    h100 = dict(name="NVIDIA H100 80GB HBM3", memory="80g")
    return SimulatedInventory(gpus=[SimulatedGpu(**h100) for _ in range(4)] + [
        SimulatedGpu(**h100, mig=["1g.10gb"] * 7), SimulatedGpu(**h100, mig=["1g.10gb"] * 7),
        SimulatedGpu(**h100, mig=["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]),
        SimulatedGpu(**h100, mig=["4g.40gb", "3g.40gb"])])


def setup(root: Path) -> Metrics:
    store = Store(root / "state.db")
    events = EventLog(root / "events.jsonl", store)
    src = SimulatedSource(host())
    inv = src.read()
    ctx = SimpleNamespace(config=Config(), store=store, events=events, gpu_source=src, inventory=inv,
                          instance="bench", clock=time.time)
    now = time.time()
    devices = [d.uuid for d in inv.allocatable]
    with store.transaction() as conn:
        for i in range(100):
            rid = store.insert_container(conn, uid=1000 + i % 25, user=f"user{i % 25}", project=f"p{i}",
                                         docker_id=f"{i:064x}", docker_name=f"c{i}", image="img",
                                         status=("running", "exited", "created")[i % 3], created_at=now - 3600)
            if i < len(devices):
                d = inv.device(devices[i])
                conn.execute("INSERT INTO allocations (container, uid, user, project, device, equivalents, start)"
                             " VALUES (?,?,?,?,?,?,?)", (rid, 1000 + i % 25, f"user{i % 25}", f"p{i}", d.uuid,
                                                         d.equivalents, now - 600))
        for i in range(10):
            conn.execute("INSERT INTO queue (uid, user, project, request, image, enqueued_at, status)"
                         " VALUES (?,?,?,?,?,?,'waiting')", (3000 + i, f"q{i}", "p", "{}", "img", now - 60 * i))
        for i in range(5000):
            conn.execute("INSERT INTO events (time, uid, user, action, target, result, reason) VALUES (?,?,?,?,?,?,?)",
                         (now - i, 1000, "user0", ("container.start", "lifecycle.stop", "gpu.release")[i % 3], "p",
                          "ok", ("idle_timeout" if i % 3 == 1 else None)))
    m = Metrics(SimpleNamespace(ctx=ctx))
    for i in range(40):
        m.api_latency.labels(f"GET /v1/route{i}").observe(0.01)
        for code in ("2xx", "4xx", "5xx"):
            m.api_requests.labels(f"GET /v1/route{i}", code)
    return m


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory() as tmp:
        m = setup(Path(tmp))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        m.start(f"127.0.0.1:{port}")
        url = f"http://127.0.0.1:{port}/metrics"
        body = urllib.request.urlopen(url).read()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            urllib.request.urlopen(url).read()
            times.append((time.perf_counter() - t0) * 1000)
        m.stop()
    times.sort()
    p50, p95, p99 = times[len(times) // 2], times[int(len(times) * 0.95)], times[int(len(times) * 0.99)]
    lines = body.count(b"\n")
    print(f"scrape (HTTP, 100 containers, {len(body)} bytes, {lines} lines): "
          f"p50 {p50:.2f} ms, p95 {p95:.2f} ms, p99 {p99:.2f} ms, max {times[-1]:.2f} ms, mean {statistics.mean(times):.2f} ms")
    print("bar: <= 50 ms ->", "PASS" if p95 <= 50 else "FAIL")


if __name__ == "__main__":
    main()
