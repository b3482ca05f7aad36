"""Issue 12 without Docker: the login environment and run-time package settings (policy), the
exec's start failures and signals (services/exec.py), work processes, the CLI's confirmation
rule, the config's "did you mean" and check-limits' sources."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from types import SimpleNamespace

import pytest

from ds01.cli import fast, verbs
from ds01.errors import ConfigError, Conflict
from ds01.models.config import Config, parse_config
from ds01.policy.containers import build_spec
from ds01.policy.environment import CA_PATH, PROFILE_PATH, container_environment, profile_script
from ds01.policy.limits import effective_limits
from ds01.services import exec as exec_mod
from ds01.services.processes import describe, is_work, listing

IMAGE_ENV = ["PATH=/opt/venv/bin:/usr/bin:/bin", "VIRTUAL_ENV=/opt/venv", "HOME=/root", "X=it's $odd", "bad-name=1"]


def test_profile_restores_the_image_env_but_not_per_exec_variables():
    text = profile_script({"PATH": "/opt/venv/bin:/usr/bin", "HOME": "/root", "NVIDIA_VISIBLE_DEVICES": "all",
                           "X": "it's $odd"})
    assert "export PATH=/opt/venv/bin:/usr/bin\n" in text
    assert "HOME" not in text and "NVIDIA_VISIBLE_DEVICES" not in text
    out = subprocess.run(["sh", "-c", text + 'printf %s "$X"'], capture_output=True, text=True)
    assert out.stdout == "it's $odd"  # quoted: nothing expands


def test_every_container_gets_the_profile_file_and_no_package_settings_by_default():
    cfg = Config()
    extra, files = container_environment(cfg.build, IMAGE_ENV, {"HOME": "/home/a"}, ca_text="PEM")
    assert extra == {}
    assert [t for t, _ in files] == [PROFILE_PATH]
    assert "bad-name" not in files[0][1] and "VIRTUAL_ENV=/opt/venv" in files[0][1]


def test_package_settings_at_run_time_when_the_admin_enables_them():
    cfg = Config.model_validate({"build": {"in_containers": True, "pip_index_url": "https://pi.lab/simple",
                                           "http_proxy": "http://proxy.lab:3128"}})
    extra, files = container_environment(cfg.build, IMAGE_ENV, {}, ca_text="-----BEGIN CERTIFICATE-----\n")
    assert extra["PIP_INDEX_URL"] == "https://pi.lab/simple" and extra["https_proxy"] == "http://proxy.lab:3128"
    assert extra["PIP_CERT"] == extra["SSL_CERT_FILE"] == CA_PATH
    assert dict(files)[CA_PATH].startswith("-----BEGIN")
    assert "export PIP_CERT=" in dict(files)[PROFILE_PATH]
    extra, files = container_environment(cfg.build, IMAGE_ENV, {}, ca_text=None)  # no CA: no CA variables
    assert "PIP_CERT" not in extra and CA_PATH not in dict(files)


def test_build_spec_carries_the_files_and_the_environment():
    cfg = Config.model_validate({"build": {"in_containers": True, "pip_index_url": "https://pi.lab/simple"}})
    who = SimpleNamespace(uid=1000, gid=1000, name="alice", group="alice")
    lim = effective_limits(cfg, "alice", set())
    spec = build_spec(cfg, who, "p", "img", lim, "/w", 0.0, "default", image_env=IMAGE_ENV)
    assert spec.env["PIP_INDEX_URL"] == "https://pi.lab/simple" and spec.env["HOME"] == "/home/alice"
    assert PROFILE_PATH in dict(spec.files)


@pytest.mark.parametrize("data,text,code", [
    (b'OCI runtime exec failed: exec failed: unable to start container process: exec: "nope": executable file '
     b'not found in $PATH: unknown\r\n', b"nope: command not found\n", 127),
    (b'OCI runtime exec failed: exec failed: unable to start container process: exec: "/etc/passwd": '
     b'permission denied: unknown\r\n', b"/etc/passwd: permission denied (not an executable)\n", 126),
])
def test_a_start_failure_reads_like_a_shell(data, text, code):
    assert exec_mod.start_failure(data) == (text, code)
    assert exec_mod.start_failure(b"hello OCI runtime exec failed") is None


class FakeRuntime:
    def __init__(self, frames, pid=None, code=126):
        self._frames, self._pid, self._code = frames, pid, code

    def exec_frames(self, handle):
        return iter(self._frames)

    def exec_pid(self, exec_id):
        return self._pid

    def exec_exit_code(self, exec_id):
        return self._code


def session(rt):
    import socket

    a, b = socket.socketpair()
    b.close()
    return exec_mod.ExecSession(rt, SimpleNamespace(id="x", sock=a, tty=False), "p", "cid")


def test_the_session_reports_a_missing_command_and_exit_127():
    s = session(FakeRuntime([(1, b'OCI runtime exec failed: exec failed: x: exec: "nope": executable file not '
                                 b'found in $PATH: unknown\r\n')]))
    assert list(s.frames()) == [(2, b"nope: command not found\n")]
    assert s.wait_exit() == 127
    # a process that prints the same words itself (it has a pid) is left alone
    s = session(FakeRuntime([(1, b'OCI runtime exec failed: exec: "a": not found'), (1, b"more")], pid=42, code=0))
    assert [d for _, d in s.frames()][1] == b"more" and s.wait_exit() == 0


def test_signal_group_only_signals_a_process_of_that_container(tmp_path):
    child = subprocess.Popen(["sleep", "30"], start_new_session=True)  # a group leader, like an exec
    try:
        (tmp_path / str(child.pid)).mkdir()
        (tmp_path / str(child.pid) / "cgroup").write_text("0::/system.slice/docker-othercontainer.scope\n")
        assert not exec_mod.signal_group(child.pid, "abc123", signal.SIGTERM, proc=str(tmp_path))
        assert child.poll() is None
        (tmp_path / str(child.pid) / "cgroup").write_text("0::/system.slice/docker-abc123.scope\n")
        assert exec_mod.signal_group(child.pid, "abc123", signal.SIGTERM, proc=str(tmp_path))
        assert child.wait(5) == -signal.SIGTERM
        assert not exec_mod.signal_group(1, "abc123", signal.SIGTERM, proc=str(tmp_path))
    finally:
        if child.poll() is None:
            child.kill()


def test_work_processes_leave_out_shells_init_and_sleep_infinity():
    ignore = frozenset(Config().lifecycle.ignore_processes)
    me = describe(os.getpid())
    assert me is not None and me["seconds"] is not None and me["command"]
    assert is_work({"name": "python3", "pid": 17, "command": "python3 train.py"}, ignore)
    assert not is_work({"name": "bash", "pid": 17, "command": "bash -l"}, ignore)
    assert not is_work({"name": "sleep", "pid": 7, "command": "sleep infinity"}, ignore)
    assert not is_work({"name": "docker-init", "pid": 1, "command": "/sbin/docker-init -- sleep infinity"}, ignore)
    text = listing([{"pid": 17, "command": "python3 train.py", "seconds": 3700}])
    assert "PID" in text and "1h1m" in text and "python3 train.py" in text


def test_stop_and_retire_need_yes_outside_a_terminal(monkeypatch):
    calls = []
    busy = Conflict("1 process is still running", "--yes", details={"processes": [{"pid": 1}]})

    def call(check):
        calls.append(check)
        if check:
            raise busy
        return {"ok": True}

    monkeypatch.setattr(verbs, "is_tty", lambda: False)
    with pytest.raises(Conflict):
        verbs.checked(call, yes=False)
    assert verbs.checked(call, yes=True) == {"ok": True} and calls == [True, None]
    monkeypatch.setattr(verbs, "is_tty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda _q: "y")
    assert verbs.checked(call, yes=False) == {"ok": True}
    # the fast path takes --yes/--force for container-stop, the same rule
    assert fast.parse("container-stop", ["p", "--yes"]) == ("p", frozenset({"--yes"}))


def test_check_config_suggests_the_nearest_key():
    with pytest.raises(ConfigError) as e:
        parse_config("daemon:\n  tick_intervall: 5\ngroups:\n  - name: a\n    limits:\n      max_gpu: 1\n")
    assert "daemon.tick_intervall: unknown key (did you mean tick_interval?)" in e.value.message
    assert "groups.0.limits.max_gpu: unknown key (did you mean max_gpus?)" in e.value.message
    with pytest.raises(ConfigError) as e:
        parse_config("zzzz: 1\n")
    assert "unknown key (misspelt?)" in e.value.message


def test_check_limits_names_where_each_limit_comes_from():
    from ds01.cli.commands.gpus import source_text

    cfg = Config.model_validate({"users": {"alice": {"max_gpus": 3}},
                                 "groups": [{"name": "phd", "members": ["alice"], "limits": {"cpus": 8}}]})
    src = effective_limits(cfg, "alice", set()).to_dict()["sources"]
    assert [source_text(src[k]) for k in ("max_gpus", "cpus", "memory")] == ["user override", "group phd", "default"]


def test_kill_hangs_up_then_kills_what_is_left_of_the_group(monkeypatch):
    # a group whose leader and member both ignore SIGHUP: only the SIGKILL after the grace ends it
    child = subprocess.Popen(["sh", "-c", "trap '' HUP; sleep 30 & wait"], start_new_session=True)
    try:
        time.sleep(0.2)
        monkeypatch.setattr(exec_mod, "_in_container", lambda pid, cid, proc: cid == "cid")
        s = session(FakeRuntime([], pid=child.pid, code=None))
        t0 = time.monotonic()
        s.kill(grace=0.5)
        assert child.wait(5) == -signal.SIGKILL and 0.4 < time.monotonic() - t0 < 3
        time.sleep(0.1)
        assert not exec_mod.group_members(child.pid, "cid")  # the sleep went with it
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
