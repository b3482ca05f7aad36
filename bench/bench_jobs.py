"""Batch jobs (issue 14): ``job-submit`` against ``docker run -d`` of the same image, and the fair
queue's decision with 500 queued jobs from 20 users and 200 holders. Not run by CI.

    sudo /opt/ds01/venv/bin/python bench/bench_jobs.py [--rounds 15] [--seconds 3] [--queue-only]

1. ``job-submit P -- true`` (click path: argument parsing, the launch stamp check, one daemon
   call that records the job with its image id and git commit, and returns) vs ``docker run -d``
   of the project's image with the same options a job container gets, both as a runuser'd
   command, in interleaved rounds (each round waits for the job to end and removes the raw
   container, so neither side runs next to the other's containers). Bar: median ratio <= 1.3.
2. The queue decision the tick makes (``GpuService.serve_queue``): ``decay`` of the allocation
   history, ``order`` (fair share + aging) and ``next_servable`` (head-of-line reservation) over
   500 waiting GPU jobs of 20 users, on a full 200-device host (every device held: 200 open
   allocations), again with 8 devices free (some start), and with 2,000 closed allocations more
   in the decay window. Bar: >= 1,000 decisions/s, one decision = one whole pass over the queue
   (what to start now, for all 500).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ds01.gpu.simulated import build_inventory  # noqa: E402
from ds01.models.config import SimulatedGpu, SimulatedInventory  # noqa: E402
from ds01.policy.allocation import GpuRequest  # noqa: E402
from ds01.policy.queue import QueueEntry, UsageRecord, decay, next_servable, order  # noqa: E402


# --------------------------------------------------------------------------- 2. queue decision


def queue_case(free: int, rnd: random.Random, past: int = 0):
    h100 = dict(name="NVIDIA H100 80GB HBM3", memory="80g")
    # 28 cards as 7 x 1g.10gb and 4 whole cards: 200 allocatable devices
    inv = build_inventory(SimulatedInventory(gpus=[SimulatedGpu(**h100, mig=["1g.10gb"] * 7) for _ in range(28)]
                                             + [SimulatedGpu(**h100) for _ in range(4)]))
    devices = [d.uuid for d in inv.allocatable]
    assert len(devices) == 200
    rnd.shuffle(devices)
    now = 1_000_000.0
    holders = [f"holder{i:03d}" for i in range(200)]
    held = {dev: holders[i] for i, dev in enumerate(devices[: 200 - free])}
    users = [f"user{i:02d}" for i in range(20)]
    history = [UsageRecord(rnd.choice(users), now - rnd.uniform(0, 20 * 86400), None, 1.0) for _ in held]
    for _ in range(past):  # closed allocations in the decay window (the tick reads them too)
        start = now - rnd.uniform(0, 30 * 86400)
        history.append(UsageRecord(rnd.choice(users), start, start + rnd.uniform(60, 86400),
                                   rnd.choice([1 / 7, 1.0, 2.0])))
    requests = [GpuRequest(gpus=1), GpuRequest(gpus=2), GpuRequest(profile="1g.10gb"), GpuRequest(mig=2)]
    entries = [QueueEntry(id=f"job:{i}", user=rnd.choice(users), request=rnd.choice(requests),
                          enqueued_at=now - rnd.uniform(0, 86400), seq=i) for i in range(500)]
    weights = {u: rnd.choice([1.0, 1.0, 2.0]) for u in users}
    return inv, held, history, entries, weights, now


def decide_once(inv, held, history, entries, weights, now):
    """What ``GpuService.serve_queue`` computes each tick (without the database reads)."""
    usage = decay(history, now, 7 * 86400)
    ordered = order(entries, usage, weights, now, 3600.0)
    return next_servable(ordered, inv, held)


def bench_queue(seconds: float) -> list[tuple[str, float, int]]:
    out = []
    for free, past in ((0, 0), (8, 0), (0, 2000)):
        case = queue_case(free, random.Random(7), past)
        served = len(decide_once(*case))
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            decide_once(*case)
            n += 1
        name = f"queue: 500 jobs/20 users, {200 - free} holders" + (f", +{past} past" if past else "")
        out.append((name, n / (time.perf_counter() - t0), served))
    return out


# --------------------------------------------------------------------------- 1. job-submit


def timed(argv: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    p = subprocess.run(argv, check=True, capture_output=True, text=True)
    return time.perf_counter() - t, p.stdout


def bench_submit(rounds: int) -> tuple[float, float, float]:
    import docker

    from tests.integration.harness import BIN, TEST_IMAGE, USERS, ensure_busybox_image, ensure_users, new_daemon

    client = docker.from_env()
    ensure_users()
    ensure_busybox_image(client)
    d = new_daemon()
    d.config["defaults"] = {"max_jobs_queued": 10_000, "max_jobs_running": 100}
    d.config["daemon"]["tick_interval"] = "1s"
    d.start()
    user = USERS["alice"]
    pw = pwd.getpwnam(user)
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "DS01_ROOT": str(d.root), "LANG": "C.UTF-8"}
    as_user = ["runuser", "-u", user, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()]]
    as_root = ["runuser", "-u", "root", "--"]  # same wrapper cost on both sides
    project = f"bench-jobs-{os.getpid()}"
    ws = Path(pw.pw_dir) / "workspace" / project
    subprocess.run([*as_user, "sh", "-c", f"mkdir -p {ws} && printf 'FROM {TEST_IMAGE}\\n' > {ws}/Dockerfile"],
                   check=True)
    image = f"ds01/{user}/{project}:latest"

    def job_state(jid: str) -> str:
        out = subprocess.run([*as_user, str(BIN / "job-show"), jid, "--json"], check=True, capture_output=True,
                             text=True).stdout
        return json.loads(out)["state"]

    def wait_end(jid: str) -> None:
        end = time.time() + 60
        while (state := job_state(jid)) not in ("succeeded", "failed", "timeout", "cancelled", "lost"):
            if time.time() > end:
                raise SystemExit(f"job {jid} did not end")
            time.sleep(0.2)
        if state != "succeeded":
            raise SystemExit(f"job {jid} {state}")

    ds, dk = [], []
    try:
        wait_end(timed([*as_user, str(BIN / "job-submit"), project, "--", "true"])[1].strip())  # builds it
        raw = ["docker", "run", "-d", "--user", f"{pw.pw_uid}:{pw.pw_gid}",
               "--cpus", str(min(4, os.cpu_count() or 1)), "--memory", "16g", "--memory-swap", "16g",
               "--shm-size", "2g", "--pids-limit", "4096", "--cap-drop", "ALL",
               "--security-opt", "no-new-privileges", "--init", "-e", "NVIDIA_VISIBLE_DEVICES=void",
               "-v", f"{ws}:/workspace", "-w", "/workspace", "--label", "ds01.bench=1", image, "true"]
        for i in range(rounds):
            pair = []
            for side in ((0, 1) if i % 2 == 0 else (1, 0)):  # alternate who goes first
                if side == 0:
                    t, out = timed([*as_user, str(BIN / "job-submit"), project, "--", "true"])
                    wait_end(out.strip())
                    pair.append((0, t))
                else:
                    t, out = timed([*as_root, *raw])
                    subprocess.run(["docker", "rm", "-f", out.strip()], check=True, capture_output=True)
                    pair.append((1, t))
            ds += [t for s, t in pair if s == 0]
            dk += [t for s, t in pair if s == 1]
    finally:
        d.stop()
        for c in d.containers(client) + client.containers.list(all=True, filters={"label": "ds01.bench=1"}):
            c.remove(force=True)
        try:
            client.images.remove(image, force=True)
        except docker.errors.APIError:
            pass
        shutil.rmtree(ws, ignore_errors=True)
        shutil.rmtree(d.root, ignore_errors=True)
    return statistics.median(ds), statistics.median(dk), statistics.median(a / b for a, b in zip(ds, dk))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--seconds", type=float, default=3.0, help="per queue case")
    ap.add_argument("--queue-only", action="store_true", help="only the pure queue decision (no root, no engine)")
    args = ap.parse_args()
    rows = []
    if not args.queue_only:
        a, b, r = bench_submit(args.rounds)
        rows.append(f"{'job-submit vs docker run -d (median)':44} {a:8.3f} s {b:8.3f} s  ratio {r:5.2f}  bar 1.30  "
                    f"{'PASS' if r <= 1.3 else 'FAIL'}")
    for name, rate, served in bench_queue(args.seconds):
        rows.append(f"{name:44} {rate:10,.0f} decisions/s (serves {served})  bar 1,000  "
                    f"{'PASS' if rate >= 1000 else 'FAIL'}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
