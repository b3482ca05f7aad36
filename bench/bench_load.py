"""Concurrent clients against one real ds01d: U users x T threads, each looping `container-list`,
`ds01 status` and deploy+retire of its own project for D seconds. Prints p50/p99 latency per
command (and idle `container-list` for the ratio), request errors by exit code, false
`container.gone` events, containers left without a record, and the daemon's peak RSS.

    sudo /opt/ds01/venv/bin/python bench/bench_load.py [--users 5 --threads 10 --seconds 60]

Needs root, a Docker Engine and the test users (scripts/test.sh creates them). Not run by CI.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker  # noqa: E402

from tests.integration.harness import USERS, ensure_busybox_image, ensure_users, new_daemon, unique_project  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=5)
    ap.add_argument("--threads", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=60)
    args = ap.parse_args()
    client = docker.from_env()
    ensure_users()
    ensure_busybox_image(client)
    users = [u for u in USERS if u != "adm"][: args.users] or ["alice"]
    d = new_daemon()
    d.config["defaults"] = {"max_containers": 50, "max_gpus": 8.0}
    d.start()
    try:
        idle = []
        for _ in range(15):
            t = time.perf_counter()
            d.run(users[0], "container-list")
            idle.append(time.perf_counter() - t)
        lat: dict[str, list[float]] = defaultdict(list)
        errors: Counter = Counter()
        samples: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()
        peak = [rss_kib(d.proc.pid)]

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
                time.sleep(0.5)

        n = len(users) * args.threads
        with ThreadPoolExecutor(max_workers=n + 1) as pool:
            futs = [pool.submit(worker, u, i) for u in users for i in range(args.threads)]
            futs.append(pool.submit(sampler))
            time.sleep(args.seconds)
            stop.set()
            for f in futs:
                f.result()
        rows = json.loads(d.run("adm", "ds01", "events", "--since", "2h", "--json").stdout or "[]")
        gone = sum(1 for e in rows if e.get("action") == "container.gone")
        leftover = json.loads(d.run("adm", "container-list", "--all-users", "--all", "--json").stdout or "[]")
        engine = d.containers(client)
        recorded = {r["name"] for r in leftover}
        orphans = [c.name for c in engine if c.name not in recorded]
        print(f"{n} clients ({len(users)} users x {args.threads} threads), {args.seconds:.0f} s")
        print(f"idle container-list: p50 {statistics.median(idle) * 1000:.0f} ms")
        for k, xs in sorted(lat.items()):
            print(f"{k:18s} n={len(xs):5d}  p50 {pct(xs, 50) * 1000:6.0f} ms  p99 {pct(xs, 99) * 1000:6.0f} ms")
        lp99 = pct(lat["container-list"], 99)
        print(f"container-list p99 / idle p50: {lp99 / statistics.median(idle):.2f}x")
        print(f"errors: {sum(errors.values())} {dict(errors)} {samples}")
        print(f"false container.gone events: {gone}; engine containers without a record: {len(orphans)}")
        print(f"daemon peak RSS: {peak[0] / 1024:.0f} MiB")
    finally:
        d.destroy(client)


if __name__ == "__main__":
    main()
