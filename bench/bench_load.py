"""Concurrent clients against one real ds01d: U users x T threads, each looping `container-list`,
`ds01 status` and deploy+retire of its own project for D seconds. Prints p50/p99 latency per
command (and idle `container-list` for the ratio), request errors by exit code, false
`container.gone` events, containers left without a record, and the daemon's peak RSS.

Where the time goes: `GET /v1/containers` from one long-lived client process (the daemon's answer
without a CLI's start) and inside the daemon (its latency histogram); the CPU of the machine,
ds01d, the engine and the rest (the clients); the runnable tasks; and what that means for a CLI:
one `container-list` needs C ms of CPU of its own, so with R runnable tasks on K cores it takes at
least C*R/K ms however fast the daemon answers.

    sudo /opt/ds01/venv/bin/python bench/bench_load.py [--users 5 --threads 10 --seconds 60]
        [--nice N (ds01d's nice, as a unit's Nice=)] [--profile FILE (py-spy, speedscope JSON)]

Needs root, a Docker Engine and the test users (scripts/test.sh creates them). Not run by CI.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker  # noqa: E402

from bench.bench_scale import TICKS, cpu_s  # noqa: E402
from tests.integration.harness import (USERS, ensure_busybox_image, ensure_users, free_port, new_daemon,  # noqa: E402
                                       unique_project)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores, /proc/stat)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(f) - f[3] - f[4]) / TICKS  # minus idle and iowait


def runnable() -> int:
    """Tasks runnable now, machine-wide (/proc/stat ``procs_running``, this sampler included)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("procs_running"):
            return int(line.split()[1])
    return 0


def renice(pid: int, nice: int) -> None:
    """Every thread of ``pid`` (Linux nice is per thread; threads made later inherit their maker's)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.setpriority(os.PRIO_PROCESS, int(tid), nice)


def engine_pids() -> list[int]:
    out = subprocess.run(["pidof", "dockerd", "containerd"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


PROBE = """
import json, sys, time
from ds01.client import api
from ds01.client.http import Client
c, out, end = Client(sys.argv[1]), [], time.perf_counter() + float(sys.argv[5])
for _ in range(int(sys.argv[3])):
    t = time.perf_counter()
    if t > end:
        break
    api.containers(c, user=sys.argv[2])
    out.append(time.perf_counter() - t)
    time.sleep(float(sys.argv[4]))
print(json.dumps(out))
"""


def probe(d, user: str, n: int, pause: float, seconds: float = 600) -> list[float]:
    """``GET /v1/containers`` from one long-lived process of its own (no CLI start, no GIL shared with
    this one's threads): the daemon's answer as a client sees it, ``n`` times ``pause`` s apart, for
    at most ``seconds``."""
    p = subprocess.run([sys.executable, "-c", PROBE, str(d.socket), USERS[user], str(n), str(pause), str(seconds)],
                       capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


LIST = 'endpoint="GET /v1/containers"'


def list_buckets(port: int) -> dict[float, float]:
    """The daemon's own latency histogram of GET /v1/containers (middleware in to out): le -> count."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("ds01_api_request_duration_seconds_bucket{") and LIST in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def bucket_pct(a: dict[float, float], b: dict[float, float], p: float) -> float:
    """The bucket bound under which ``p`` % of the requests between scrapes ``a`` and ``b`` fell."""
    total = b[float("inf")] - a.get(float("inf"), 0)
    for le in sorted(b):
        if total and (b[le] - a.get(le, 0)) >= p / 100 * total:
            return le
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=5)
    ap.add_argument("--threads", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--nice", type=int, help="run ds01d at this nice value (as a unit's Nice= would)")
    ap.add_argument("--profile", metavar="FILE", help="py-spy record the daemon meanwhile (speedscope JSON)")
    args = ap.parse_args()
    client = docker.from_env()
    ensure_users()
    ensure_busybox_image(client)
    users = [u for u in USERS if u != "adm"][: args.users] or ["alice"]
    d = new_daemon()
    d.config["defaults"] = {"max_containers": 50, "max_gpus": 8.0}
    port = free_port()
    d.config["observability"] = {"metrics": {"listen": f"127.0.0.1:{port}"}, "web": {"listen": ""}}
    d.start()
    if args.nice is not None:
        renice(d.proc.pid, args.nice)
    try:
        idle = []
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        for _ in range(15):
            t = time.perf_counter()
            d.run(users[0], "container-list")
            idle.append(time.perf_counter() - t)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cli_cpu = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / len(idle)  # runuser+env+CLI
        idle_probe = probe(d, users[0], 15, 0)
        lat: dict[str, list[float]] = defaultdict(list)
        errors: Counter = Counter()
        samples: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()
        peak = [rss_kib(d.proc.pid)]
        queue: list[int] = []

        def worker(user: str, i: int) -> None:
            project = unique_project(f"load{i}")
            cycle = [("container-list", []), ("ds01", ["status"]),
                     ("container-deploy", [project, "--background"]), ("container-retire", [project])]
            while not stop.is_set():
                for cmd, a in cycle:
                    t = time.perf_counter()
                    p = d.run(user, cmd, *a, timeout=300)
                    dt = time.perf_counter() - t
                    with lock:
                        lat[" ".join([cmd, *a[:1]]) if cmd == "ds01" else cmd].append(dt)
                        if p.returncode:
                            errors[(cmd, p.returncode)] += 1
                            if len(samples) < 5:
                                samples.append(p.stderr.strip()[-200:])

        def sampler() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], rss_kib(d.proc.pid))
                queue.append(runnable())
                time.sleep(0.5)

        n = len(users) * args.threads
        spy = None
        if args.profile:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(d.proc.pid),
                                    "-d", str(int(args.seconds)), "-r", "50", "-f", "speedscope", "-t", "-o",
                                    args.profile], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        engine = engine_pids()
        h0 = list_buckets(port)
        cpu0 = (busy_s(), cpu_s(d.proc.pid), sum(cpu_s(p) for p in engine), time.time())
        with ThreadPoolExecutor(max_workers=n + 2) as pool:
            futs = [pool.submit(worker, u, i) for u in users for i in range(args.threads)]
            futs += [pool.submit(sampler)]
            lat["GET /v1/containers"] = probe(d, users[0], 10**6, 0.05, args.seconds)
            stop.set()
            for f in futs:
                f.result()
        wall = time.time() - cpu0[3]
        busy, daemon_cpu = busy_s() - cpu0[0], cpu_s(d.proc.pid) - cpu0[1]
        engine_cpu = sum(cpu_s(p) for p in engine) - cpu0[2]
        h1 = list_buckets(port)
        if spy is not None:
            spy.wait()
        rows = json.loads(d.run("adm", "ds01", "events", "--since", "2h", "--json").stdout or "[]")
        gone = sum(1 for e in rows if e.get("action") == "container.gone")
        leftover = json.loads(d.run("adm", "container-list", "--all-users", "--all", "--json").stdout or "[]")
        engine = d.containers(client)
        recorded = {r["name"] for r in leftover}
        orphans = [c.name for c in engine if c.name not in recorded]
        print(f"{n} clients ({len(users)} users x {args.threads} threads), {args.seconds:.0f} s")
        print(f"idle container-list: p50 {statistics.median(idle) * 1000:.0f} ms; idle GET /v1/containers "
              f"(one long-lived client): p50 {statistics.median(idle_probe) * 1000:.1f} ms")
        for k, xs in sorted(lat.items()):
            print(f"{k:18s} n={len(xs):5d}  p50 {pct(xs, 50) * 1000:6.0f} ms  p99 {pct(xs, 99) * 1000:6.0f} ms")
        lp99 = pct(lat["container-list"], 99)
        print(f"container-list p99 / idle p50: {lp99 / statistics.median(idle):.2f}x; GET /v1/containers p99 / "
              f"idle p50: {pct(lat['GET /v1/containers'], 99) / statistics.median(idle_probe):.2f}x")
        print(f"GET /v1/containers inside ds01d (middleware, all callers, bucket bounds): "
              f"n={h1[float('inf')] - h0[float('inf')]:.0f} p50 <= {bucket_pct(h0, h1, 50) * 1000:g} ms, "
              f"p99 <= {bucket_pct(h0, h1, 99) * 1000:g} ms")
        print(f"errors: {sum(errors.values())} {dict(errors)} {samples}")
        print(f"false container.gone events: {gone}; engine containers without a record: {len(orphans)}")
        print(f"daemon peak RSS: {peak[0] / 1024:.0f} MiB")
        cores = os.cpu_count() or 1
        print(f"CPU over the run ({cores} cores, {wall:.0f} s): machine busy {busy / wall / cores:.0%}; "
              f"ds01d {daemon_cpu / wall / cores:.0%}, dockerd+containerd {engine_cpu / wall / cores:.0%}, "
              f"the rest (clients, runuser, shims) {(busy - daemon_cpu - engine_cpu) / wall / cores:.0%}; "
              f"runnable tasks: mean {statistics.mean(queue):.0f}, max {max(queue)}")
        floor = cli_cpu * statistics.mean(queue) / cores
        print(f"one container-list CLI needs {cli_cpu * 1000:.0f} ms CPU of its own: at that share of the cores "
              f"it takes >= {floor * 1000:.0f} ms, {floor / statistics.median(idle):.1f}x idle, with a daemon "
              f"that answers in 0 ms")
    finally:
        d.destroy(client)


if __name__ == "__main__":
    main()
