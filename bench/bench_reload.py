"""How fast a changed limit applies in a real ds01d with 200 running containers and 300 queued GPU
requests: the config file is edited, then the daemon is told by SIGHUP, by `POST /v1/admin/reload`
(what `ds01 admin reload` sends), by the `ds01 admin reload` CLI itself, and by
`ds01 admin limits set` (file edit + reload in the daemon); each time until the new value is what
`GET /v1/admin/limits?user=U` answers.

    sudo /opt/ds01/venv/bin/python bench/bench_reload.py [--containers 200 --queued 300 --rounds 9]

The containers are tiny busybox ones (as bench_scale's), deployed through the API; 4 of them hold
the 4 simulated GPUs, so every further `--gpus 1 --queue` create waits in the queue: the queued
requests go in through the real API (`POST /v1/containers` with queue=true), not into the DB.
Bar (issue 16): reload applies in <= 1 s. Needs root, a Docker Engine and the test users.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker  # noqa: E402

from ds01.client import api  # noqa: E402
from ds01.client.http import Client  # noqa: E402
from tests.integration.harness import BIN, USERS, ensure_busybox_image, ensure_users, new_daemon  # noqa: E402

BAR_S = 1.0
GPUS = 4


def wait_limit(c: Client, user: str, want: float, t0: float, timeout: float = 30) -> float:
    """Seconds from ``t0`` until the daemon reports ``max_gpus == want`` for ``user``."""
    while time.perf_counter() - t0 < timeout:
        if api.admin_limits(c, user=user)["effective"]["max_gpus"] == want:
            return time.perf_counter() - t0
        time.sleep(0.002)
    raise RuntimeError(f"max_gpus={want} not applied after {timeout} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--containers", type=int, default=200)
    ap.add_argument("--queued", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    client = docker.from_env()
    ensure_users()
    ensure_busybox_image(client)
    users = [USERS[u] for u in USERS if u != "adm"]
    d = new_daemon()
    d.config["defaults"] = {"max_containers": args.containers + args.queued, "max_gpus": float(GPUS)}
    d.config["daemon"]["tick_interval"] = "2s"
    d.config["gpu"]["simulated"] = {"gpus": [{}] * GPUS}
    d.start()
    c = Client(str(d.socket), timeout=300)  # we are root: an admin, acting for the users with user=
    try:
        t = time.perf_counter()
        todo = [(users[i % len(users)], f"reload-{i}", 1 if i < GPUS else None) for i in range(args.containers)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda x: api.container_deploy(c, x[1], user=x[0], gpus=x[2]), todo))
        print(f"{args.containers} running containers deployed in {time.perf_counter() - t:.0f} s", flush=True)
        t = time.perf_counter()
        todo = [(users[i % len(users)], f"queued-{i}") for i in range(args.queued)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            out = list(pool.map(lambda x: api.container_create(c, x[1], user=x[0], gpus=1, queue=True), todo))
        assert all(o.get("queued") for o in out), "a GPU request was not queued"
        print(f"{len(api.queue(c, all_users=True))} queued GPU requests added in {time.perf_counter() - t:.0f} s",
              flush=True)
        user, value = users[0], float(GPUS)
        env = {**os.environ, "PATH": f"{BIN}:/usr/bin:/bin", "DS01_ROOT": str(d.root)}
        results: dict[str, list[float]] = {}

        def flip(write: bool) -> float:  # the next value of defaults.max_gpus (written into the file)
            nonlocal value
            value = float(GPUS) if value != GPUS else float(GPUS - 1)
            if write:
                d.config["defaults"]["max_gpus"] = value
                d.write_config()
            return value

        def sighup() -> None:
            os.kill(d.proc.pid, signal.SIGHUP)

        def cli(*argv: str) -> None:
            subprocess.run([str(BIN / "ds01"), *argv], check=True, env=env, stdout=subprocess.DEVNULL)

        ways = {
            "SIGHUP": (True, sighup),
            "POST /v1/admin/reload": (True, lambda: api.admin_reload(c)),
            "ds01 admin reload (CLI)": (True, lambda: cli("admin", "reload")),
            "ds01 admin limits set (CLI)": (False, lambda: cli("admin", "limits", "set", "--defaults",
                                                                f"max_gpus={value:g}")),
        }
        for name, (edits, tell) in ways.items():
            for _ in range(args.rounds):
                want = flip(write=edits)  # `limits set` writes the file itself
                t0 = time.perf_counter()
                tell()
                results.setdefault(name, []).append(wait_limit(c, user, want, t0))
        print(f"{args.containers} running containers, {args.queued} queued requests; "
              f"until max_gpus is new in GET /v1/admin/limits ({args.rounds} rounds each)")
        for name, xs in results.items():
            print(f"{name:28s} median {statistics.median(xs) * 1000:7.1f} ms  max {max(xs) * 1000:7.1f} ms  "
                  f"max/bar {max(xs) / BAR_S:.3f}")
        if d.proc.poll() is not None:
            raise RuntimeError("ds01d stopped during the reloads")
    finally:
        d.destroy(client)


if __name__ == "__main__":
    main()
