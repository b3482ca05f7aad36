"""Daemon CPU per periodic tick with N real running containers on a simulated GPU inventory.

Runs the daemon's real tick (``daemon/loops.tick``: lifecycle sampling + decisions + timers in
SQLite, hold release, queue) in-process against the real Docker Engine, with N busybox containers
labelled as managed by a throw-away instance, and measures ``time.process_time()`` (CPU of every
thread of the process) around each tick. Also asserts no subprocess is started during the ticks
(no ``nvidia-smi``, no ``docker stats``). Needs root and a Docker Engine. Not run by CI.

    sudo .venv/bin/python bench/bench_tick.py [--containers 100] [--ticks 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.harness import TEST_IMAGE, ensure_busybox_image  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--containers", type=int, default=100)
    ap.add_argument("--ticks", type=int, default=20)
    args = ap.parse_args()

    import docker

    from ds01.daemon.loops import tick
    from ds01.daemon.main import build_services
    from ds01.gpu.simulated import SimulatedSource
    from ds01.models.config import Config, SimulatedGpu, SimulatedInventory
    from ds01.runtime.docker import DockerBackend
    from ds01.services.context import Context
    from ds01.services.events import EventLog
    from ds01.state.db import Store

    client = docker.from_env()
    ensure_busybox_image(client)
    tag = secrets.token_hex(3)
    instance = f"bench{tag}"
    root = Path(tempfile.mkdtemp(prefix=f"ds01-bench-{tag}-"))
    sim = SimulatedInventory(gpus=[SimulatedGpu() for _ in range(7)] + [SimulatedGpu(mig=["1g.5gb"] * 7)])
    cfg = Config.model_validate({"daemon": {"instance": instance, "tick_interval": 60},
                                 "gpu": {"inventory": "simulated", "simulated": sim.model_dump()},
                                 "lifecycle": {"startup_grace": 0}})
    store = Store(root / "state.db")
    events = EventLog(root / "events.jsonl", store)
    source = SimulatedSource(cfg.gpu.simulated)
    ctx = Context(config=cfg, store=store, runtime=DockerBackend(), events=events, instance=instance,
                  gpu_source=source, inventory=source.read())
    api = build_services(ctx)
    uid = 1000 + int(tag, 16) % 1000
    gpus = [d.uuid for d in ctx.inventory.allocatable]
    names = []

    def make(i: int):
        name = f"ds01-bench-{tag}-{i}"
        c = client.containers.run(TEST_IMAGE, ["sleep", "infinity"], name=name, detach=True, init=True,
                                  labels={"ds01.managed": "true", "ds01.instance": instance, "ds01.uid": str(uid),
                                          "ds01.project": f"p{i}"})
        return i, name, c.id

    t0 = time.time()
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            made = list(pool.map(make, range(args.containers)))
        print(f"started {len(made)} containers in {time.time() - t0:.0f}s")
        now = time.time()
        with store.transaction() as conn:
            for i, name, cid in made:
                names.append(name)
                g = [gpus[i]] if i < len(gpus) else []
                rid = store.insert_container(conn, uid=uid, user="root", project=f"p{i}", docker_id=cid,
                                             docker_name=name, image=TEST_IMAGE, status="running", created_at=now,
                                             started_at=now, gpus=g)
                rec = type("R", (), {"id": rid, "uid": uid, "user": "root", "project": f"p{i}"})()
                store.allocate(conn, rec, {u: ctx.inventory.device(u).equivalents for u in g}, now)

        spawned = []
        real_popen = subprocess.Popen.__init__

        def spy(self, *a, **kw):
            spawned.append(a[0] if a else kw.get("args"))
            return real_popen(self, *a, **kw)

        subprocess.Popen.__init__ = spy  # type: ignore[method-assign]
        cpu, wall = [], []
        for _ in range(args.ticks):
            c0, w0 = time.process_time(), time.perf_counter()
            asyncio.run(tick(api))
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
            time.sleep(0.2)
        subprocess.Popen.__init__ = real_popen  # type: ignore[method-assign]
        rows = store.query("SELECT COUNT(*) FROM lifecycle WHERE last_cpu_ns IS NOT NULL")[0][0]
        steady = cpu[1:]
        print(f"containers sampled with a CPU reading: {rows}/{len(made)}")
        print(f"first tick (finds each container's cgroup: one engine inspect each): "
              f"cpu {cpu[0] * 1000:.1f} ms, wall {wall[0] * 1000:.1f} ms")
        print(f"steady ticks ({len(steady)}): cpu median {statistics.median(steady) * 1000:.1f} ms, "
              f"max {max(steady) * 1000:.1f} ms; wall median {statistics.median(wall[1:]) * 1000:.1f} ms")
        print(f"subprocesses started during ticks: {len(spawned)} {spawned[:3]}")
        ok = statistics.median(steady) <= 0.050 and not spawned
        print("BAR (<= 50 ms CPU per tick over", len(made), "containers, no subprocess):", "PASS" if ok else "FAIL")
    finally:
        api.lifecycle.close()
        for name in names or [f"ds01-bench-{tag}-{i}" for i in range(args.containers)]:
            try:
                client.api.remove_container(name, force=True)
            except Exception:
                pass
        store.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root (it starts containers and reads their cgroups)")
    main()
