"""Concurrent deploy / retire / list against the real daemon and engine.

The bug this guards: a listing (or the lifecycle tick) took the engine's container list first and
read the records after it, so a container created in between looked missing: its record was
marked gone, its GPU released and its pin removed while the container lived on (the next deploy
then failed with "a container named ... already exists"). The promise: under any interleaving of
verbs and listings there is no false "gone", no container without a record, no device held twice,
and every request either succeeds or fails with a precise, expected error.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from .harness import new_daemon, ok, unique_project

DURATION = 20.0  # seconds of load; each verb round trip is ~0.3-1 s on a 2-core machine


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=60)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self._path)


def _get(sock: str, path: str) -> tuple[int, object]:
    c = _UnixHTTP(sock)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        c.close()


@pytest.fixture
def busy_daemon(docker_client):
    d = new_daemon()
    d.config["defaults"] = {"max_gpus": 2.0, "max_gpus_per_container": 1.0, "max_containers": 10,
                            "gpu_hold_after_stop": "1s"}
    d.config["daemon"]["tick_interval"] = "1s"  # the lifecycle tick judges records too
    d.start()
    yield d
    d.destroy(docker_client)


def test_concurrent_deploy_retire_list_no_false_gone_no_orphans(busy_daemon, docker_client, projects):
    d = busy_daemon
    shared = unique_project("race")          # two alice threads fight over the same project
    own = unique_project("solo")             # a third alice thread has its own
    bobs = unique_project("bob")
    projects.extend([("alice", shared), ("alice", own), ("bob", bobs)])
    stop = threading.Event()
    outcomes: list[tuple[str, str, int, str]] = []
    lock = threading.Lock()
    list_errors: list[str] = []
    double_held: list[list] = []

    def verbs(user: str, project: str) -> None:
        while not stop.is_set():
            for verb, args in (("container-deploy", ["--gpus", "1", "--background"]), ("container-retire", [])):
                p = d.run(user, verb, project, *args)
                with lock:
                    outcomes.append((user, verb, p.returncode, p.stderr.strip()[-300:]))

    def lister() -> None:
        while not stop.is_set():
            try:
                status, rows = _get(str(d.socket), "/v1/containers")  # root: every user's records
            except OSError as e:
                list_errors.append(repr(e))
                continue
            if status != 200:
                list_errors.append(f"{status} {rows}")
                continue
            held = Counter(g for r in rows for g in r["gpus"] if r["status"] != "gone")
            dup = [g for g, n in held.items() if n > 1]
            if dup:
                double_held.append(dup)

    workers = [("alice", shared), ("alice", shared), ("alice", own), ("bob", bobs)]
    with ThreadPoolExecutor(max_workers=len(workers) + 6) as pool:
        futs = [pool.submit(verbs, u, p) for u, p in workers] + [pool.submit(lister) for _ in range(6)]
        time.sleep(DURATION)
        stop.set()
        for f in futs:
            f.result(timeout=120)

    # every request succeeded, or failed precisely: retiring what the other thread just retired
    # (4, not found), deploying while the other thread's verb held the project too long (13, busy)
    counts = Counter((v, rc) for _, v, rc, _ in outcomes)
    bad = [o for o in outcomes if o[2] not in (0, 4, 13) or (o[2] == 4 and o[1] != "container-retire")]
    assert not bad, f"unexpected outcomes: {bad[:5]} (all: {dict(counts)})"
    assert counts[("container-deploy", 0)] >= 4, dict(counts)  # the load actually ran
    assert not list_errors, list_errors[:5]
    assert not double_held, double_held[:5]

    status, events = _get(str(d.socket), "/v1/events?since=2h&limit=5000")
    assert status == 200, events
    rows = events if isinstance(events, list) else events.get("events", [])
    gone = [e for e in rows if e.get("action") == "container.gone"]
    assert not gone, f"false 'gone' events: {gone[:3]}"

    # records and engine agree exactly, and a deploy of each project still works afterwards
    for user, project in (("alice", shared), ("alice", own), ("bob", bobs)):
        d.run(user, "container-retire", project)
    assert d.containers(docker_client) == [], [c.name for c in d.containers(docker_client)]
    status, rows = _get(str(d.socket), "/v1/containers")
    assert status == 200 and rows == [], rows
    ok(d.run("alice", "container-deploy", shared, "--gpus", "1", "--background"))
    ok(d.run("alice", "container-retire", shared))
