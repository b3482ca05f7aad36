"""The daemon at 10/50/100/200 running containers: `container-list` vs `docker ps -a`, `ds01 status`,
one metrics scrape, the tick's CPU and the daemon's RSS, measured against a real ds01d and engine.

    sudo /opt/ds01/venv/bin/python bench/bench_scale.py [--steps 10,50,100,200] [--rounds 9]

Bars (issue 16): list <= docker ps -a, status <= 150 ms, tick <= 70 ms CPU, RSS <= 100 MiB.
Needs root, a Docker Engine and the test users (scripts/test.sh creates them). Not run by CI.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker  # noqa: E402

from tests.integration.harness import (BIN, USERS, ensure_busybox_image, ensure_users, free_port,  # noqa: E402
                                       new_daemon)

TICKS = os.sysconf("SC_CLK_TCK")


def timed(argv: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t


def cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICKS  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", default="10,50,100,200")
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    steps = [int(x) for x in args.steps.split(",")]
    client = docker.from_env()
    ensure_users()
    ensure_busybox_image(client)
    users = [u for u in USERS if u != "adm"]
    d = new_daemon()
    port = free_port()
    d.config["defaults"] = {"max_containers": max(steps)}
    d.config["daemon"]["tick_interval"] = "2s"
    d.config["observability"] = {"metrics": {"listen": f"127.0.0.1:{port}"}, "web": {"listen": ""}}
    d.start()
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "DS01_ROOT": str(d.root), "LANG": "C.UTF-8"}
    as_user = ["runuser", "-u", USERS["alice"], "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()]]
    as_root = ["runuser", "-u", "root", "--"]
    made = 0
    print(f"{'containers':>10} {'list ms':>8} {'ps -a ms':>8} {'ratio':>6} {'status ms':>9} {'scrape ms':>9} "
          f"{'tick cpu ms':>11} {'rss MiB':>8}")
    try:
        for n in steps:
            todo = [(users[i % len(users)], f"scale-{i}") for i in range(made, n)]
            with ThreadPoolExecutor(max_workers=4) as pool:
                list(pool.map(lambda up: d.run(up[0], "container-deploy", up[1], "--background"), todo))
            made = n
            ls = [timed([*as_user, str(BIN / "container-list")]) for _ in range(args.rounds)]
            ps = [timed([*as_root, "docker", "ps", "-a"]) for _ in range(args.rounds)]
            st = [timed([*as_user, str(BIN / "ds01"), "status"]) for _ in range(args.rounds)]
            sc = []
            for _ in range(args.rounds):
                t = time.perf_counter()
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
                sc.append(time.perf_counter() - t)
            # the tick's CPU: the daemon's CPU over quiet tick intervals, per tick
            pid = d.proc.pid
            c0, t0 = cpu_s(pid), time.time()
            time.sleep(10)
            per_tick = (cpu_s(pid) - c0) / ((time.time() - t0) / 2.0)
            ratio = statistics.median(a / b for a, b in zip(ls, ps))
            print(f"{n:>10} {statistics.median(ls) * 1000:8.0f} {statistics.median(ps) * 1000:8.0f} {ratio:6.2f} "
                  f"{statistics.median(st) * 1000:9.0f} {statistics.median(sc) * 1000:9.1f} {per_tick * 1000:11.0f} "
                  f"{rss_mib(pid):8.0f}", flush=True)
    finally:
        d.destroy(client)


if __name__ == "__main__":
    main()
