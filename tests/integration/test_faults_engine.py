"""Issue 16, surviving faults: the engine going away, against the real engine.

Stopping the host's dockerd would disturb every other test daemon, so this module's daemon talks
to the engine through a proxy socket of its own (``engine.url``) that the test can make hang
(connections accepted, nothing answered) or close (refused, every open connection cut) — the
engine as this daemon sees it during an outage or a restart — while the real engine keeps running.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time

import pytest

from .harness import USERS, ok, new_daemon, unique_project

ENGINE_SOCKET = "/var/run/docker.sock"


class EngineProxy:
    """A byte relay from ``path`` to the real engine's socket, switchable to hang or closed."""

    def __init__(self, path: str, upstream: str = ENGINE_SOCKET):
        self.path, self.upstream = path, upstream
        self.flowing = threading.Event()
        self.flowing.set()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.open()

    def open(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(self.path)
        srv.listen(128)
        self._listener = srv
        self.flowing.set()
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def hang(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        """As a stopped engine: the socket refuses, every connection (an exec's too) is cut."""
        srv, self._listener = self._listener, None
        if srv is not None:
            srv.close()
        if os.path.exists(self.path):
            os.unlink(self.path)
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                client, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        self.flowing.wait()  # a hung engine accepts and never answers
        up = socket.socket(socket.AF_UNIX)
        try:
            up.connect(self.upstream)
        except OSError:
            client.close()
            return
        with self._lock:
            self._conns += [client, up]
        threading.Thread(target=self._pump, args=(up, client), daemon=True).start()
        self._pump(client, up)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self.flowing.wait()
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)  # a half-close (an exec's end of input) passes through
        except OSError:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass


@pytest.fixture(scope="module")
def lab(docker_client, tmp_path_factory):
    d = new_daemon()
    proxy = EngineProxy(str(d.root / "engine.sock"))
    d.start({"engine": {"url": f"unix://{proxy.path}"}})
    d.proxy = proxy
    yield d
    proxy.close()
    proxy.open()  # the daemon's own clean-up goes through it
    for user in USERS:
        home = pwd.getpwnam(USERS[user]).pw_dir
        for name in os.listdir(os.path.join(home, "workspace")) if os.path.isdir(os.path.join(home, "workspace")) else ():
            if name.startswith("t-eng"):
                shutil.rmtree(os.path.join(home, "workspace", name), ignore_errors=True)
    d.destroy(docker_client)


@pytest.fixture
def engine(lab):
    """The proxy, flowing again after each test whatever the test left it as."""
    yield lab.proxy
    lab.proxy.resume()
    if lab.proxy._listener is None:
        lab.proxy.open()
    for c in json.loads(ok(lab.run("alice", "container-list", "--all", "--json")).stdout):
        lab.run("alice", "container-remove", c["project"], "--force")


def timed(lab, user: str, *args: str, timeout: float = 60):
    t0 = time.monotonic()
    p = lab.run(user, *args, timeout=timeout)
    return p, time.monotonic() - t0


def names_the_engine(p: subprocess.CompletedProcess) -> None:
    assert "the container engine is not answering" in p.stderr or "container engine" in p.stderr, p.stderr
    assert "hint:" in p.stderr, p.stderr


def test_an_engine_that_hangs_is_reported_in_seconds_with_exit_10(lab, engine):
    p = unique_project("eng")
    ok(lab.run("alice", "container-deploy", p, "--background"))
    engine.hang()
    r, took = timed(lab, "alice", "container-list")
    print(f"container-list, engine hung: exit {r.returncode} in {took:.1f} s\n{r.stderr}")
    assert r.returncode == 10 and took < 5, (r.returncode, took, r.stderr)
    assert "the container engine is not answering" in r.stderr
    names_the_engine(r)
    # a change is refused as quickly: the ping before it does not wait for its long timeout
    r, took = timed(lab, "alice", "container-stop", p, "--yes")
    assert r.returncode == 10 and took < 8, (r.returncode, took, r.stderr)
    names_the_engine(r)
    engine.resume()
    out = json.loads(ok(lab.run("alice", "container-list", "--json")).stdout)
    assert any(c["project"] == p and c["status"] == "running" for c in out)


def test_an_engine_that_is_gone_is_reported_at_once_with_exit_10(lab, engine):
    engine.close()
    for verb in (["container-list"], ["ds01", "status"], ["container-deploy", unique_project("eng"), "--background"]):
        r, took = timed(lab, "alice", *verb)
        print(f"{' '.join(verb[:1])}, engine gone: exit {r.returncode} in {took:.1f} s")
        assert r.returncode == 10 and took < 5, (verb, r.returncode, took, r.stdout, r.stderr)
        names_the_engine(r)
    engine.open()
    ok(lab.run("alice", "container-list"))  # back as soon as the engine is


def test_container_run_whose_engine_goes_away_says_so(lab, engine):
    p = unique_project("eng")
    ok(lab.run("alice", "container-deploy", p, "--background"))
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **lab.env()}
    from .harness import BIN

    argv = ["runuser", "-u", USERS["alice"], "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()],
            str(BIN / "container-run"), p, "--", "sh", "-c", "echo started; sleep 30"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
    assert proc.stdout.readline().strip() == "started"
    engine.close()
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    print(f"container-run, engine gone: exit {proc.returncode}\n{err}")
    assert proc.returncode == 10, (proc.returncode, err)
    assert "container engine" in err and "exit status is unknown" in err, err
    assert "hint:" in err


def test_a_container_stopped_while_the_engine_was_away_says_why(lab, engine, docker_client):
    p, q = unique_project("eng"), unique_project("eng")
    for x in (p, q):
        ok(lab.run("alice", "container-deploy", x, "--background"))
    name = {c["project"]: c["name"] for c in json.loads(ok(lab.run("alice", "container-list", "--json")).stdout)}
    engine.close()
    assert lab.run("alice", "container-list").returncode == 10  # the daemon sees the outage
    docker_client.containers.get(name[p]).kill()  # what a stopping engine does to its containers
    time.sleep(1)
    engine.open()
    time.sleep(3)  # the daemon's probe sees it back within a second
    docker_client.containers.get(name[q]).kill()  # the engine answering: someone else's doing
    rows = {c["project"]: c for c in json.loads(ok(lab.run("alice", "container-list", "--all", "--json")).stdout)}
    assert rows[p]["status"] == "exited" and rows[q]["status"] == "exited", (rows, lab.log_tail())
    evs = json.loads(ok(lab.run("alice", "ds01", "events", "--since", "1h", "--json")).stdout)
    evs = evs if isinstance(evs, list) else evs.get("events", [])
    why = {e["target"]: e.get("reason") for e in evs if e["action"] == "container.exited"}
    assert why.get(p) == "stopped when the container engine restarted", evs
    assert why.get(q, "").startswith("stopped outside DS01 (killed by signal 9"), evs


def _popen_as(lab, user: str, *args: str) -> subprocess.Popen:
    from .harness import BIN

    env = {"PATH": f"{BIN}:/usr/bin:/bin", "LANG": "C.UTF-8", **lab.env()}
    argv = ["runuser", "-u", USERS[user], "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()],
            str(BIN / args[0]), *args[1:]]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")


def test_clients_whose_daemon_dies_mid_request_exit_9_with_a_clear_message(lab, engine):
    """Last in this module: it kills the daemon (then starts it again)."""
    from .harness import write_as

    p = unique_project("eng")
    home = pwd.getpwnam(USERS["alice"]).pw_dir
    write_as("alice", f"{home}/workspace/{p}/Dockerfile",
             "FROM ds01-test/busybox:latest\nRUN echo step-running && sleep 30\n")
    build = _popen_as(lab, "alice", "image-create", p)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(build.stdout), daemon=True)
    reader.start()
    deadline = time.time() + 60
    while time.time() < deadline and not any("step-running" in line for line in seen):
        time.sleep(0.2)
    assert any("step-running" in line for line in seen), seen  # the build's stream is open, its step sleeping
    engine.hang()  # and a plain request in progress: the daemon waits for the engine
    listing = _popen_as(lab, "alice", "container-list")
    time.sleep(1)
    lab.proc.kill()
    lab.proc.wait()
    try:
        for proc, what in ((listing, "container-list"), (build, "image-create")):
            if proc is build:
                reader.join(30)
            out, err = proc.communicate(timeout=30)
            out = "".join(seen) if proc is build else out
            print(f"{what}, daemon killed mid-request: exit {proc.returncode}\n{err}")
            assert proc.returncode == 9, (what, proc.returncode, out, err)
            assert "DS01 daemon" in err and "hint:" in err and "Traceback" not in err, (what, err)
            assert "invalid response" not in err
    finally:
        for proc in (listing, build):
            proc.kill()
        engine.resume()
        lab.proc = None
        lab.start({"engine": {"url": f"unix://{engine.path}"}})
    ok(lab.run("alice", "container-list"))
