"""Running the lab (issue 16, items 1–3) against a real ds01d: SIGHUP / ``ds01 admin reload`` without
downtime (an invalid file changes nothing; restart-only settings are named), limits from the CLI
as a member of the admin group (written with comments kept, applied at once, audited), one
``ds01 admin`` namespace, and the admin options of ``usage`` and ``events``.

These tests change the config, so they run their own daemon (not the session one)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import time

import pytest
import yaml

from .harness import BIN, USERS, _merge, new_daemon, ok, unique_project

HEADER = "# DS01 test lab: this comment must survive every edit\n"


def write_text_config(d, extra: dict | None = None, comment: str = "") -> None:
    """The config as an admin writes it: comments included."""
    data = _merge(d.config, extra or {})
    text = HEADER + yaml.safe_dump(data, sort_keys=False)
    if comment:
        text = text.replace("defaults:", f"{comment}\ndefaults:", 1) if "defaults:" in text else text + comment + "\n"
    (d.root / "etc/ds01/config.yaml").write_text(text)


@pytest.fixture(scope="module")
def lab(docker_client):
    d = new_daemon()
    d.config["defaults"] = {"max_gpus": 1, "max_containers": 3}
    d.config["groups"] = [{"name": "students", "members": [USERS["carol"]]}]
    d.start()
    write_text_config(d)
    yield d
    for user, project in getattr(d, "used", []):
        d.run(user, "container-retire", project)
        shutil.rmtree(os.path.join(pwd.getpwnam(USERS[user]).pw_dir, "workspace", project), ignore_errors=True)
    d.destroy(docker_client)


def limits(d, user: str) -> dict:
    return json.loads(ok(d.run(user, "check-limits", "--json")).stdout)


def events(d, *args: str, user: str = "adm") -> list[dict]:
    return json.loads(ok(d.run(user, "ds01", "events", "--since", "1h", "--json", *args)).stdout)


def hup_and_wait(d, changed: str, timeout: float = 10) -> dict:
    """SIGHUP the daemon; the config.reload event it records (after the ones already there)."""
    seen = {e["id"] for e in events(d, "--action", "config.reload")}
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + timeout
    while time.time() < deadline:
        new = [e for e in events(d, "--action", "config.reload") if e["id"] not in seen]
        if new:
            assert d.proc.poll() is None, "SIGHUP stopped the daemon"
            return new[0]
        time.sleep(0.1)
    raise AssertionError(f"no config.reload event after SIGHUP ({changed})\n{d.log_tail()}")


def test_sighup_applies_a_changed_limit_and_keeps_the_daemon(lab):
    assert limits(lab, "bob")["limits"]["max_gpus"] == 1
    write_text_config(lab, {"users": {USERS["bob"]: {"max_gpus": 2}}})
    ev = hup_and_wait(lab, "users.bob.max_gpus")
    assert ev["result"] == "ok" and ev["data"]["via"] == "SIGHUP"
    assert f"users.{USERS['bob']}.max_gpus" in ev["data"]["changed"]
    assert limits(lab, "bob")["limits"]["max_gpus"] == 2
    assert lab.proc.poll() is None
    ok(lab.run("bob", "container-list"))  # still serving


def test_invalid_config_changes_nothing_and_names_key_and_line(lab):
    path = lab.root / "etc/ds01/config.yaml"
    good = path.read_text()
    try:
        path.write_text(good + "queue:\n  agin: 2h\n")  # a typo'd key, on the last line
        line = len(path.read_text().splitlines())
        r = lab.run("adm", "ds01", "admin", "reload")
        assert r.returncode == 12, r
        assert "queue.agin" in r.stderr and f"config.yaml:{line}" in r.stderr and "nothing was changed" in r.stderr
        ev = hup_and_wait(lab, "invalid")  # SIGHUP with the same file: refused, logged, still up
        assert ev["result"] == "error"
        assert lab.proc.poll() is None and "not reloaded" in lab.log_tail()
        assert limits(lab, "bob")["limits"]["max_gpus"] == 2  # the running config is unchanged
    finally:
        path.write_text(good)
    ok(lab.run("adm", "ds01", "admin", "reload"))


def test_restart_only_settings_are_named_not_ignored(lab):
    path = lab.root / "etc/ds01/config.yaml"
    good = path.read_text()
    try:
        path.write_text(good.replace(f"instance: {lab.instance}", "instance: somewhere-else"))
        out = json.loads(ok(lab.run("adm", "ds01", "admin", "reload", "--json")).stdout)
        assert [r["key"] for r in out["restart_required"]] == ["daemon.instance"]
        assert out["restart_required"][0]["running"] == lab.instance
        r = ok(lab.run("adm", "ds01", "admin", "reload"))
        assert "needs a restart of ds01d: daemon.instance" in r.stderr
        code, health = lab.api("adm", "GET", "/v1/health")
        assert health["instance"] == lab.instance  # still managing its own containers
    finally:
        path.write_text(good)
    out = json.loads(ok(lab.run("adm", "ds01", "admin", "reload", "--json")).stdout)
    assert out["restart_required"] == []


def test_limits_set_as_admin_group_member_keeps_comments_and_is_audited(lab):
    path = lab.root / "etc/ds01/config.yaml"
    write_text_config(lab, comment="# per-user overrides below are managed with ds01 admin limits")
    ok(lab.run("adm", "ds01", "admin", "reload"))
    assert pwd.getpwnam(USERS["adm"]).pw_uid != 0  # not root: a member of the admin group
    t0 = time.time()
    r = ok(lab.run("adm", "ds01", "admin", "limits", "set", USERS["bob"], "max_gpus=2", "memory=8g"))
    assert "max_gpus" in r.stdout and "no restart" in r.stdout
    assert time.time() - t0 < 5
    text = path.read_text()
    assert text.startswith(HEADER) and "# per-user overrides below are managed with ds01 admin limits" in text
    lim = limits(lab, "bob")
    assert lim["limits"]["max_gpus"] == 2 and lim["limits"]["memory"] == 8 * 1024**3
    assert lim["sources"]["max_gpus"] == "user"
    ev = events(lab, "--action", "config.limits")[0]
    assert ev["user"] == USERS["adm"] and ev["target"] == f"user:{USERS['bob']}" and ev["result"] == "ok"
    assert ev["data"]["changes"]["memory"] == {"from": None, "to": "8g"}
    # show, unset, and the daemon's own validation of a bad value (file untouched)
    show = json.loads(ok(lab.run("adm", "ds01", "admin", "limits", "show", USERS["bob"], "--json")).stdout)
    assert show["set"]["max_gpus"] == 2 and show["effective"]["memory"] == 8 * 1024**3
    ok(lab.run("adm", "ds01", "admin", "limits", "unset", USERS["bob"], "memory"))
    assert limits(lab, "bob")["limits"]["memory"] != 8 * 1024**3
    before = path.read_text()
    r = lab.run("adm", "ds01", "admin", "limits", "set", USERS["bob"], "max_gpus=-1")
    assert r.returncode == 12 and f"users.{USERS['bob']}.max_gpus" in r.stderr, r
    r = lab.run("adm", "ds01", "admin", "limits", "set", USERS["bob"], "max_gpu=1")
    assert r.returncode == 3 and "did you mean max_gpus" in r.stderr, r
    assert path.read_text() == before
    # not an admin: refused (and the file untouched)
    r = lab.run("alice", "ds01", "admin", "limits", "set", USERS["alice"], "max_gpus=4")
    assert r.returncode == 5 and "admins" in r.stderr
    assert path.read_text() == before and limits(lab, "alice")["limits"]["max_gpus"] == 1


def test_lowered_limit_applies_to_new_requests_and_shows_over_for_holders(lab, docker_client):
    p = unique_project("over")
    lab.used = [*getattr(lab, "used", []), ("bob", p)]
    ok(lab.run("adm", "ds01", "admin", "limits", "set", USERS["bob"], "max_gpus=2"))
    ok(lab.run("bob", "container-deploy", p, "--gpus", "1", "--background"))
    rec = json.loads(ok(lab.run("bob", "container-list", "--json")).stdout)
    held = [c for c in rec if c["project"] == p]
    assert held and held[0]["status"] == "running" and held[0]["gpus"]
    ok(lab.run("adm", "ds01", "admin", "limits", "set", USERS["bob"], "max_gpus=0"))
    r = ok(lab.run("bob", "check-limits"))
    assert "over the new limit" in r.stdout
    # the running container and its allocation are untouched; a new request is refused
    rec = {c["project"]: c for c in json.loads(ok(lab.run("bob", "container-list", "--json")).stdout)}
    assert rec[p]["status"] == "running" and rec[p]["gpus"] == held[0]["gpus"]
    p2 = unique_project("over2")
    lab.used.append(("bob", p2))
    r = lab.run("bob", "container-create", p2, "--gpus", "1")
    assert r.returncode == 6 and "you hold 1.0 of 0.0 GPU-equivalents" in r.stderr, r
    ok(lab.run("adm", "ds01", "admin", "limits", "set", USERS["bob"], "max_gpus=2"))
    assert "over the new limit" not in ok(lab.run("bob", "check-limits")).stdout


def test_sighup_under_nohup_and_during_startup_never_stops_the_daemon(docker_client):
    d = new_daemon()
    try:
        d.write_config()
        log = open(d.log_path, "ab")
        # like `nohup ds01d`: started with SIGHUP ignored
        d.proc = subprocess.Popen([str(BIN / "ds01d"), "--root", str(d.root)], stdout=log, stderr=log,
                                  preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
        for _ in range(5):  # while it starts
            time.sleep(0.1)
            d.proc.send_signal(signal.SIGHUP)
        d.wait_ready()
        write_text_config(d, {"users": {USERS["carol"]: {"max_containers": 7}}})
        ev = hup_and_wait(d, "carol")
        assert ev["result"] == "ok"
        assert limits(d, "carol")["limits"]["max_containers"] == 7
        assert d.proc.poll() is None
    finally:
        d.destroy(docker_client)


def test_one_admin_namespace(lab):
    r = ok(lab.run("adm", "ds01", "admin", "--help"))
    for sub in ("dashboard", "exempt", "limits", "reload", "users", "usage", "events", "images", "doctor",
                "base-image"):
        assert sub in r.stdout, sub
    assert "GPUs" in ok(lab.run("adm", "ds01", "admin", "dashboard", "--no-stats")).stdout
    ok(lab.run("adm", "ds01", "admin-dashboard", "--no-stats"))  # the old spelling
    ok(lab.run("adm", "ds01", "admin", "exempt", "--list"))
    ok(lab.run("adm", "ds01", "admin-exempt", "--list"))
    users = json.loads(ok(lab.run("adm", "ds01", "admin", "users", "--json")).stdout)
    bob = next(u for u in users if u["user"] == USERS["bob"])
    assert bob["overrides"] == ["max_gpus"] and bob["max_gpus"] == 2
    assert next(u for u in users if u["user"] == USERS["adm"])["admin"] is True
    ok(lab.run("adm", "ds01", "admin", "usage", "--json"))
    ok(lab.run("adm", "ds01", "admin", "events", "--since", "1h"))
    ok(lab.run("adm", "ds01", "admin", "images"))
    ok(lab.run("adm", "ds01", "admin", "limits", "show"))
    # the admin namespace is for admins: every subcommand that asks the daemon refuses a user
    for args in (["reload"], ["users"], ["limits", "show"], ["dashboard"], ["usage"]):
        r = lab.run("alice", "ds01", "admin", *args)
        assert r.returncode == 5, (args, r)


def test_usage_all_users_and_events_filters_for_admins(lab):
    ok(lab.run("adm", "ds01", "usage", "--all-users", "--json"))
    r = lab.run("alice", "ds01", "usage", "--all-users")
    assert r.returncode == 5 and "admins" in r.stderr
    # events by user and action; container.exec hidden unless --all (or asked for by name)
    p = next(pr for u, pr in lab.used if u == "bob")
    ok(lab.run("bob", "container-run", p, "--", "true"))
    mine = events(lab, "--user", USERS["bob"])
    assert mine and all(e["user"] == USERS["bob"] for e in mine)
    assert not any(e["action"] == "container.exec" for e in mine)
    assert any(e["action"] == "container.exec" for e in events(lab, "--user", USERS["bob"], "--all"))
    execs = events(lab, "--user", USERS["bob"], "--action", "container.exec")
    assert execs and all(e["action"] == "container.exec" for e in execs)
    assert all(e["action"] == "config.limits" for e in events(lab, "--action", "config.limits"))


def test_reload_restarts_the_observability_listeners(lab):
    import urllib.request

    from .harness import free_port

    port = free_port()
    path = lab.root / "etc/ds01/config.yaml"
    good = path.read_text()
    try:
        data = yaml.safe_load(good)
        data["observability"]["metrics"]["listen"] = f"127.0.0.1:{port}"
        path.write_text(HEADER + yaml.safe_dump(data, sort_keys=False))
        out = json.loads(ok(lab.run("adm", "ds01", "admin", "reload", "--json")).stdout)
        assert "observability.metrics.listen" in out["changed"] and out["restart_required"] == []
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "ds01" in body
    finally:
        path.write_text(good)
    ok(lab.run("adm", "ds01", "admin", "reload"))
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_limits_of_a_group_and_the_defaults(lab):
    r = ok(lab.run("adm", "ds01", "admin", "limits", "set", "--group", "students", "idle_timeout=1h", "cpus=2"))
    assert "group:students" in r.stdout
    lim = limits(lab, "carol")
    assert lim["group"] == "students" and lim["limits"]["idle_timeout"] == 3600 and lim["limits"]["cpus"] == 2
    show = json.loads(ok(lab.run("adm", "ds01", "admin", "limits", "show", "--group", "students", "--json")).stdout)
    assert show["set"] == {"idle_timeout": 3600, "cpus": 2} and show["members"] == [USERS["carol"]]
    ok(lab.run("adm", "ds01", "admin", "limits", "unset", "--group", "students", "cpus"))
    assert limits(lab, "carol")["limits"]["cpus"] != 2
    r = lab.run("adm", "ds01", "admin", "limits", "set", "--group", "nosuch", "cpus=2")
    assert r.returncode == 4 and "no limits group" in r.stderr
    ok(lab.run("adm", "ds01", "admin", "limits", "set", "--defaults", "max_containers=4"))
    assert limits(lab, "alice")["limits"]["max_containers"] == 4
    r = ok(lab.run("adm", "ds01", "admin", "limits", "show"))
    assert "students" in r.stdout and USERS["bob"] in r.stdout
    assert ok(lab.run("adm", "ds01", "admin", "limits", "set", "--defaults", "max_containers=3"))
