"""Issue 16, surviving faults (engine and client side): the pure parts.

* the engine's answer waits and the "not answering" error (runtime/engine_health.py),
* why a container stopped that no verb stopped (policy/stops.py),
* a daemon that goes away mid-answer is DaemonUnavailable (client/http.py), and a build whose
  stream breaks is a clear error, not a KeyError (cli/building.py).
"""

from __future__ import annotations

import socket
import threading
import time
from datetime import datetime, timezone

import pytest
import requests

from ds01 import errors
from ds01.client.http import Client
from ds01.policy.stops import ENGINE_RESTART, OUT_OF_MEMORY, engine_windows, parse_time, stop_reason
from ds01.runtime import engine_health as eh


# -- the engine's answer waits -----------------------------------------------------------------
def test_reads_wait_briefly_changes_long_and_explicit_timeouts_are_kept():
    quick = eh.request_timeout("GET", "/v1.45/containers/json?all=1", 120, 120, 3, 120)
    assert quick == (eh.CONNECT, 3)
    assert eh.request_timeout("POST", "/v1.45/containers/x/start", 120, 120, 3, 120) == (eh.CONNECT, 120)
    assert eh.request_timeout("DELETE", "/v1.45/containers/x", 120, 120, 3, 120) == (eh.CONNECT, 120)
    # stats waits for a second sample, archives stream: the long wait
    assert eh.request_timeout("GET", "/v1.45/containers/x/stats?stream=0", 120, 120, 3, 120) == (eh.CONNECT, 120)
    assert eh.request_timeout("GET", "/v1.45/containers/x/archive?path=/etc", 120, 120, 3, 120)[1] == 120
    assert eh.request_timeout("GET", "/v1.45/system/df", 120, 120, 3, 120)[1] == 120
    assert eh.request_timeout("GET", "/v1.45/containers/x/json?size=1", 120, 120, 3, 120)[1] == 120
    assert eh.request_timeout("GET", "/v1.45/containers/x/json", 120, 120, 3, 120)[1] == 3
    # a build sets none, a stop its grace plus the default: theirs
    assert eh.request_timeout("POST", "/v1.45/build", None, 120, 3, 120) is None
    assert eh.request_timeout("POST", "/v1.45/containers/x/stop", 130, 120, 3, 120) == 130


class _FakeApi:
    """Just what install() uses of a docker-py APIClient (a requests.Session)."""

    base_url = "http+docker://localhost"
    timeout = 120

    def __init__(self, fail: BaseException | None = None):
        self.fail = fail
        self.sent: list[tuple[str, str, object]] = []
        self._session = requests.Session()

    def prepare_request(self, req):
        return self._session.prepare_request(req)

    def send(self, request, **kw):
        self.sent.append((request.method, request.path_url, kw.get("timeout")))
        if self.fail is not None:
            raise self.fail
        return "answer"


def _request(method: str, path: str):
    return requests.Session().prepare_request(requests.Request(method, "http+docker://localhost" + path))


def test_an_engine_that_refuses_or_hangs_is_not_answering_exit_10():
    for fail, why in ((requests.exceptions.ConnectionError("[Errno 111] Connection refused"), "refused"),
                      (requests.exceptions.ReadTimeout("read timed out"), "no answer in time"),
                      (requests.exceptions.ConnectionError("RemoteDisconnected"), "connection lost")):
        api, health = _FakeApi(fail), eh.EngineHealth()
        eh.install(api, health, 3, 120)
        with pytest.raises(errors.EngineUnavailable) as e:
            api.send(_request("GET", "/v1.45/containers/json"), timeout=120)
        assert e.value.exit_code == 10 and isinstance(e.value, errors.RuntimeFailure)
        assert e.value.message.startswith("the container engine is not answering") and why in e.value.message
        assert "admin" in e.value.hint
        assert api.sent[-1][2] == (eh.CONNECT, 3)
        assert health.down_since is not None
        # it crosses the API as a runtime error: exit 10 on the client, the message kept
        back = errors.from_dict(e.value.to_dict())
        assert type(back) is errors.RuntimeFailure and back.exit_code == 10 and back.message == e.value.message


def test_a_change_after_a_quiet_spell_pings_first_and_outages_are_remembered():
    api, health = _FakeApi(), eh.EngineHealth(clock=lambda: 1000.0)
    eh.install(api, health, 3, 120)
    api.send(_request("POST", "/v1.45/containers/x/start"), timeout=120)
    assert [m for m, _, _ in api.sent] == ["GET", "POST"] and api.sent[0][1] == "/_ping"
    api.send(_request("POST", "/v1.45/containers/x/start"), timeout=120)  # answered just now: no ping
    assert len(api.sent) == 3
    health.failed()
    health.answered()
    assert health.outages == [(1000.0, 1000.0)] and health.down_since is None


def test_a_hung_engine_fails_a_change_at_the_ping_not_after_its_long_wait():
    api = _FakeApi(requests.exceptions.ReadTimeout("timed out"))
    eh.install(api, eh.EngineHealth(), 3, 120)
    with pytest.raises(errors.EngineUnavailable):
        api.send(_request("POST", "/v1.45/containers/create"), timeout=120)
    assert api.sent == [("GET", "/_ping", (eh.CONNECT, 3))]


# -- why a container stopped -------------------------------------------------------------------
def test_engine_times_parse_with_nanoseconds_and_never():
    t = parse_time("2026-12-01T09:00:00.123456789Z")
    assert t == pytest.approx(datetime(2026, 12, 1, 9, 0, 0, 123456, tzinfo=timezone.utc).timestamp())
    assert parse_time("2026-12-01T10:00:00+01:00") == pytest.approx(
        datetime(2026, 12, 1, 9, tzinfo=timezone.utc).timestamp())
    assert parse_time("0001-01-01T00:00:00Z") is None and parse_time(None) is None and parse_time("junk") is None


def test_stop_reason():
    outage = [(1000.0, 1030.0)]
    assert stop_reason(137, True, 1010.0, outage) == OUT_OF_MEMORY
    assert stop_reason(143, False, 1010.0, outage) == ENGINE_RESTART  # stopped while the engine was away
    assert stop_reason(137, False, 1030.5, outage) == ENGINE_RESTART  # within the slack
    assert stop_reason(137, False, 1033.0, outage) != ENGINE_RESTART  # after the engine answered
    assert stop_reason(255, False, None, []) == ENGINE_RESTART  # found dead at the engine's start
    assert "signal 9" in stop_reason(137, False, 5000.0, outage)  # docker kill, long after
    assert stop_reason(0, False, 5000.0, outage) == "stopped outside DS01 (exit code 0)"
    # the engine process started at 2000: its shutdown before counts
    assert engine_windows([(1.0, 2.0)], 2000.0) == [(1.0, 2.0), (2000.0 - 120.0, 2000.0 + 30.0)]
    assert stop_reason(143, False, 1990.0, engine_windows([], 2000.0)) == ENGINE_RESTART
    assert stop_reason(143, False, 1500.0, engine_windows([], 2000.0)) != ENGINE_RESTART


def test_engine_start_time_from_pid_file(tmp_path):
    import os

    pidfile = tmp_path / "docker.pid"
    pidfile.write_text(str(os.getpid()))
    started = eh.engine_started_at(str(pidfile))
    assert started is not None and time.time() - 24 * 3600 * 365 < started <= time.time() + 1
    assert eh.engine_started_at(str(tmp_path / "missing.pid")) is None


# -- a daemon that goes away mid-answer --------------------------------------------------------
def _serve_once(path: str, reply: bytes) -> threading.Thread:
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)

    def run() -> None:
        conn, _ = srv.accept()
        conn.recv(65536)
        if reply:
            conn.sendall(reply)
        conn.close()
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("reply", [
    b"",  # closed before answering
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\": ",  # cut body
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"a\": 1",  # cut chunk
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{}\n\r\n",  # no last chunk
])
def test_a_daemon_that_dies_mid_request_is_unavailable_exit_9(tmp_path, reply):
    path = str(tmp_path / "d.sock")
    _serve_once(path, reply)
    with pytest.raises(errors.DaemonUnavailable) as e:
        Client(path, timeout=5).call("GET", "/v1/containers")
    assert e.value.exit_code == 9 and "daemon" in e.value.message


def test_a_stream_cut_mid_build_is_unavailable_not_a_keyerror(tmp_path, monkeypatch, capsys):
    from ds01.cli import building

    path = str(tmp_path / "d.sock")
    monkeypatch.setenv("DS01_SOCKET", path)
    line = b'{"step": 1, "of": 2, "text": "FROM x"}\n'
    _serve_once(path, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                + f"{len(line):x}\r\n".encode() + line + b"\r\n")
    with pytest.raises(errors.DaemonUnavailable) as e:
        building.build("thesis", as_json=True)
    assert e.value.exit_code == 9


def test_a_stream_that_ends_cleanly_without_a_result_is_unavailable(tmp_path, monkeypatch):
    from ds01.cli import building

    path = str(tmp_path / "d.sock")
    monkeypatch.setenv("DS01_SOCKET", path)
    line = b'{"stream": "Step 1/2 : FROM x\\n"}\n'
    _serve_once(path, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                + f"{len(line):x}\r\n".encode() + line + b"\r\n0\r\n\r\n")
    with pytest.raises(errors.DaemonUnavailable, match="before the build finished"):
        building.build("thesis", as_json=True)


def test_while_the_engine_is_away_a_probe_notices_it_back(monkeypatch):
    monkeypatch.setattr(eh, "PROBE_EVERY", 0.01)
    health = eh.EngineHealth(clock=time.time)
    back = threading.Event()

    def probe():
        if not back.is_set():
            raise errors.EngineUnavailable("x")
        health.answered()

    health.probe = probe
    health.answered()
    health.failed()
    time.sleep(0.05)
    assert health.down_since is not None and not health.outages
    back.set()
    deadline = time.time() + 2
    while health.down_since is not None and time.time() < deadline:
        time.sleep(0.01)
    assert health.down_since is None and len(health.outages) == 1


def test_an_exec_without_an_exit_code_says_why():
    from ds01.runtime.base import ContainerInfo, ExecHandle
    from ds01.services.exec import ExecSession

    class Runtime:
        def __init__(self, answer):
            self.answer = answer

        def inspect(self, cid):
            if isinstance(self.answer, Exception):
                raise self.answer
            return self.answer

    def lost(answer):
        a, b = socket.socketpair()
        try:
            return ExecSession(Runtime(answer), ExecHandle(id="e", sock=a, tty=False), "thesis", "c1").exit_lost()
        finally:
            a.close()
            b.close()

    e = lost(eh.engine_down("connection refused"))
    assert isinstance(e, errors.EngineUnavailable) and "stopped answering while the command ran" in e.message
    e = lost(ContainerInfo(id="c1", name="n", status="exited", image="i"))
    assert type(e) is errors.RuntimeFailure and "container stopped while the command ran" in e.message
    assert "container-start thesis" in e.hint
    e = lost(ContainerInfo(id="c1", name="n", status="running", image="i"))
    assert "lost track of the command" in e.message and e.exit_code == 10
