"""Image names are injective: no user can build into, or move the tag of, another user's image."""

from __future__ import annotations

import pwd
import subprocess

from tests.integration.harness import USERS, ok, unique_project, write_as

TEST_BASE = "ds01-test/busybox:latest"
LOOKALIKE = USERS["alice"] + "-"  # the old lossy mapping sent 'ds01-alice-' to alice's namespace


def _user(name: str) -> str:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True)
    return name


def test_a_lookalike_user_name_builds_into_its_own_namespace(daemon, docker_client, projects):
    evil = _user(LOOKALIKE)
    p = unique_project("ns")
    projects.append(("alice", p))
    write_as("alice", f"{pwd.getpwnam(USERS['alice']).pw_dir}/workspace/{p}/Dockerfile",
             f"FROM {TEST_BASE}\nRUN echo alice > /who\n")
    ok(daemon.run("alice", "image-create", p, timeout=300))
    alices = docker_client.images.get(f"ds01/{USERS['alice']}/{p}:latest")
    home = pwd.getpwnam(evil).pw_dir
    try:
        write_as(evil, f"{home}/workspace/{p}/Dockerfile", f"FROM {TEST_BASE}\nRUN echo evil > /who\n")
        ok(daemon.run(evil, "image-create", p, timeout=300))
        # alice's tag still names alice's image; the look-alike's went to its uid namespace
        assert docker_client.images.get(f"ds01/{USERS['alice']}/{p}:latest").id == alices.id
        uid = pwd.getpwnam(evil).pw_uid
        theirs = docker_client.images.get(f"ds01/u.{uid}/{p}:latest")
        assert theirs.id != alices.id and theirs.labels.get("ds01.uid") == str(uid)
        rows = ok(daemon.run(evil, "image-list", "--json")).stdout
        assert f"u.{uid}" in rows and f"ds01/{USERS['alice']}/" not in rows
    finally:
        daemon.run(evil, "image-delete", p, "--force", "--yes")
        daemon.run("alice", "image-delete", p, "--force", "--yes")
        subprocess.run(["rm", "-rf", f"{home}/workspace/{p}"])
