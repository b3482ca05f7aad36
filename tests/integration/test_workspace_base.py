"""An admin-configured ``containers.workspace_base``: the CLI writes projects where the daemon
builds from and mounts (it asks the daemon), end to end: project-init → project-launch → run."""

from __future__ import annotations

import json
import pwd
import secrets
import shutil
from pathlib import Path

import pytest

from .harness import TEST_IMAGE, USERS, new_daemon, ok, unique_project, write_as

DOCKERFILE = f"FROM {TEST_IMAGE}\nCOPY requirements.txt /opt/ds01/requirements.txt\nWORKDIR /workspace\n"


def home(user: str) -> Path:
    return Path(pwd.getpwnam(USERS[user]).pw_dir)


@pytest.fixture(scope="module")
def lab(docker_client):
    """A daemon whose workspaces are ``~/lab-<tag>/<user>/<project>``, not ``~/workspace``."""
    d = new_daemon()
    folder = f"lab-{secrets.token_hex(3)}"
    d.start(extra={"containers": {"workspace_base": "{home}/" + folder + "/{user}"}})
    yield d, folder
    for user in ("alice", "bob"):
        shutil.rmtree(home(user) / folder, ignore_errors=True)
    d.destroy(docker_client)


def test_the_daemon_tells_its_workspace_base(lab):
    d, folder = lab
    me = json.loads(ok(d.run("alice", "ds01", "whoami", "--json")).stdout)
    assert me["workspace_base"] == "{home}/" + folder + "/{user}"


def test_init_launch_and_run_use_the_daemons_workspace_base(lab, docker_client):
    d, folder = lab
    p = unique_project("wsb")
    ws = home("alice") / folder / USERS["alice"] / p
    default_ws = home("alice") / "workspace" / p
    try:
        r = ok(d.run("alice", "project-init", p, "--yes", "--type", "blank", "--no-git", "--json"))
        assert json.loads(r.stdout)["path"] == str(ws)
        assert (ws / "requirements.txt").is_file() and (ws / "README.md").is_file()
        assert not default_ws.exists()
        write_as("alice", ws / "Dockerfile", DOCKERFILE)
        write_as("alice", ws / "requirements.txt", "# nothing\n")
        write_as("alice", ws / "marker.txt", "from the lab base\n")

        # the daemon builds from (and mounts) the same folder
        out = json.loads(ok(d.run("alice", "project-launch", p, "--background", "--json")).stdout)
        assert out["status"] == "running" and out["workspace"] == str(ws)
        r = ok(d.run("alice", "container-run", p, "--", "cat", "/workspace/marker.txt"))
        assert r.stdout == "from the lab base\n"
        r = ok(d.run("alice", "container-run", p, "--", "sh", "-c", "echo made-inside > /workspace/out.txt"))
        assert (ws / "out.txt").read_text() == "made-inside\n"
        assert (ws / "out.txt").stat().st_uid == pwd.getpwnam(USERS["alice"]).pw_uid

        # unchanged: the fast path finds the stamp for this workspace and reuses the container
        r = ok(d.run("alice", "project-launch", p, "--background"))
        assert "up to date" in r.stdout and "reusing" in r.stdout and "building" not in r.stdout

        # the offline-capable helpers use the same base while the daemon answers
        ok(d.run("alice", "dir-create", p + "-x", "--type", "blank"))
        assert (ws.parent / (p + "-x") / ".gitignore").is_file()
        assert not (home("alice") / "workspace" / (p + "-x")).exists()
        assert not default_ws.exists()
    finally:
        d.run("alice", "container-retire", p)
        d.run("alice", "image-delete", p, "--force", "--yes")
