"""Private by default: new workspaces are their owner's alone, the daemon's own directories and
files are fixed at each start, and the status page answers only its own Host and hides names."""

from __future__ import annotations

import grp
import http.client
import json
import os
import pwd
import shutil
import stat
import subprocess
import time
import urllib.request

import pytest

from tests.integration.harness import USERS, free_port, new_daemon, ok, unique_project

SHARE_GROUP = "ds01-share"


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def home(user: str) -> str:
    return pwd.getpwnam(USERS[user]).pw_dir


def readable_by(user: str, path: str) -> bool:
    return subprocess.run(["runuser", "-u", USERS[user], "--", "ls", path], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def d(docker_client):
    d = new_daemon()
    d.web_port = free_port()
    d.config["observability"] = {"metrics": {"listen": ""}, "web": {"listen": f"127.0.0.1:{d.web_port}"}}
    d.start()
    d.used = []
    yield d
    d.destroy(docker_client)
    for user, project in d.used:
        shutil.rmtree(os.path.join(home(user), "workspace", project), ignore_errors=True)


def page(d, path: str = "/status.json", host: str | None = None) -> tuple[int, str]:
    c = http.client.HTTPConnection("127.0.0.1", d.web_port, timeout=10)
    c.putrequest("GET", path, skip_host=True)
    c.putheader("Host", host or f"127.0.0.1:{d.web_port}")
    c.endheaders()
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    return r.status, body


def wait_page(d) -> None:
    deadline = time.time() + 15
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{d.web_port}/healthz", timeout=2).read()
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def test_a_workspace_the_daemon_creates_is_not_readable_by_other_users(d):
    p = unique_project("priv")
    d.used.append(("alice", p))
    ok(d.run("alice", "container-create", p))
    ws = os.path.join(home("alice"), "workspace", p)
    assert mode(ws) & 0o077 == 0, oct(mode(ws))
    assert os.stat(ws).st_uid == pwd.getpwnam(USERS["alice"]).pw_uid
    assert not readable_by("bob", ws)
    ok(d.run("alice", "container-remove", p, "--force"))


def test_a_workspace_the_cli_creates_is_not_readable_by_other_users(d):
    p = unique_project("priv")
    d.used.append(("alice", p))
    ok(d.run("alice", "dir-create", p))
    ws = os.path.join(home("alice"), "workspace", p)
    assert mode(ws) & 0o077 == 0, oct(mode(ws))
    assert not readable_by("bob", ws)


def test_with_a_sharing_group_new_workspaces_are_shared_with_that_group_only(d):
    try:
        grp.getgrnam(SHARE_GROUP)
    except KeyError:
        subprocess.run(["groupadd", SHARE_GROUP], check=True)
    subprocess.run(["usermod", "-aG", SHARE_GROUP, USERS["alice"]], check=True)
    subprocess.run(["usermod", "-aG", SHARE_GROUP, USERS["carol"]], check=True)
    d.restart({"containers": {"workspace_group": SHARE_GROUP}})
    try:
        made = []
        for verb in ("container-create", "dir-create"):
            p = unique_project("share")
            d.used.append(("alice", p))
            ok(d.run("alice", verb, p))
            made.append(os.path.join(home("alice"), "workspace", p))
        for ws in made:
            assert mode(ws) == 0o750 and os.stat(ws).st_gid == grp.getgrnam(SHARE_GROUP).gr_gid, (ws, oct(mode(ws)))
            assert not readable_by("bob", ws)
        ok(d.run("alice", "container-remove", os.path.basename(made[0]), "--force"))
    finally:
        d.restart()


def test_the_log_dir_is_not_world_readable_after_a_start_over_a_0755_one(d):
    d.stop()
    log_dir, state_dir = d.root / "var/log/ds01", d.root / "var/lib/ds01"
    events = log_dir / "events.jsonl"
    os.chmod(log_dir, 0o755)  # what scripts/setup.sh used to make
    os.chmod(events, 0o644)
    os.chmod(state_dir, 0o755)
    d.start()
    assert mode(log_dir) & 0o007 == 0, oct(mode(log_dir))
    assert mode(events) & 0o077 == 0, oct(mode(events))
    assert mode(state_dir) & 0o077 == 0, oct(mode(state_dir))
    assert not readable_by("bob", str(events))
    assert "fixed the owner/mode of" in d.log_tail(200)


def test_the_status_page_refuses_a_foreign_host_header(d):
    wait_page(d)
    assert page(d)[0] == 200
    assert page(d, host=f"localhost:{d.web_port}")[0] == 200
    status, body = page(d, host=f"attacker.example:{d.web_port}")  # a DNS-rebound name
    assert status == 421 and "devices" not in body
    assert page(d, "/", host="attacker.example")[0] == 421


def test_the_status_page_hides_user_names_unless_the_admin_enables_them(d):
    p = unique_project("names")
    d.used.append(("alice", p))
    ok(d.run("alice", "container-create", p, "--gpus", "1"))
    try:
        wait_page(d)
        time.sleep(1.1)  # the page caches its data for a second
        status, body = page(d)
        assert status == 200
        data = json.loads(body)
        assert any(dev["holder"] for dev in data["gpus"]["devices"])  # someone holds a GPU ...
        assert USERS["alice"] not in body and p not in body  # ... but not who, nor which project
        assert USERS["alice"] not in page(d, "/")[1]
    finally:
        ok(d.run("alice", "container-remove", p, "--force"))


def test_user_setup_makes_an_existing_open_workspace_private(d):
    ws = os.path.join(home("carol"), "workspace")
    if not os.path.isdir(ws):
        subprocess.run(["runuser", "-u", USERS["carol"], "--", "mkdir", ws], check=True)
    os.chmod(ws, 0o755)
    shown = ok(d.run("carol", "user-setup")).stdout  # no terminal, no --yes: said, not done
    assert "readable by other users" in shown and "chmod 700 ~/workspace" in shown and mode(ws) == 0o755
    r = ok(d.run("carol", "user-setup", "--yes"))
    assert "✓ workspace" in r.stdout and mode(ws) == 0o700, r.stdout
