"""Issue 12 against the real daemon and engine, as real users: frameworks on every host, a
rebuilt image replaces the container (asked, --yes, or said), local files and the admin's
wheelhouse in requirements, the tools of DS01-made images, and refused creates.

The tiny busybox project builds in a second without a network; the requirements tests use the
bootstrapped base (``base_image``) and, for the tools the cached base may lack, Debian's mirror.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import pexpect
import pytest

from .harness import USERS, free_port, ok, unique_project, write_as
from .test_workflows import clean, home, spawn, tiny_project, ws  # noqa: F401 (fixtures)


def _image(project: str) -> str:
    return f"ds01/{USERS['alice']}/{project}:latest"


def _container(daemon, docker_client, project: str):
    cs = [c for c in daemon.containers(docker_client) if c.labels.get("ds01.project") == project]
    assert len(cs) == 1, cs
    return cs[0]


def _wheel(name: str, module: str, text: str) -> bytes:
    """A minimal pure-Python wheel (pip accepts an empty hash column in RECORD)."""
    dist = f"{name}-1.0.dist-info"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(f"{module}.py", text)
        z.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        z.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: ds01-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}/RECORD", f"{module}.py,,\n{dist}/METADATA,,\n{dist}/WHEEL,,\n{dist}/RECORD,,\n")
    return buf.getvalue()


def _put_wheel(user: str, path: Path, data: bytes) -> None:
    import subprocess

    subprocess.run(["runuser", "-u", USERS[user], "--", "sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"',
                    "sh", str(path)], input=data, check=True)


# --------------------------------------------------------------------------- item 7


def test_one_driver_source_and_pytorch_on_this_host(daemon, projects):
    gpus = json.loads(ok(daemon.run("alice", "ds01", "gpus", "--json")).stdout)
    cat = json.loads(ok(daemon.run("alice", "image-list", "--catalog", "--json")).stdout)
    drv = gpus.get("driver_version") or gpus.get("inventory", {}).get("driver_version")
    assert cat["driver_version"] == drv == "550.54.15"
    p = unique_project("torch")
    projects.append(("alice", p))
    r = ok(daemon.run("alice", "project-init", p, "--framework", "pytorch", "--yes", "--no-git", "--type", "blank"))
    assert "FROM pytorch/pytorch:2.8.0-cuda12.9-cudnn9-runtime" in (ws("alice", p) / "Dockerfile").read_text(), r.stdout


@pytest.fixture
def cpu_host(daemon):
    """The daemon on a host without any GPU (gpu.inventory: none), restored afterwards."""
    daemon.restart({"gpu": {"inventory": "none"}})
    yield daemon
    daemon.restart()


def test_cpu_only_host_gets_cpu_builds_and_marks_cuda_images(cpu_host, projects):
    daemon = cpu_host
    p = unique_project("cpu")
    projects.append(("alice", p))
    r = ok(daemon.run("alice", "project-init", p, "--framework", "pytorch", "--yes", "--no-git", "--type", "blank"))
    text = (ws("alice", p) / "Dockerfile").read_text()
    assert "FROM ds01/base:latest" in text and "torch==2.8.0+cpu" in text, r.stdout
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text
    q = unique_project("cuda")
    projects.append(("alice", q))
    r = ok(daemon.run("alice", "project-init", q, "--framework", "pytorch==2.5", "--yes", "--no-git", "--type", "blank"))
    assert "FROM pytorch/pytorch:2.5.1-" in (ws("alice", q) / "Dockerfile").read_text()
    assert "CPU only" in r.stdout
    cat = json.loads(ok(daemon.run("alice", "image-list", "--catalog", "--framework", "jax", "--json")).stdout)
    assert cat["driver_version"] is None
    assert {e["fit"] for e in cat["entries"]} == {"cpu", "cpu-only-here"} and all(e["runnable"] for e in cat["entries"])


# --------------------------------------------------------------------------- item 3


def test_rebuilt_image_then_launch_without_tty_says_so_then_yes_replaces(daemon, docker_client, clean):
    p = tiny_project(daemon)
    clean.append(("alice", p))
    ok(daemon.run("alice", "project-launch", p, "--background"))
    first = _container(daemon, docker_client, p).image.id
    # a rebuild outside project-launch (the Dockerfile unchanged, so the stamp still matches)
    r = ok(daemon.run("alice", "image-update", p, "--no-cache"))
    assert f"next: project-launch {p} --yes" in r.stdout and "previous image" in r.stdout
    new = docker_client.images.get(_image(p)).id
    assert new != first
    for _ in range(2):  # no terminal: kept (exit 0) and said how to replace it, every time
        r = ok(daemon.run("alice", "project-launch", p, "--background"))
        assert "reusing your running container with the previous image" in r.stdout
        assert f"project-launch {p} --yes" in r.stdout
        assert _container(daemon, docker_client, p).image.id == first
    r = ok(daemon.run("alice", "project-launch", p, "--background", "--yes"))
    assert "retired the old container" in r.stdout
    assert _container(daemon, docker_client, p).image.id == new
    # and now the fast path reuses it again, without asking
    r = ok(daemon.run("alice", "project-launch", p, "--background"))
    assert "reusing" in r.stdout and "previous image" not in r.stdout


def test_rebuilt_image_then_launch_on_a_terminal_asks(daemon, docker_client, clean):
    p = tiny_project(daemon)
    clean.append(("alice", p))
    ok(daemon.run("alice", "project-launch", p, "--background"))
    write_as("alice", ws("alice", p) / "Dockerfile", (ws("alice", p) / "Dockerfile").read_text() + "ENV X=1\n")
    r = ok(daemon.run("alice", "image-create", p))
    assert f"next: project-launch {p} --yes" in r.stdout
    child = spawn(daemon, "alice", "project-launch", p, "--background")
    try:
        child.expect("replace it", timeout=120)
        child.send("y")
        child.expect("retired the old container")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
    assert _container(daemon, docker_client, p).image.id == docker_client.images.get(_image(p)).id


# --------------------------------------------------------------------------- item 9


def test_deploy_takes_cpu_only_and_refusals_leave_no_workspace(daemon, clean):
    p = tiny_project(daemon)
    clean.append(("alice", p))
    r = ok(daemon.run("alice", "container-deploy", p, "--cpu-only", "--background"))
    assert "is running" in r.stdout
    for verb in ("container-create", "container-deploy"):
        q = unique_project("refused")
        r = daemon.run("alice", verb, q, "--gpus", "5", "--background" if verb == "container-deploy" else "--json")
        assert r.returncode != 0
        assert not (ws("alice", q)).exists(), f"{verb} left {ws('alice', q)}"


# --------------------------------------------------------------------------- items 6 and 8


def test_local_wheel_in_requirements_builds_and_tools_are_there(daemon, base_image, clean):
    p = unique_project("whl")
    clean.append(("alice", p))
    ok(daemon.run("alice", "project-init", p, "--yes", "--no-git", "--type", "blank"))
    root = ws("alice", p)
    assert "wheels/" in (root / ".gitignore").read_text()
    # a missing file: exit 3 naming it, before any build
    write_as("alice", root / "requirements.txt", "./wheels/ds01demo-1.0-py3-none-any.whl\n")
    r = daemon.run("alice", "project-launch", p, "--background")
    assert r.returncode == 3 and "wheels/ds01demo-1.0-py3-none-any.whl" in r.stderr and "building" not in r.stdout
    _put_wheel("alice", root / "wheels/ds01demo-1.0-py3-none-any.whl", _wheel("ds01demo", "ds01demo", "X = 42\n"))
    _put_wheel("alice", root / "wheels/other-1.0-py3-none-any.whl", _wheel("other", "ds01other", "Y = 7\n"))
    r = ok(daemon.run("alice", "image-update", p, "--add", "./wheels/other-1.0-py3-none-any.whl", "--no-build"))
    assert "./wheels/other-1.0-py3-none-any.whl" in (root / "requirements.txt").read_text()
    assert "COPY wheels/other-1.0-py3-none-any.whl" in (root / "Dockerfile").read_text()
    ok(daemon.run("alice", "project-launch", p, "--background", timeout=900))
    r = ok(daemon.run("alice", "container-run", p, "--", "python3", "-c",
                      "import ds01demo, ds01other; print(ds01demo.X + ds01other.Y)"))
    assert "49" in r.stdout
    tools = "git --version && curl --version && ssh -V && less --version && vi --version && ps --version && command -v sshd"
    r = daemon.run("alice", "container-run", p, "--", "sh", "-c", tools)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture
def wheelhouse(daemon, tmp_path_factory):
    d = tmp_path_factory.mktemp("wheelhouse")
    os.chmod(d, 0o755)
    (d / "ds01house-1.0-py3-none-any.whl").write_bytes(_wheel("ds01house", "ds01house", "Z = 'from the house'\n"))
    daemon.restart({"build": {"wheelhouse": str(d), "wheelhouse_port": free_port()}})
    yield d
    daemon.restart()


def test_admin_wheelhouse_is_a_find_links_source(wheelhouse, daemon, base_image, clean):
    p = unique_project("house")
    clean.append(("alice", p))
    ok(daemon.run("alice", "project-init", p, "--yes", "--no-git", "--type", "blank"))
    write_as("alice", ws("alice", p) / "requirements.txt", "ds01house==1.0\n")  # on no index: only there
    ok(daemon.run("alice", "project-launch", p, "--background", timeout=900))
    r = ok(daemon.run("alice", "container-run", p, "--", "python3", "-c", "import ds01house; print(ds01house.Z)"))
    assert "from the house" in r.stdout
