"""L2 container lifecycle against the real engine, as real users through the real daemon."""

from __future__ import annotations

import grp
import json
import os
import pwd
import subprocess

import pytest

from ds01.services.workspace import is_pinned

from .harness import ok, unique_project, USERS


def test_no_test_user_is_in_the_docker_group(docker_client):
    try:
        members = set(grp.getgrnam("docker").gr_mem)
    except KeyError:
        members = set()
    for name in USERS.values():
        assert name not in members
        gids = os.getgrouplist(name, pwd.getpwnam(name).pw_gid)
        assert all(grp.getgrgid(g).gr_name != "docker" for g in gids)


def test_alice_full_lifecycle(daemon, docker_client, projects):
    p = unique_project("life")
    projects.append(("alice", p))
    out = json.loads(ok(daemon.run("alice", "container-create", p, "--json")).stdout)
    assert out["status"] == "created" and out["user"] == USERS["alice"]
    c = docker_client.containers.get(out["name"])
    assert c.status == "created"
    hc, cfg = c.attrs["HostConfig"], c.attrs["Config"]
    alice = pwd.getpwnam(USERS["alice"])
    assert cfg["User"] == f"{alice.pw_uid}:{alice.pw_gid}"
    assert hc["CapDrop"] == ["ALL"] and not hc.get("CapAdd")
    assert any("no-new-privileges" in o for o in hc["SecurityOpt"])
    assert hc["Privileged"] is False and hc["NetworkMode"] not in ("host",) and hc["PidMode"] == ""
    assert hc["Memory"] > 0 and hc["NanoCpus"] > 0 and hc["PidsLimit"] > 0 and hc["ShmSize"] > 0
    assert hc["Runtime"] == "nvidia"
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert cfg["Labels"]["ds01.uid"] == str(alice.pw_uid) and cfg["Labels"]["ds01.project"] == p
    # the bind source is a root-owned pin of the checked workspace, not a path the user controls
    binds = {b.split(":")[1]: b.split(":") for b in hc["Binds"]}
    assert set(binds) == {"/workspace", "/etc/passwd", "/etc/group"}  # nothing else from the host
    assert binds["/etc/passwd"][2] == "ro" and binds["/etc/group"][2] == "ro"
    source, target, mode = binds["/workspace"]
    assert mode == "rw"
    assert list(hc["Tmpfs"]) == [f"/home/{USERS['alice']}"]
    # ... pinned only while the engine starts the container: never a standing host path into it
    assert source == str(daemon.root / "var/lib/ds01/mounts" / out["name"]) and not is_pinned(source)

    ok(daemon.run("alice", "container-start", p))
    assert not is_pinned(source) and os.listdir(source) == []
    r = ok(daemon.run("alice", "container-run", p, "--", "sh", "-c",
                      "whoami; echo $HOME; touch $HOME/x && echo home-ok; pwd; echo data > /workspace/made-in-container"))
    lines = r.stdout.split()
    assert lines[0] == USERS["alice"]
    assert lines[1] == f"/home/{USERS['alice']}" and "home-ok" in lines and "/workspace" in lines
    made = os.path.join(alice.pw_dir, "workspace", p, "made-in-container")
    st = os.stat(made)
    assert (st.st_uid, st.st_gid) == (alice.pw_uid, alice.pw_gid)

    # exit code propagates, stderr stays stderr
    r = daemon.run("alice", "container-run", p, "--", "sh", "-c", "echo oops >&2; exit 7")
    assert r.returncode == 7 and "oops" in r.stderr and "oops" not in r.stdout
    # stdin reaches the process
    r = ok(daemon.run("alice", "container-run", p, input="echo from-stdin\n"))
    assert "from-stdin" in r.stdout

    listed = json.loads(ok(daemon.run("alice", "container-list", "--json")).stdout)
    assert [x["project"] for x in listed] == [p] and listed[0]["status"] == "running"
    stats = json.loads(ok(daemon.run("alice", "container-stats", "--json")).stdout)
    assert stats[0]["project"] == p and stats[0]["pids"] >= 1 and stats[0]["memory_limit"] > 0

    ok(daemon.run("alice", "container-stop", p, "--timeout", "1"))
    docker_client.containers.get(out["name"]).reload()
    assert docker_client.containers.get(out["name"]).status == "exited"
    assert json.loads(ok(daemon.run("alice", "container-list", "--json")).stdout) == []
    assert len(json.loads(ok(daemon.run("alice", "container-list", "--all", "--json")).stdout)) == 1
    ok(daemon.run("alice", "container-remove", p))
    assert not [c for c in daemon.containers(docker_client) if c.name == out["name"]]
    assert not os.path.exists(source)  # the pin is gone with the container
    # the workspace survives removal, byte for byte
    with open(made) as f:
        assert f.read() == "data\n"


def test_bob_cannot_touch_alices_container(daemon, docker_client, projects):
    p = unique_project("priv")
    projects.append(("alice", p))
    out = json.loads(ok(daemon.run("alice", "container-create", p, "--json")).stdout)
    ok(daemon.run("alice", "container-start", p))
    cid = docker_client.containers.get(out["name"]).id
    missing = daemon.run("bob", "container-start", "t-does-not-exist")
    for ref in (p, out["name"], cid[:12], cid):
        for verb, extra in (("container-start", []), ("container-stop", []), ("container-remove", ["--force"]),
                            ("container-run", ["--", "true"]), ("container-attach", [])):
            r = daemon.run("bob", verb, ref, *extra)
            assert r.returncode == 4, (verb, ref, r.stdout, r.stderr)
            # the refusal reveals nothing: same text as for a container that does not exist
            assert r.stderr.replace(ref, "X") == missing.stderr.replace("t-does-not-exist", "X")
            assert USERS["alice"] not in r.stderr + r.stdout
    listing = ok(daemon.run("bob", "container-list", "--all", "--json"))
    assert p not in listing.stdout
    # bob cannot reach it through --user or --all-users either
    r = daemon.run("bob", "container-stop", p, "--user", USERS["alice"])
    assert r.returncode == 5 and "admin" in r.stderr
    r = daemon.run("bob", "container-list", "--all-users")
    assert r.returncode == 5
    # every denial is audited, reads included
    with open(daemon.root / "var/log/ds01/events.jsonl") as f:
        evs = [json.loads(line) for line in f]
    mine = [e for e in evs if e["user"] == USERS["bob"] and e["result"] == "denied"]
    assert {"api.post", "api.get"} <= {e["action"] for e in mine}
    assert docker_client.containers.get(out["name"]).status == "running"
    ok(daemon.run("alice", "container-remove", p, "--force"))


def test_admin_acts_for_a_user(daemon, docker_client, projects):
    p = unique_project("adm")
    projects.append(("alice", p))
    ok(daemon.run("adm", "container-create", p, "--user", USERS["alice"]))
    rows = json.loads(ok(daemon.run("adm", "container-list", "--all-users", "--all", "--json")).stdout)
    mine = [r for r in rows if r["project"] == p]
    assert mine and mine[0]["user"] == USERS["alice"]
    # it is alice's container: she sees it and her workspace exists, owned by her
    assert p in ok(daemon.run("alice", "container-list", "--all")).stdout
    st = os.stat(os.path.join(pwd.getpwnam(USERS["alice"]).pw_dir, "workspace", p))
    assert st.st_uid == pwd.getpwnam(USERS["alice"]).pw_uid
    ok(daemon.run("adm", "container-remove", p, "--user", USERS["alice"]))


@pytest.mark.parametrize("name", ["../x", "/etc", "..", "a" * 64, "Upper", "a/b", "-lead", ".hidden", "x..y"])
def test_bad_project_names_are_refused_and_change_nothing(daemon, docker_client, name):
    ws = os.path.join(pwd.getpwnam(USERS["alice"]).pw_dir, "workspace")
    # every path the name could have reached (other tests may add unrelated workspaces meanwhile)
    reachable = {os.path.normpath(os.path.join(ws, name)), os.path.join(ws, os.path.basename(name) or "_")}
    existed = {p: os.path.lexists(p) for p in reachable}
    before = {c.id for c in daemon.containers(docker_client)}
    r = daemon.run("alice", "container-create", "--", name)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "invalid project name" in r.stderr and "hint:" in r.stderr
    assert "Traceback" not in r.stderr
    assert {c.id for c in daemon.containers(docker_client)} == before
    assert {p: os.path.lexists(p) for p in reachable} == existed


def test_empty_project_name_via_api(daemon):
    status, body = daemon.api("alice", "POST", "/v1/containers", json.dumps({"project": ""}))
    assert status == 400 and body["error"]["code"] == "invalid_input"


def test_workspace_symlink_leaving_home_is_refused(daemon, docker_client, projects):
    p = unique_project("link")
    alice = pwd.getpwnam(USERS["alice"])
    ws = os.path.join(alice.pw_dir, "workspace")
    os.makedirs(ws, exist_ok=True)
    os.chown(ws, alice.pw_uid, alice.pw_gid)
    link = os.path.join(ws, p)
    os.symlink("/etc", link)
    try:
        before = {c.id for c in daemon.containers(docker_client)}
        r = daemon.run("alice", "container-create", p)
        assert r.returncode == 5 and "outside" in r.stderr, r.stderr
        assert {c.id for c in daemon.containers(docker_client)} == before
    finally:
        os.unlink(link)


def test_workspace_swapped_for_a_symlink_after_create_is_not_mounted(daemon, docker_client, projects):
    """Docker follows a bind source's symlinks as root at start: the daemon must not let a user
    redirect their workspace to a directory they cannot reach themselves."""
    p = unique_project("swap")
    projects.append(("alice", p))
    alice = pwd.getpwnam(USERS["alice"])
    ok(daemon.run("alice", "container-create", p))
    secret_dir = daemon.root / "private" / "sub"  # reachable by root only: parent is 0700
    secret_dir.mkdir(parents=True)
    os.chmod(secret_dir.parent, 0o700)
    os.chmod(secret_dir, 0o755)
    (secret_dir / "secret").write_text("ROOT-PRIVATE\n")
    ws = os.path.join(alice.pw_dir, "workspace", p)
    subprocess.run(["runuser", "-u", USERS["alice"], "--", "sh", "-c",
                    f'mv "{ws}" "{ws}.moved" && ln -s "{secret_dir}" "{ws}"'], check=True)
    try:
        r = daemon.run("alice", "container-start", p)
        # refused either way: alice cannot even look there, and it is outside her home
        assert r.returncode == 5 and ("outside" in r.stderr or "Permission denied" in r.stderr), r.stderr
        r = daemon.run("alice", "container-run", p, "--", "cat", "/workspace/secret")
        assert "ROOT-PRIVATE" not in r.stdout
    finally:
        os.unlink(ws)
        os.rename(ws + ".moved", ws)
    r = ok(daemon.run("alice", "container-run", p, "--", "ls", "/workspace"))  # the real workspace again
    assert "secret" not in r.stdout


@pytest.mark.parametrize("body,expect", [
    ('{"project": "x", "privileged": true}', "privileged"),
    ('{"project": "x", "volumes": ["/:/host"]}', "volumes"),
    ('{"project": "x", "network_mode": "host"}', "network_mode"),
    ('{"project": "x", "labels": {"ds01.uid": "0"}}', "labels"),
    ('{"project": "x", "cap_add": ["SYS_ADMIN"]}', "cap_add"),
    ('{"project": "x", "devices": ["/dev/sda"]}', "devices"),
    ('{"project": "x"', "not valid JSON"),
    ('["x"]', "JSON object"),
])
def test_api_refuses_malformed_and_dangerous_bodies(daemon, docker_client, body, expect):
    before = {c.id for c in daemon.containers(docker_client)}
    status, out = daemon.api("alice", "POST", "/v1/containers", body, {"Content-Type": "application/json"})
    assert status == 400, out
    assert out["error"]["code"] == "invalid_input" and expect in out["error"]["message"]
    assert {c.id for c in daemon.containers(docker_client)} == before


def test_api_refuses_oversized_body(daemon):
    big = json.dumps({"project": "x", "image": "y" * (2 * 1024 * 1024)})
    status, out = daemon.api("alice", "POST", "/v1/containers", big, {"Content-Type": "application/json"})
    assert status in (400, 413)
    if status == 400:
        assert "larger than" in out["error"]["message"]


def test_identity_comes_from_the_kernel_not_the_request(daemon):
    status, me = daemon.api("bob", "GET", "/v1/whoami", headers={"X-User": USERS["alice"]})
    assert status == 200 and me["user"] == USERS["bob"] and me["admin"] is False
    status, me = daemon.api("adm", "GET", "/v1/whoami")
    assert me["admin"] is True


def test_image_not_allowed_is_a_policy_denial(daemon, docker_client):
    before = {c.id for c in daemon.containers(docker_client)}
    r = daemon.run("alice", "container-create", unique_project("img"), "--image", "evil.example/root:latest")
    assert r.returncode == 6 and "not from an allowed registry" in r.stderr and "ds01/" in r.stderr
    assert {c.id for c in daemon.containers(docker_client)} == before


def test_duplicate_create_is_a_conflict(daemon, docker_client, projects):
    p = unique_project("dup")
    projects.append(("alice", p))
    ok(daemon.run("alice", "container-create", p))
    r = daemon.run("alice", "container-create", p)
    assert r.returncode == 7 and "already has a container" in r.stderr
    ok(daemon.run("alice", "container-remove", p))


def test_umbrella_and_noun_verb_forms(daemon, projects):
    p = unique_project("umb")
    projects.append(("alice", p))
    ok(daemon.run("alice", "ds01", "container", "create", p))
    assert p in ok(daemon.run("alice", "ds01", "container-list", "--all")).stdout
    ok(daemon.run("alice", "ds01", "container", "remove", p))
    r = daemon.run("alice", "ds01", "contianer-list")
    assert r.returncode == 2 and "container-list" in r.stderr


def test_daemon_unreachable_is_a_clear_error(daemon):
    r = daemon.run("alice", "container-list", env={"DS01_SOCKET": "/nonexistent/ds01.sock"})
    assert r.returncode == 9 and "cannot reach the DS01 daemon" in r.stderr and "Traceback" not in r.stderr
