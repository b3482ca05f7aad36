"""Allocation decisions per second: 8-GPU host (4 cards MIG-split) with 200 live containers.

Run: PYTHONPATH=src python bench/bench_allocation.py [seconds]
The bar (issue 4) is >= 5,000 decisions/s for the pure ``decide``.
"""

from __future__ import annotations

import random
import sys
import time

from ds01.gpu.simulated import build_inventory
from ds01.models.config import Config, SimulatedGpu, SimulatedInventory
from ds01.policy.allocation import Allocation, GpuRequest, decide
from ds01.policy.limits import effective_limits
from ds01.policy.queue import QueueEntry, next_servable, order


def host() -> SimulatedInventory:
    h100 = dict(name="NVIDIA H100 80GB HBM3", memory="80g")
    return SimulatedInventory(
        gpus=[SimulatedGpu(**h100) for _ in range(4)]
        + [
            SimulatedGpu(**h100, mig=["1g.10gb"] * 7),
            SimulatedGpu(**h100, mig=["1g.10gb"] * 7),
            SimulatedGpu(**h100, mig=["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]),
            SimulatedGpu(**h100, mig=["4g.40gb", "3g.40gb"]),
        ]
    )


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    rnd = random.Random(42)
    inv = build_inventory(host())
    users = [f"user{i:03d}" for i in range(40)]
    # Half the users are in a group allowed up to 4 GPU-equivalents (2 per container).
    cfg = Config.model_validate(
        {"groups": [{"name": "staff", "members": users[:20], "limits": {"max_gpus": 4, "max_gpus_per_container": 2}}]}
    )
    limits = {u: effective_limits(cfg, u, {"lab"}) for u in users}

    # 200 live containers: most are CPU-only or stopped without GPUs; the GPU holders take some
    # devices. Held is keyed by device, holders by container id, as the daemon keeps them.
    held: dict[str, str] = {}
    free = [d.uuid for d in inv.allocatable]
    rnd.shuffle(free)
    containers = [f"ctr{i:03d}" for i in range(200)]
    for c in containers[: len(free) - 4]:  # leave a few devices free so some decisions succeed
        held[free.pop()] = c
    holding = {u: rnd.choice([0.0, 1 / 7, 3 / 7, 1.0]) for u in users}

    requests = [GpuRequest(gpus=1), GpuRequest(gpus=2), GpuRequest(profile="1g.10gb"), GpuRequest(profile="3g.40gb"),
                GpuRequest(mig=2), GpuRequest(), GpuRequest(gpus=0), GpuRequest(profile="9g.1gb")]
    work = [(rnd.choice(requests), rnd.choice(users)) for _ in range(4096)]

    n = 0
    outcomes: dict[str, int] = {}
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        for req, user in work[:512]:
            r = decide(inv, held, req, limits[user], holding[user])
            k = "allocated" if isinstance(r, Allocation) else r.kind
            outcomes[k] = outcomes.get(k, 0) + 1
        n += 512
        work = work[512:] + work[:512]
    elapsed = time.perf_counter() - t0
    rate = n / elapsed

    # Queue pass: order + next_servable over 50 waiting requests, same host.
    queue = [QueueEntry(f"q{i}", rnd.choice(users), rnd.choice(requests[:5]), float(i), i) for i in range(50)]
    usage = {u: rnd.uniform(0, 100) for u in users}
    q0 = time.perf_counter()
    qn = 0
    while time.perf_counter() < q0 + min(1.0, seconds):
        next_servable(order(queue, usage, {}, 1000.0, 3600.0), inv, held)
        qn += 1
    qrate = qn / (time.perf_counter() - q0)

    print(f"host: {len(inv.gpus)} GPUs, {len(inv.whole_gpus)} whole + {len(inv.mig_instances)} MIG instances; "
          f"{len(containers)} live containers, {len(held)} devices held")
    print(f"decide(): {rate:,.0f} decisions/s over {n:,} decisions ({elapsed:.2f}s) "
          f"[{', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))}]")
    print(f"queue pass (order + next_servable, 50 waiting): {qrate:,.0f} passes/s")
    print("PASS" if rate >= 5000 else "FAIL", "(bar: >= 5,000 decisions/s)")


if __name__ == "__main__":
    main()
