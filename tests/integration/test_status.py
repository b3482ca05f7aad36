"""Seeing the lab through the real daemon: status (devices, holders vs the containers' env),
who uses which GPU (NVML PIDs → cgroups → containers), events with filters and visibility, usage
totals against the allocation records, the admin dashboard, and the metrics endpoint."""

from __future__ import annotations

import csv
import io
import json
import pwd
import shutil
import sqlite3
import subprocess
import time
import urllib.request
from types import SimpleNamespace

import pytest

from .harness import free_port, new_daemon, ok, unique_project, USERS


@pytest.fixture(scope="module")
def obs(docker_client):
    d = new_daemon()
    d.metrics_port, d.web_port = free_port(), free_port()
    d.config["defaults"] = {"max_gpus": 2.0, "max_containers": 5}
    d.config["observability"] = {"metrics": {"listen": f"127.0.0.1:{d.metrics_port}"},
                                 "web": {"listen": f"127.0.0.1:{d.web_port}"}}
    d.start()
    d.used = []
    yield d
    d.destroy(docker_client)
    for user, project in d.used:
        shutil.rmtree(f"/home/{USERS[user]}/workspace/{project}", ignore_errors=True)


def create(d, user: str, *args: str) -> str:
    p = unique_project("st")
    d.used.append((user, p))
    ok(d.run(user, "container-create", p, *args))
    ok(d.run(user, "container-start", p))
    return p


def _env(container) -> dict:
    return dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])


def test_status_lists_every_device_with_its_holder_matching_the_containers_env(obs, docker_client):
    pa = create(obs, "alice", "--gpus", "1")
    pb = create(obs, "bob", "--gpu-profile", "3g.20gb")
    st = json.loads(ok(obs.run("alice", "ds01", "status", "--json")).stdout)
    devices = st["gpus"]["devices"]
    assert len(devices) == 8  # simulated: 4 GPUs (one MIG-split) + 4 MIG instances
    holders = {d["uuid"]: d["holder"] for d in devices if d["holder"]}
    env_of = {}
    for c in obs.containers(docker_client):
        c.reload()
        lb = c.labels
        for uuid in _env(c)["NVIDIA_VISIBLE_DEVICES"].split(","):
            if uuid != "void":
                env_of[uuid] = (lb["ds01.user"], lb["ds01.project"])
    assert {u: (h["user"], h["project"]) for u, h in holders.items()} == env_of
    assert (USERS["alice"], pa) in env_of.values() and (USERS["bob"], pb) in env_of.values()
    for d in devices:
        assert {"utilization", "processes", "equivalents", "label"} <= set(d)
    assert st["total_equivalents"] == pytest.approx(4.0)
    assert st["free_equivalents"] == pytest.approx(4.0 - 1.0 - 3 / 7, abs=1e-3)
    assert [c["project"] for c in st["me"]["containers"]] == [pa]  # only the caller's own
    assert st["me"]["limits"]["usage"]["gpus"] == pytest.approx(1.0)
    text = ok(obs.run("alice", "ds01", "status")).stdout
    assert pa in text and "GPU-equivalents" in text


def test_who_uses_which_gpu_maps_pids_to_containers_and_flags_unmanaged(obs, docker_client):
    """NVML PIDs (here the simulated source's set_processes) → /proc/<pid>/cgroup → container."""
    from ds01.gpu.simulated import SimulatedSource, sim_gpu_uuid
    from ds01.runtime.docker import DockerBackend
    from ds01.services.status import StatusService
    from ds01.state.db import Store

    p = create(obs, "carol", "--gpus", "1")
    rec = next(c for c in obs.containers(docker_client) if c.labels["ds01.project"] == p)
    rec.reload()
    managed_pid = rec.attrs["State"]["Pid"]
    held = _env(rec)["NVIDIA_VISIBLE_DEVICES"]
    stray = docker_client.containers.run("ds01-test/busybox:latest", ["sleep", "60"], detach=True,
                                         name=f"unmanaged-{p}", network_mode="none")
    host = subprocess.Popen(["sleep", "60"])
    try:
        stray.reload()
        src = SimulatedSource()
        other = next(u for u in (sim_gpu_uuid(i) for i in range(3)) if u != held)
        src.set_processes(held, [managed_pid])
        src.set_processes(other, [stray.attrs["State"]["Pid"], host.pid])
        store = Store(obs.root / "var/lib/ds01/state.db")
        ctx = SimpleNamespace(store=store, gpu_source=src, runtime=DockerBackend())
        procs = StatusService(SimpleNamespace(ctx=ctx), None).processes()
        mine = procs[held]
        assert mine == [{"pid": managed_pid, "managed": True, "kind": "container", "user": USERS["carol"],
                         "project": p, "container": rec.name, "holds_device": True}]
        kinds = {r["pid"]: r for r in procs[other]}
        assert kinds[stray.attrs["State"]["Pid"]]["kind"] == "unmanaged-container"
        assert kinds[stray.attrs["State"]["Pid"]]["container"] == stray.name
        assert kinds[host.pid]["kind"] == "host" and kinds[host.pid]["managed"] is False
        assert kinds[host.pid]["user"] == "root" and kinds[host.pid]["command"] == "sleep"
        store.close()
    finally:
        host.kill()
        host.wait()
        stray.remove(force=True)


def test_events_filters_and_visibility(obs):
    p = create(obs, "alice")
    ok(obs.run("alice", "container-stop", p))
    mine = json.loads(ok(obs.run("alice", "ds01", "events", "--since", "1h", "--json")).stdout)
    assert mine and all(e["user"] == USERS["alice"] for e in mine)
    assert {"container.create", "container.start", "container.stop"} <= {e["action"] for e in mine}
    starts = json.loads(ok(obs.run("alice", "ds01", "events", "--type", "container.start", "--json")).stdout)
    assert starts and {e["action"] for e in starts} == {"container.start"}
    prefix = json.loads(ok(obs.run("alice", "ds01", "events", "--type", "container", "--json")).stdout)
    assert all(e["action"].startswith("container.") for e in prefix) and len(prefix) >= 3
    everyone = json.loads(ok(obs.run("adm", "ds01", "events", "--since", "1h", "--json")).stdout)
    assert len({e["user"] for e in everyone if e["user"]}) >= 2
    only_alice = json.loads(ok(obs.run("adm", "ds01", "events", "--user", USERS["alice"], "--json")).stdout)
    assert only_alice and {e["user"] for e in only_alice} == {USERS["alice"]}
    denied = obs.run("alice", "ds01", "events", "--user", USERS["bob"])
    assert denied.returncode == 5 and "admin" in denied.stderr
    # a refusal is an event too, and the owner can find it
    obs.run("bob", "container-start", "no-such-project")
    bad = obs.run("alice", "ds01", "events", "--since", "nonsense")
    assert bad.returncode == 3 and "not a time" in bad.stderr


def _db_gpu_hours(db, since: float, until: float) -> dict[str, float]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    out: dict[str, float] = {}
    for user, eq, start, end in con.execute("SELECT user, equivalents, start, end FROM allocations"):
        e = until if end is None else min(end, until)
        secs = max(0.0, e - max(start, since))
        if secs > 0:
            out[user] = out.get(user, 0.0) + eq * secs / 3600
    con.close()
    return out


def test_usage_csv_totals_equal_the_allocation_records(obs):
    # history the daemon did not see live: an allocation that began 3 days ago and ended 20 h ago
    # (clipped by --since 1d), and one fully inside the window
    obs.stop()
    db = obs.root / "var/lib/ds01/state.db"
    con = sqlite3.connect(db)
    now = time.time()
    for user, start, end, eq, dev in ((USERS["alice"], now - 3 * 86400, now - 20 * 3600, 1.0, "GPU-old-1"),
                                      (USERS["bob"], now - 10 * 3600, now - 4 * 3600, 3 / 7, "MIG-old-2")):
        uid = pwd.getpwnam(user).pw_uid
        cur = con.execute("INSERT INTO containers (uid, user, project, docker_name, image, status, created_at, "
                          "ended_at) VALUES (?,?,?,?,?,?,?,?)", (uid, user, "hist", "h", "img", "removed", start, end))
        con.execute("INSERT INTO allocations (container, uid, user, project, device, equivalents, start, end, "
                    "end_reason) VALUES (?,?,?,?,?,?,?,?,?)", (cur.lastrowid, uid, user, "hist", dev, eq, start, end,
                                                              "removed"))
    con.commit()
    con.close()
    obs.start()
    out = ok(obs.run("adm", "ds01", "usage", "--since", "1d", "--csv"))
    t_cli = time.time()
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    got = {r["user"]: float(r["gpu_hours"]) for r in rows}
    want = _db_gpu_hours(db, t_cli - 86400, t_cli)
    assert set(got) == {u for u, v in want.items() if v > 0}
    total_got, total_want = sum(got.values()), sum(want.values())
    assert total_want > 4.0  # the historical rows dominate: 4 h of alice's GPU, 6 h × 3/7 of bob's MIG
    assert abs(total_got - total_want) <= 0.01 * total_want, (got, want)
    for u in want:
        # abs: a live allocation grows between the daemon's "now" and t_cli (0.36 s of one GPU)
        assert got[u] == pytest.approx(want[u], rel=0.01, abs=1e-4)
    for r in rows:
        float(r["container_hours"])
    # users see only themselves
    mine = json.loads(ok(obs.run("bob", "ds01", "usage", "--since", "1d", "--json")).stdout)
    assert [r["user"] for r in mine["rows"]] == [USERS["bob"]]
    assert mine["rows"][0]["gpu_hours"] == pytest.approx(want[USERS["bob"]], rel=0.01)
    grp = json.loads(ok(obs.run("adm", "ds01", "usage", "--since", "1d", "--by", "project", "--json")).stdout)
    assert f"{USERS['alice']}/hist" in {r["project"] for r in grp["rows"]}
    assert obs.run("bob", "ds01", "usage", "--user", USERS["alice"]).returncode == 5


def test_admin_dashboard_is_for_admins(obs):
    create(obs, "alice", "--gpus", "1")
    dash = json.loads(ok(obs.run("adm", "ds01", "admin", "dashboard", "--json")).stdout)
    assert {"users", "near_limits", "lifecycle", "containers", "gpus", "queue"} <= set(dash)
    alice = next(u for u in dash["users"] if u["user"] == USERS["alice"])
    assert alice["running"] >= 1 and alice["gpus"] >= 1.0 and alice["memory_bytes"] > 0
    assert ok(obs.run("adm", "ds01", "admin", "dashboard")).stdout.count("Users") == 1
    denied = obs.run("alice", "ds01", "admin", "dashboard")
    assert denied.returncode == 5 and "admins only" in denied.stderr


def test_metrics_endpoint_answers_with_the_listed_families(obs):
    create(obs, "bob", "--gpu-profile", "1g.5gb")
    deadline = time.time() + 10
    while True:
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{obs.metrics_port}/metrics", timeout=5).read().decode()
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    for fam in ("ds01_gpu_allocated", "ds01_gpu_utilization_percent", "ds01_user_gpu_equivalents",
                "ds01_containers", "ds01_queue_length", "ds01_queue_wait_seconds_bucket",
                "ds01_lifecycle_actions_total", "ds01_api_request_duration_seconds_bucket",
                "ds01_image_build_duration_seconds_bucket", "ds01_gpu_free_equivalents", "ds01_up"):
        assert f"\n{fam}" in body, fam
    assert f'ds01_user_gpu_equivalents{{user="{USERS["bob"]}"}}' in body
    assert 'ds01_api_request_duration_seconds_count{endpoint="POST /v1/containers"}' in body
    assert 'ds01_containers{state="creating"} 0.0' in body  # pre-created: no holes
