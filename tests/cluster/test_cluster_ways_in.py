"""Cluster mode, the daily path (issue 18): project-init → project-launch (the image built on the
head, the container placed by Slurm) → container-run, and real OpenSSH through
``ProxyCommand container-ssh`` into the container on its node, with the job's GPU."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.cluster import slurmlab
from tests.integration.harness import ok, unique_project
from tests.integration.test_ssh import Keys, home

pytestmark = pytest.mark.usefixtures("cluster")


@pytest.fixture(scope="module")
def launched(cluster, base_image):
    p = unique_project("cl")
    assert base_image  # the lab's base (with sshd), FROM which the project's image is built
    ok(cluster.head.run("alice", "project-init", p, "--yes", "--no-git", "--type", "blank", timeout=300))
    ok(cluster.head.run("alice", "project-launch", p, "--gpus", "1", "--background", timeout=900))
    yield p
    cluster.head.run("alice", "container-retire", p, "--yes", timeout=60)
    cluster.head.run("alice", "image-delete", p, "--force", "--yes", timeout=120)
    shutil.rmtree(Path(home("alice")) / "workspace" / p, ignore_errors=True)


def _idx_of(cluster, project: str) -> tuple[str, str]:
    rows = json.loads(ok(cluster.head.run("alice", "container-list", "--json")).stdout)
    row = next(r for r in rows if r["project"] == project)
    job = next(j["id"] for j in slurmlab.squeue("ds01-alice") if j["name"].endswith(project))
    text = slurmlab.job(job)
    return row["node"], re.search(r"GRES=gpu[^ ]*\(IDX:([0-9,-]+)\)", text).group(1)


def test_project_launch_builds_on_the_head_and_runs_on_a_node(cluster, launched):
    node, idx = _idx_of(cluster, launched)
    assert node in slurmlab.NODES
    r = ok(cluster.head.run("alice", "container-run", launched, "--", "sh", "-c",
                            "echo $NVIDIA_VISIBLE_DEVICES; pwd; python3 -c 'print(42)'"))
    assert r.stdout.split() == [idx, "/workspace", "42"], r.stdout


def test_openssh_reaches_the_container_on_its_node(cluster, launched):
    keys = Keys(cluster.head)
    try:
        _, idx = _idx_of(cluster, launched)
        r = keys.ssh(f"{launched}.ds01", "echo visible=$NVIDIA_VISIBLE_DEVICES; cat /etc/hostname; id -un")
        assert r.returncode == 0, r
        assert f"visible={idx}" in r.stdout and "ds01-alice" in r.stdout, r.stdout
    finally:
        keys.restore()
