"""Lifecycle automation through the real daemon and engine, with second-scale timeouts: idle stop
with two warnings, a CPU-busy neighbour kept, GPU released and a queued request served,
keepalive, max runtime, cleanup of stopped / never-started containers, and timers that survive a
SIGKILL of ds01d."""

from __future__ import annotations

import json
import os
import pwd
import signal
import time

import pytest

from .harness import new_daemon, ok, unique_project, USERS

TICK = 1.0
IDLE = 10.0
SLACK = 1.0  # the stop itself, event/file latency, the poll


def make(docker_client, **limits):
    d = new_daemon()
    d.config["daemon"]["tick_interval"] = f"{TICK}s"
    d.config["gpu"] = {"inventory": "simulated", "simulated": {"gpus": [{}]}}  # one whole GPU
    d.config["defaults"] = {"idle_timeout": f"{IDLE}s", "max_runtime": "1h", "gpu_hold_after_stop": "1s",
                            "max_containers": 5, **limits}
    d.config["lifecycle"] = {"startup_grace": 0, "busy_factor": 1.0, "stop_grace": 1}
    return d


@pytest.fixture
def lc(docker_client):
    made = []

    def factory(**limits):
        d = make(docker_client, **limits)
        made.append(d)
        return d

    yield factory
    for d in made:
        d.destroy(docker_client)


def events(d, action: str | None = None, target: str | None = None) -> list[dict]:
    path = d.root / "var/log/ds01/events.jsonl"
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        e = json.loads(line)
        if (action is None or e["action"] == action) and (target is None or e["target"] == target):
            out.append(e)
    return out


def container(docker_client, d, project):
    import docker

    for c in d.containers(docker_client):
        if c.labels.get("ds01.project") == project:
            try:
                c.reload()
            except docker.errors.NotFound:
                return None
            return c
    return None


def wait_status(docker_client, d, project, status, timeout: float) -> float | None:
    end = time.time() + timeout
    while time.time() < end:
        c = container(docker_client, d, project)
        if c is not None and c.status == status:
            return time.time()
        time.sleep(0.1)
    return None


def alerts(user: str, project: str) -> list[str]:
    p = os.path.join(pwd.getpwnam(USERS[user]).pw_dir, "workspace", project, ".ds01-alerts")
    try:
        return open(p).read().splitlines()
    except OSError:
        return []


def go_idle(docker_client, d, project, busy_s: float = 2.0) -> float:
    """Keep the container CPU-busy for busy_s, then idle; returns when it went idle."""
    c = container(docker_client, d, project)
    c.exec_run(["sh", "-c", f"timeout {busy_s} yes > /dev/null"])
    return time.time()


def test_idle_stopped_after_two_warnings_busy_kept_gpu_released_queue_served(lc, docker_client, projects):
    d = lc()
    d.start()
    idle_p, busy_p, waiting_p = unique_project("idle"), unique_project("busy"), unique_project("wait")
    projects += [("alice", idle_p), ("carol", busy_p), ("bob", waiting_p)]
    ok(d.run("alice", "container-create", idle_p, "--gpus", "1"))
    ok(d.run("alice", "container-start", idle_p))
    ok(d.run("carol", "container-create", busy_p))
    ok(d.run("carol", "container-start", busy_p))
    container(docker_client, d, busy_p).exec_run(["sh", "-c", "yes > /dev/null"], detach=True)
    q = json.loads(ok(d.run("bob", "container-create", waiting_p, "--gpus", "1", "--queue", "--json")).stdout)
    assert q["queued"]
    went_idle = go_idle(docker_client, d, idle_p)
    stopped = wait_status(docker_client, d, idle_p, "exited", IDLE + 3 * TICK + 10)
    assert stopped is not None, d.log_tail()
    after = stopped - went_idle
    assert IDLE - 0.2 <= after <= IDLE + TICK + SLACK, after
    end = time.time() + 5
    while time.time() < end and not events(d, "lifecycle.stop", idle_p):
        time.sleep(0.1)
    warns = events(d, "lifecycle.warn", idle_p)
    assert [w["data"]["level"] for w in warns] == [1, 2]
    stop = events(d, "lifecycle.stop", idle_p)
    assert len(stop) == 1 and stop[0]["reason"] == "idle"
    assert stop[0]["data"]["samples"] and stop[0]["data"]["sample"]["cpu_percent"] < 5
    assert all(w["time"] < stop[0]["time"] for w in warns)
    end = time.time() + 5
    while time.time() < end and not any("was stopped" in x for x in alerts("alice", idle_p)):
        time.sleep(0.1)
    lines = alerts("alice", idle_p)
    assert sum("warning" in x and "container-keepalive" in x for x in lines) == 2, lines
    assert any("was stopped because it was idle" in x for x in lines), lines
    # the GPU is released after gpu_hold_after_stop and the queued request starts
    started = wait_status(docker_client, d, waiting_p, "running", 6)
    assert started is not None, d.log_tail()
    assert started - stopped <= 1.0 + 2 * TICK + SLACK
    end = time.time() + 5  # recorded once the queued deploy returned
    while time.time() < end and not events(d, "queue.served", waiting_p):
        time.sleep(0.1)
    assert events(d, "queue.served", waiting_p)
    # the CPU-busy neighbour keeps running, with no warning
    time.sleep(1)
    assert container(docker_client, d, busy_p).status == "running"
    assert not events(d, "lifecycle.warn", busy_p)
    # the workspace is untouched
    assert os.path.isdir(os.path.join(pwd.getpwnam(USERS["alice"]).pw_dir, "workspace", idle_p))


def test_keepalive_postpones_the_idle_stop(lc, docker_client, projects):
    d = lc()
    d.start({"lifecycle": {"keepalive_max": "1m", "keepalive_default": "30s"}})
    p = unique_project("keep")
    projects.append(("alice", p))
    ok(d.run("alice", "container-create", p))
    ok(d.run("alice", "container-start", p))
    went_idle = go_idle(docker_client, d, p, 1)
    time.sleep(3)
    r = ok(d.run("alice", "container-keepalive", p, "--for", "6s", "--json"))
    until = json.loads(r.stdout)["keepalive_until"]
    r = d.run("alice", "container-keepalive", p, "--for", "2h")
    assert r.returncode != 0 and "at most" in r.stderr
    # without the keepalive it would stop at went_idle + IDLE; now not before until + IDLE
    assert wait_status(docker_client, d, p, "exited", until + IDLE - time.time() - 0.5) is None
    assert time.time() > went_idle + IDLE + TICK + SLACK
    stopped = wait_status(docker_client, d, p, "exited", TICK + SLACK + 3)
    assert stopped is not None and until + IDLE - 0.2 <= stopped <= until + IDLE + TICK + SLACK
    assert [e["data"]["level"] for e in events(d, "lifecycle.warn", p)] == [1, 2]
    assert events(d, "lifecycle.keepalive", p)


def test_max_runtime_stops_a_busy_container(lc, docker_client, projects):
    d = lc(max_runtime="8s", idle_timeout="1h")
    d.start()
    p = unique_project("long")
    projects.append(("bob", p))
    ok(d.run("bob", "container-create", p))
    t0 = time.time()
    ok(d.run("bob", "container-start", p))
    container(docker_client, d, p).exec_run(["sh", "-c", "yes > /dev/null"], detach=True)
    stopped = wait_status(docker_client, d, p, "exited", 8 + 2 * TICK + 5)
    assert stopped is not None, d.log_tail()
    assert 8 - 0.2 <= stopped - t0 <= 8 + TICK + SLACK + 1
    assert [e["data"]["level"] for e in events(d, "lifecycle.warn", p)] == [1, 2]
    end = time.time() + 5
    while time.time() < end and not events(d, "lifecycle.stop", p):
        time.sleep(0.1)
    (stop,) = events(d, "lifecycle.stop", p)
    assert stop["reason"] == "max_runtime" and stop["data"]["samples"][-1]["cpu_percent"] > 50
    end = time.time() + 5
    while time.time() < end and not any("was stopped" in x for x in alerts("bob", p)):
        time.sleep(0.1)
    assert any("maximum runtime" in x for x in alerts("bob", p))


def test_stopped_and_never_started_containers_are_removed(lc, docker_client, projects):
    d = lc()
    d.start({"lifecycle": {"container_hold_after_stop": "3s", "never_started_timeout": "3s"}})
    created, stopped = unique_project("new"), unique_project("old")
    projects += [("alice", created), ("alice", stopped)]
    ok(d.run("alice", "container-create", created, "--gpus", "1"))
    ok(d.run("alice", "container-create", stopped))
    ok(d.run("alice", "container-start", stopped))
    ok(d.run("alice", "container-stop", stopped))
    t0 = time.time()
    end = t0 + 3 + 2 * TICK + 5
    while time.time() < end and (container(docker_client, d, created) or container(docker_client, d, stopped)):
        time.sleep(0.2)
    assert container(docker_client, d, created) is None and container(docker_client, d, stopped) is None
    end = time.time() + 5  # the event is recorded once the remove returned (network clean-up included)
    while time.time() < end and not (events(d, "lifecycle.remove", created) and events(d, "lifecycle.remove", stopped)):
        time.sleep(0.1)
    assert [e["reason"] for e in events(d, "lifecycle.remove", created)] == ["never_started"]
    assert [e["reason"] for e in events(d, "lifecycle.remove", stopped)] == ["stopped"]
    inv = json.loads(ok(d.run("alice", "ds01", "gpus", "--json")).stdout)
    assert all(x["holder"] is None for x in inv["devices"])  # the never-started one's GPU is free
    home = pwd.getpwnam(USERS["alice"]).pw_dir
    assert os.path.isdir(os.path.join(home, "workspace", created))


def test_daemon_sigkill_and_restart_keep_the_timers(lc, docker_client, projects):
    d = lc(idle_timeout="16s")
    d.start()
    p, waiting = unique_project("rs"), unique_project("rsq")
    projects += [("alice", p), ("bob", waiting)]
    ok(d.run("alice", "container-create", p, "--gpus", "1"))
    ok(d.run("alice", "container-start", p))
    ok(d.run("bob", "container-create", waiting, "--gpus", "1", "--queue"))
    went_idle = go_idle(docker_client, d, p, 1)
    # after the first warning (80 % of 16 s = 12.8 s), before the second (15.2 s)
    end = time.time() + 20
    while time.time() < end and not events(d, "lifecycle.warn", p):
        time.sleep(0.05)
    assert [e["data"]["level"] for e in events(d, "lifecycle.warn", p)] == [1]
    d.stop(signal.SIGKILL)
    time.sleep(0.5)
    d.start()
    q = json.loads(ok(d.run("bob", "gpu-queue", "--json")).stdout)
    assert [x["project"] for x in q] == [waiting] or container(docker_client, d, waiting) is not None
    stopped = wait_status(docker_client, d, p, "exited", 12)
    assert stopped is not None, d.log_tail()
    # no free time (the idle clock did not restart) and no instant kill
    assert 16 - 0.2 <= stopped - went_idle <= 16 + TICK + SLACK, stopped - went_idle
    assert [e["data"]["level"] for e in events(d, "lifecycle.warn", p)] == [1, 2]  # not repeated
    assert wait_status(docker_client, d, waiting, "running", 6) is not None
