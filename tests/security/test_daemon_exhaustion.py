"""One user cannot exhaust the daemon: connections are bounded per uid and in total, idle ones are
closed, the excess is refused with a clear error, the log does not flood, admins keep a reserve."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request

import pytest

from tests.integration.harness import BIN, USERS, free_port, new_daemon, ok

# Opens N connections to a Unix socket (or host:port) as whoever runs it, prints how many it holds,
# and holds them (idle: no request is ever sent) until its stdin closes.
FLOOD = r"""
import resource, socket, sys
target, n = sys.argv[1], int(sys.argv[2])
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a user may, up to the hard limit
held, failed = [], 0
for _ in range(n):
    if ":" in target:
        host, port = target.rsplit(":", 1)
        s = socket.socket(); addr = (host, int(port))
    else:
        s = socket.socket(socket.AF_UNIX); addr = target
    if ":" in target:
        s.settimeout(10)  # (a Unix socket stays blocking: connect waits for room in the backlog)
    try:
        s.connect(addr)
        held.append(s)
    except OSError:
        failed += 1
        s.close()
print(len(held), failed, flush=True)
sys.stdin.read()
"""
FLOODERS, PER_FLOODER = 4, 5000  # 20,000 in all: the test's fd limit (20,000) allows 5,000 per process


class Flood:
    """``count`` idle connections to ``target`` from processes running as ``user``."""

    def __init__(self, user: str, target: str, count: int, procs: int = 1):
        self.procs = [subprocess.Popen(["runuser", "-u", USERS[user], "--", str(BIN / "python"), "-c", FLOOD,
                                        target, str(count // procs)], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True) for _ in range(procs)]

    def wait_open(self, timeout: float = 300) -> int:
        """How many connections the flooders got (connected, whether the daemon kept them or not)."""
        held = 0
        deadline = time.time() + timeout
        for p in self.procs:
            line = p.stdout.readline()
            assert line, f"a flooder died (exit {p.poll()})"
            held += int(line.split()[0])
            assert time.time() < deadline
        return held

    def stop(self) -> None:
        for p in self.procs:
            try:
                p.stdin.close()
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture(scope="module")
def d(docker_client):
    d = new_daemon()
    d.web_port, d.metrics_port = free_port(), free_port()
    d.config["observability"] = {"metrics": {"listen": f"127.0.0.1:{d.metrics_port}"},
                                 "web": {"listen": f"127.0.0.1:{d.web_port}"}}
    d.config["daemon"]["connection_idle_timeout"] = 5
    d.start()
    yield d
    d.destroy(docker_client)


def timed(d, user: str, *args: str) -> float:
    t0 = time.monotonic()
    ok(d.run(user, *args, timeout=30))
    return time.monotonic() - t0


def log_size(d) -> int:
    return d.log_path.stat().st_size


def test_20000_idle_connections_from_one_user_leave_others_served_within_a_second(d):
    flood = Flood("bob", str(d.socket), FLOODERS * PER_FLOODER, procs=FLOODERS)
    try:
        held = flood.wait_open()
        assert held >= FLOODERS * PER_FLOODER * 0.99, held  # the daemon accepted them all (and refused)
        took = timed(d, "alice", "container-list")
        print(f"{held} idle connections from bob: alice's container-list took {took:.3f} s")
        assert took < 1.0, f"container-list took {took:.2f} s under {held} idle connections"
    finally:
        flood.stop()


def test_a_flood_grows_the_daemon_log_by_less_than_a_megabyte(d):
    before = log_size(d)
    flood = Flood("bob", str(d.socket), FLOODERS * PER_FLOODER, procs=FLOODERS)
    try:
        flood.wait_open()
        time.sleep(12)  # the idle ones are closed, the refusals reported (once per 10 s window)
    finally:
        flood.stop()
    grown = d.log_path.read_bytes()[before:]
    print(f"20,000 connections: the daemon log grew by {len(grown)} bytes")
    assert len(grown) < 1024 * 1024, f"the log grew by {len(grown)} bytes"
    assert b"Traceback" not in grown
    assert b"refused" in grown  # reported, once per window, with counts


def test_the_excess_gets_a_clear_busy_error(d):
    flood = Flood("bob", str(d.socket), 200)
    try:
        assert flood.wait_open() == 200
        r = d.run("bob", "container-list")  # bob's own 201st connection, while 64 are still held
        assert r.returncode == 13, (r.returncode, r.stderr)
        assert "connections open" in r.stderr and "limit per user" in r.stderr
    finally:
        flood.stop()


def test_a_connection_that_sends_no_request_is_closed(d):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(15)
    s.connect(str(d.socket))
    t0 = time.monotonic()
    assert s.recv(1024) == b""  # the daemon hung up on it
    assert 4 < time.monotonic() - t0 < 8  # connection_idle_timeout is 5 s here
    s.close()


def test_refused_connections_are_audited_for_admins(d):
    flood = Flood("carol", str(d.socket), 300)
    try:
        flood.wait_open()
    finally:
        flood.stop()
    deadline = time.time() + 15  # reported at most once per 10 s window
    while True:
        evs = json.loads(ok(d.run("adm", "ds01", "events", "--type", "daemon.busy", "--json")).stdout)
        if any(e["user"] == USERS["carol"] and e["result"] == "denied" for e in evs) or time.time() > deadline:
            break
        time.sleep(1)
    assert any(e["user"] == USERS["carol"] and e["result"] == "denied" for e in evs), evs


def test_admins_keep_a_reserve_when_users_fill_the_daemon(d):
    d.restart({"daemon": {"max_connections": 48, "max_connections_per_user": 20, "admin_connection_reserve": 8,
                          "connection_idle_timeout": 20}})
    floods = [Flood(u, str(d.socket), 20) for u in ("bob", "carol")]  # 40 of the 40 non-admin slots
    try:
        for f in floods:
            f.wait_open()
        refused = d.run("alice", "container-list")
        assert refused.returncode == 13 and "reserved for admins" in refused.stderr, refused.stderr
        ok(d.run("adm", "container-list", "--all-users"))
        ok(d.run(None, "container-list", "--all-users"))
    finally:
        for f in floods:
            f.stop()
        d.restart()


def test_floods_of_the_status_page_and_metrics_leave_the_daemon_serving(d):
    before = log_size(d)
    # (1,000 each: TCP connects are slower; both listeners serve 64 and 16 at once)
    floods = [Flood("bob", f"127.0.0.1:{port}", 1000) for port in (d.web_port, d.metrics_port)]
    try:
        for f in floods:
            f.wait_open()
        assert timed(d, "alice", "container-list") < 1.0
    finally:
        for f in floods:
            f.stop()
    time.sleep(4)  # idle connections are closed: the page and the metrics answer again
    assert urllib.request.urlopen(f"http://127.0.0.1:{d.web_port}/healthz", timeout=5).read() == b"ok"
    assert b"ds01_" in urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics", timeout=5).read()
    grown = d.log_path.read_bytes()[before:]
    assert len(grown) < 1024 * 1024 and b"Traceback" not in grown
