"""GPU allocation through the real daemon and engine on a simulated 4-GPU host (one MIG-split):
concurrency, limits, the env each container gets, the fair queue and the hold after stop."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from .harness import BIN, new_daemon, ok, unique_project, USERS


@pytest.fixture
def gpu_daemon(docker_client):
    d = new_daemon()
    d.config["defaults"] = {"max_gpus": 2.0, "max_gpus_per_container": 1.0, "max_containers": 20,
                            "gpu_hold_after_stop": "1s"}
    d.config["daemon"]["tick_interval"] = "1s"
    d.start()
    yield d
    d.destroy(docker_client)


def _env(container) -> dict:
    return dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])


def test_concurrent_creates_never_double_allocate_or_breach_limits(gpu_daemon, docker_client, projects):
    users = ["alice", "bob", "carol", "adm"]
    asks = [["--gpus", "1"], ["--gpu-profile", "1g.5gb"], ["--mig", "1"], ["--gpu-profile", "3g.20gb"]]
    jobs = []
    for i in range(40):
        user = users[i % 4]
        p = unique_project(f"c{i}")
        projects.append((user, p))
        jobs.append((user, p, asks[(i // 4) % 4]))
    with ThreadPoolExecutor(max_workers=40) as pool:
        results = list(pool.map(lambda j: (j, gpu_daemon.run(j[0], "container-create", j[1], *j[2], "--json")), jobs))
    codes = Counter(r.returncode for _, r in results)
    assert set(codes) <= {0, 6, 8}, [(j, r.stderr) for j, r in results if r.returncode not in (0, 6, 8)]
    assert codes[0] >= 5 and codes[6] + codes[8] > 0  # some served, the excess refused
    for (_, p, _), r in results:
        if r.returncode:
            assert "Traceback" not in r.stderr and "error:" in r.stderr
    rows = json.loads(ok(gpu_daemon.run("adm", "container-list", "--all-users", "--all", "--json")).stdout)
    held = Counter(g for r in rows for g in r["gpus"])
    assert held and max(held.values()) == 1, held  # no device held twice
    inv = json.loads(ok(gpu_daemon.run("alice", "ds01", "gpus", "--json")).stdout)
    eq = {d["uuid"]: d["equivalents"] for d in inv["devices"]}
    per_user = Counter()
    for r in rows:
        per_user[r["user"]] += sum(eq[g] for g in r["gpus"])
        c = docker_client.containers.get(r["name"])
        env = _env(c)
        assert env["NVIDIA_VISIBLE_DEVICES"] == (",".join(r["gpus"]) or "void")
        assert env["CUDA_VISIBLE_DEVICES"] == ",".join(r["gpus"])
        assert c.attrs["HostConfig"]["Runtime"] == "nvidia"
    assert all(v <= 2.0 + 1e-9 for v in per_user.values()), per_user
    # the daemon's view of holders agrees with the containers
    holders = {d["uuid"]: d["holder"] for d in inv["devices"] if d["holder"]}
    assert set(holders) == set(held)


def test_gpu_denials_are_precise(gpu_daemon):
    r = gpu_daemon.run("alice", "container-create", unique_project("z"), "--gpus", "0")
    assert r.returncode == 3 and "--gpus" in r.stderr
    r = gpu_daemon.run("alice", "container-create", unique_project("z"), "--gpus", "99")
    assert r.returncode == 3 and "only 3 whole GPUs" in r.stderr
    r = gpu_daemon.run("alice", "container-create", unique_project("z"), "--gpu-profile", "3g.40gb")
    assert r.returncode == 3 and "does not exist" in r.stderr and "3g.20gb" in r.stderr
    r = gpu_daemon.run("alice", "container-create", unique_project("z"), "--gpus", "1", "--mig", "1")
    assert r.returncode == 3
    r = gpu_daemon.run("alice", "container-create", unique_project("z"), "--gpus", "2")
    assert r.returncode == 6 and "per container" in r.stderr


def test_queued_request_starts_when_devices_free_and_hold_after_stop(gpu_daemon, docker_client, projects):
    holders = []
    for user in ("alice", "bob", "carol"):
        p = unique_project("h")
        projects.append((user, p))
        ok(gpu_daemon.run(user, "container-create", p, "--gpus", "1"))
        ok(gpu_daemon.run(user, "container-start", p))
        holders.append((user, p))
    waiting = unique_project("q")
    projects.append(("adm", waiting))
    r = gpu_daemon.run("adm", "container-create", waiting, "--gpus", "1")
    assert r.returncode == 8 and "--queue" in r.stderr and "held now" in r.stderr
    r = ok(gpu_daemon.run("adm", "container-deploy" if (BIN / "container-deploy").exists() else "container-create",
                          waiting, "--gpus", "1", "--queue", "--json", *(["--background"] if (BIN / "container-deploy").exists() else [])))
    assert json.loads(r.stdout)["queued"] is True
    q = json.loads(ok(gpu_daemon.run("adm", "gpu-queue", "--json")).stdout)
    assert [e["project"] for e in q] == [waiting] and q[0]["position"] == 1
    user, p = holders[0]
    t0 = time.time()
    ok(gpu_daemon.run(user, "container-remove", p, "--force"))
    rows = []
    while time.time() - t0 < 10:
        rows = json.loads(ok(gpu_daemon.run("adm", "container-list", "--json")).stdout)
        if rows:
            break
        time.sleep(0.2)
    assert rows and rows[0]["project"] == waiting and rows[0]["status"] == "running", rows
    assert time.time() - t0 < 3.0  # served on release, well within one tick
    assert json.loads(ok(gpu_daemon.run("adm", "gpu-queue", "--json")).stdout) == []
    alerts = os.path.join(os.path.expanduser(f"~{USERS['adm']}"), "workspace", waiting, ".ds01-alerts")
    assert "started" in open(alerts).read()

    # hold after stop: bob's device is released ~1 s after his container stops, and comes back on start
    user, p = holders[1]
    mine = json.loads(ok(gpu_daemon.run(user, "container-list", "--json")).stdout)[0]["gpus"]
    ok(gpu_daemon.run(user, "container-stop", p, "--timeout", "0"))
    deadline = time.time() + 6
    while time.time() < deadline:
        inv = json.loads(ok(gpu_daemon.run(user, "ds01", "gpus", "--json")).stdout)
        if all(d["holder"] is None for d in inv["devices"] if d["uuid"] in mine):
            break
        time.sleep(0.3)
    else:
        pytest.fail("the stopped container's GPU was not released after gpu_hold_after_stop")
    ok(gpu_daemon.run(user, "container-start", p))
    inv = json.loads(ok(gpu_daemon.run(user, "ds01", "gpus", "--json")).stdout)
    assert [d["holder"]["project"] for d in inv["devices"] if d["uuid"] in mine] == [p]
