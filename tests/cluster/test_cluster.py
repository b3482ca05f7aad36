"""Cluster mode on a real Slurm (issue 18): two slurmd nodes in their own namespaces, a head
ds01d in cluster mode and a node agent per node, all on this machine's one Docker engine (a
simulation of two servers with a real scheduler)."""

from __future__ import annotations

import json
import pwd
import re
import shutil
import signal
import time

import docker
import pytest

from tests.cluster import slurmlab
from tests.integration.harness import ok, unique_project, write_as

pytestmark = pytest.mark.usefixtures("cluster")


def _deploy(cluster, user: str, project: str, *extra: str):
    return cluster.head.run(user, "container-deploy", project, "--background", *extra, timeout=60)


def _mine(cluster, user: str) -> list[dict]:
    return json.loads(ok(cluster.head.run(user, "container-list", "--all", "--json")).stdout)


def _row(cluster, user: str, project: str) -> dict:
    return next(r for r in _mine(cluster, user) if r["project"] == project)


def _retire(cluster, user: str, project: str) -> None:
    ok(cluster.head.run(user, "container-retire", project, "--yes", timeout=60))


def _job_of(container) -> int:
    return int(container.labels["ds01.slurm_job"])


def _slurm_indices(job_id: int) -> tuple[str, str]:
    """(node, GPU indices) from ``scontrol show job -d`` — what Slurm assigned."""
    text = slurmlab.job(job_id)
    node = re.search(r"\bNodes=(\S+)", text).group(1)
    idx = re.search(r"GRES=gpu[^ ]*\(IDX:([0-9,-]+)\)", text).group(1)
    return node, idx


def _wait(cond, timeout: float = 20, every: float = 0.3):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(every)
    return cond()


def _container(cluster, user: str, project: str):
    client = docker.from_env()
    rows = client.containers.list(all=True, filters={"label": [f"ds01.instance={cluster.head.instance}",
                                                               f"ds01.project={project}"]})
    assert len(rows) == 1, rows
    return rows[0]


def _our_jobs(cluster) -> list[dict]:
    return [j for j in slurmlab.squeue() if j["name"].startswith(f"ds01-{cluster.head.instance}-")]


def test_deploys_spread_over_nodes_with_slurms_devices(cluster):
    """Three users' deploys: Slurm picks node and GPUs, the container sees exactly those."""
    projects = {u: unique_project("spread") for u in ("alice", "bob", "carol")}
    try:
        for u, p in projects.items():
            ok(_deploy(cluster, u, p, "--gpus", "1"))
        nodes = set()
        for u, p in projects.items():
            c = _container(cluster, u, p)
            assert c.status == "running"
            node, idx = _slurm_indices(_job_of(c))
            env = dict(e.split("=", 1) for e in c.attrs["Config"]["Env"])
            assert env["NVIDIA_VISIBLE_DEVICES"] == idx, (env, idx)
            assert c.labels["ds01.node"] == node
            assert _row(cluster, u, p)["node"] == node
            nodes.add(node)
            job = [j for j in _our_jobs(cluster) if j["id"] == str(_job_of(c))]
            assert job and job[0]["state"] == "RUNNING" and job[0]["user"] == f"ds01-{u}"  # submitted as the user
        assert nodes == set(slurmlab.NODES), nodes  # 3 one-GPU jobs on 2-GPU nodes: both nodes used
        out = ok(cluster.head.run("alice", "ds01", "gpus")).stdout
        for node in slurmlab.NODES:
            assert node in out
        inv = json.loads(ok(cluster.head.run("alice", "ds01", "gpus", "--json")).stdout)
        held = sorted(d["uuid"] for d in inv["devices"] if d["holder"])
        assert len(held) == 3 and inv["source"] == "slurm"
        assert {n["node"] for n in inv["nodes"]} == set(slurmlab.NODES)
        # each node's agent reports its GPUs' use (here its simulated inventory's figures)
        assert all(d["utilization"] is not None for d in inv["devices"]), inv["devices"]
        assert {d["label"].split("/")[0] for d in inv["devices"]} == set(slurmlab.NODES)
        # GPU-hours and container-hours per node (admins)
        time.sleep(1)
        use = json.loads(ok(cluster.head.run("adm", "ds01", "usage", "--all-users", "--by", "node", "--since", "1h",
                                             "--json")).stdout)
        per = {r["node"]: r for r in use["rows"]}
        assert set(slurmlab.NODES) <= set(per), per
        assert all(per[n]["gpu_hours"] > 0 and per[n]["containers"] >= 1 for n in slurmlab.NODES), per
    finally:
        for u, p in projects.items():
            cluster.head.run(u, "container-retire", p, "--yes", timeout=60)
    assert _our_jobs(cluster) == []  # retire cancels each job


def test_container_run_reaches_the_node(cluster):
    """container-run goes through the head to the container on its node (exit code included)."""
    p = unique_project("run")
    try:
        ok(_deploy(cluster, "alice", p))
        r = cluster.head.run("alice", "container-run", p, "--", "sh", "-c", "echo hi-from-$(hostname); exit 3")
        assert r.returncode == 3, r
        assert "hi-from-" in r.stdout
        r = ok(cluster.head.run("alice", "container-run", p, "--", "id", "-u"))
        assert r.stdout.strip() == "1001" or r.stdout.strip().isdigit()
    finally:
        cluster.head.run("alice", "container-retire", p, "--yes", timeout=60)


def test_pending_request_starts_when_a_holder_retires(cluster):
    """A full cluster: the request pends in Slurm (gpu-queue shows Slurm's reason) and starts
    once a holder retires."""
    fill = [("alice", unique_project("fa")), ("bob", unique_project("fb"))]
    waiting = unique_project("wait")
    try:
        for u, p in fill:
            ok(_deploy(cluster, u, p, "--gpus", "2"))
        r = _deploy(cluster, "carol", waiting, "--gpus", "1")  # no --queue: refused, nothing left behind
        assert r.returncode == 8, r
        assert not [j for j in _our_jobs(cluster) if j["user"] == "ds01-carol"]
        r = ok(_deploy(cluster, "carol", waiting, "--gpus", "1", "--queue"))
        q = json.loads(ok(cluster.head.run("carol", "gpu-queue", "--json")).stdout)
        assert len(q) == 1 and q[0]["slurm_job"] and q[0]["reason"], q
        assert "job " in ok(cluster.head.run("carol", "gpu-queue")).stdout
        _retire(cluster, "alice", fill[0][1])
        assert _wait(lambda: _row_or_none(cluster, "carol", waiting), 30), cluster.diagnostics()
        assert _wait(lambda: (_row_or_none(cluster, "carol", waiting) or {}).get("status") == "running", 20)
    finally:
        for u, p in fill + [("carol", waiting)]:
            cluster.head.run(u, "container-retire", p, "--yes", timeout=60)
    assert _our_jobs(cluster) == []


def _row_or_none(cluster, user: str, project: str) -> dict | None:
    return next((r for r in _mine(cluster, user) if r["project"] == project), None)


def test_job_end_stops_the_container_and_frees_the_devices(cluster):
    """The container's life is the job's: a job cancelled in Slurm stops the container, and
    DS01's books free its GPU."""
    p = unique_project("end")
    try:
        ok(_deploy(cluster, "bob", p, "--gpus", "1"))
        c = _container(cluster, "bob", p)
        slurmlab.slurm("scancel", str(_job_of(c)))
        assert _wait(lambda: _row(cluster, "bob", p)["status"] == "exited", 30), cluster.diagnostics()
        c.reload()
        assert c.status == "exited"
        inv = json.loads(ok(cluster.head.run("bob", "ds01", "gpus", "--json")).stdout)
        assert not [d for d in inv["devices"] if d["holder"] and d["holder"]["project"] == p]
        # a new start is a new job (Slurm places it again)
        ok(cluster.head.run("bob", "container-start", p, timeout=60))
        c2 = _container(cluster, "bob", p)
        assert c2.status == "running" and _job_of(c2) != _job_of(c)
    finally:
        cluster.head.run("bob", "container-retire", p, "--yes", timeout=60)
    assert _our_jobs(cluster) == []


def test_agent_down_shows_unknown_and_new_work_goes_elsewhere(cluster):
    p = unique_project("down")
    other = unique_project("else")
    node = None
    try:
        ok(_deploy(cluster, "alice", p, "--gpus", "1"))
        node = _row(cluster, "alice", p)["node"]
        cluster.kill_agent(node)
        assert _row(cluster, "alice", p)["status"] == "unknown"
        # the head drains the node after drain_after (3 s): new work lands on the other node
        assert _wait(lambda: "drain" in slurmlab.slurm("sinfo", "-h", "-n", node, "-o", "%T").stdout.lower(), 20)
        ok(_deploy(cluster, "bob", other, "--gpus", "1"))
        assert _row(cluster, "bob", other)["node"] != node
        # nothing double-allocated: every held device key is held once
        inv = json.loads(ok(cluster.head.run("alice", "ds01", "gpus", "--json")).stdout)
        keys = [d["uuid"] for d in inv["devices"] if d["holder"]]
        assert len(keys) == len(set(keys))
    finally:
        if node is not None and node not in cluster.agents:
            cluster.start_agent(node)
        for u, pr in (("alice", p), ("bob", other)):
            cluster.head.run(u, "container-retire", pr, "--yes", timeout=60)
    assert _wait(lambda: _row_or_none(cluster, "alice", p) is None, 10)
    # back: the node is resumed by the head
    assert _wait(lambda: "drain" not in slurmlab.slurm("sinfo", "-h", "-n", node, "-o", "%T").stdout.lower(), 20)
    assert _our_jobs(cluster) == []


def test_head_restart_reconciles_with_squeue(cluster):
    """While the head is down a job ends and an unowned DS01 job appears: after the restart the
    record is closed and the orphan cancelled."""
    p = unique_project("rst")
    try:
        ok(_deploy(cluster, "carol", p, "--gpus", "1"))
        job = _job_of(_container(cluster, "carol", p))
        cluster.head.stop()
        slurmlab.slurm("scancel", str(job))
        orphan = slurmlab.slurm("sbatch", "--parsable", "--uid=ds01-bob", "--gid=ds01-bob", "-p", "ds01",
                                f"--job-name=ds01-{cluster.head.instance}-u1002-t-orphan", "--chdir=/tmp",
                                "--output=/dev/null", "--wrap=sleep 600").stdout.strip().split(";")[0]
        cluster.head.start()
        assert _wait(lambda: _row(cluster, "carol", p)["status"] == "exited", 20), cluster.diagnostics()
        assert _wait(lambda: not [j for j in slurmlab.squeue() if j["id"] == orphan], 20)
    finally:
        cluster.head.run("carol", "container-retire", p, "--yes", timeout=60)
    assert _our_jobs(cluster) == []


def test_batch_job_runs_as_a_slurm_job_on_a_node(cluster):
    """job-submit: a Slurm job of the user, its container on the node Slurm chose with its GPU,
    the output kept, and nothing left in Slurm once it ended."""
    p = unique_project("job")
    write_as("bob", f"{pwd.getpwnam('ds01-bob').pw_dir}/workspace/{p}/README", "a batch job's project\n")
    out = json.loads(ok(cluster.head.run("bob", "job-submit", "--json", p, "--gpus", "1", "--time", "10m", "--",
                                         "sh", "-c", "echo visible=$NVIDIA_VISIBLE_DEVICES; sleep 3")).stdout)
    jid = out["ids"][0]
    seen = _wait(lambda: [j for j in _our_jobs(cluster) if j["user"] == "ds01-bob" and j["state"] == "RUNNING"], 30)
    assert seen, cluster.diagnostics()
    node, idx = _slurm_indices(int(seen[0]["id"]))
    assert seen[0]["name"].endswith(f"-job{jid}")

    def state():
        return json.loads(ok(cluster.head.run("bob", "job-show", str(jid), "--json")).stdout)

    assert _wait(lambda: state()["state"] in ("succeeded", "failed"), 60), cluster.diagnostics()
    assert state()["state"] == "succeeded", state()
    logs = ok(cluster.head.run("bob", "job-logs", str(jid))).stdout
    assert f"visible={idx}" in logs, logs
    assert _wait(lambda: not [j for j in _our_jobs(cluster) if j["user"] == "ds01-bob"], 20)
    shutil.rmtree(f"{pwd.getpwnam('ds01-bob').pw_dir}/workspace/{p}", ignore_errors=True)


def test_idle_reclaim_stops_the_container_and_ends_its_job(cluster):
    """Idle reclaim works across nodes: the node measures, the head warns and stops, the job
    is cancelled (its GPU back in Slurm)."""
    p = unique_project("idle")
    try:
        ok(_deploy(cluster, "adm", p, "--gpus", "1"))
        job = _job_of(_container(cluster, "adm", p))
        assert _wait(lambda: _row(cluster, "adm", p)["status"] == "exited", 40), cluster.diagnostics()
        assert _wait(lambda: not [j for j in slurmlab.squeue() if j["id"] == str(job)], 20)
        inv = json.loads(ok(cluster.head.run("adm", "ds01", "gpus", "--json")).stdout)
        assert not [d for d in inv["devices"] if d["holder"] and d["holder"]["project"] == p]
    finally:
        cluster.head.run("adm", "container-retire", p, "--yes", timeout=60)


def test_cluster_sync_shows_the_diff_and_applies_it(cluster):
    """DS01's queue settings as slurm.conf keys: shown as a diff, written to the include file
    with --apply (then Slurm reports them); a user may not run it."""
    r = cluster.head.run("alice", "ds01", "admin", "cluster", "sync")
    assert r.returncode == 5, r  # admins only
    before = json.loads(ok(cluster.head.run("adm", "ds01", "admin", "cluster", "sync", "--json")).stdout)
    keys = {d["key"] for d in before["slurm_conf"]}
    assert "PriorityWeightFairshare" in keys, before  # Slurm's default weight is 0
    assert before["accounting"] == "none" and before["notes"]
    assert any(m["ds01"] == "limits.max_gpus" for m in before["mapping"])
    out = json.loads(ok(cluster.head.run("adm", "ds01", "admin", "cluster", "sync", "--apply", "--json")).stdout)
    assert out["applied"] and out["remaining"] == [], out
    text = (slurmlab.DIR / "ds01-managed.conf").read_text()
    assert "PriorityWeightFairshare=" in text
    cfg = slurmlab.slurm("scontrol", "show", "config").stdout
    assert re.search(r"PriorityWeightFair[Ss]hare\s*=\s*[1-9]", cfg), cfg
    again = json.loads(ok(cluster.head.run("adm", "ds01", "admin", "cluster", "sync", "--json")).stdout)
    assert again["slurm_conf"] == []


def test_images_reach_the_node_through_the_lab_registry(cluster):
    """cluster.registry: the head pushes the image once, the chosen node pulls it by that name
    (on this one-engine simulation the pushed name is removed from the engine again, so the
    node's pull is real)."""
    from tests.integration.harness import TEST_IMAGE
    from tests.integration.registry_fixture import start_registry

    reg = start_registry()
    p = unique_project("reg")
    client = docker.from_env()
    ref = f"{reg.host}/{TEST_IMAGE}"
    base = dict(cluster.head.config["cluster"])
    try:
        cluster.head.write_config({"cluster": {**base, "registry": reg.host}})
        ok(cluster.head.run("adm", "ds01", "admin", "reload"))
        ok(_deploy(cluster, "alice", p))
        assert "latest" in reg.tags(TEST_IMAGE.split(":")[0])
        c = _container(cluster, "alice", p)
        # the node ran exactly the head's image, named by the digest the registry stored
        assert c.attrs["Config"]["Image"].startswith(ref.rsplit(":", 1)[0] + "@sha256:"), c.attrs["Config"]["Image"]
        assert c.attrs["Image"] == client.images.get(TEST_IMAGE).id and c.status == "running"
        assert _row(cluster, "alice", p)["image"] == TEST_IMAGE  # the user's name for it
    finally:
        cluster.head.run("alice", "container-retire", p, "--yes", timeout=60)
        cluster.head.write_config({"cluster": base})
        cluster.head.run("adm", "ds01", "admin", "reload")
        try:
            client.images.remove(ref)
        except docker.errors.APIError:
            pass
        reg.stop()
