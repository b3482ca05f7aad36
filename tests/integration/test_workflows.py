"""L3 orchestrators and L4 wizards against the real daemon and engine, as real users.

Most tests use a tiny project whose Dockerfile starts FROM the busybox test image (builds in a
second, no network); the new-user walk-through and --save-packages need python in the container
and use the bootstrapped base (``base_image``, shared with test_images).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pwd
import re
import subprocess
import tarfile
from pathlib import Path

import pexpect
import pytest

from .harness import BIN, ok, TEST_IMAGE, unique_project, USERS, write_as

BROKEN = "ds01-test/broken:latest"
TINY_DOCKERFILE = f"FROM {TEST_IMAGE}\nCOPY requirements.txt /opt/ds01/requirements.txt\nWORKDIR /workspace\n"


def home(user: str) -> str:
    return pwd.getpwnam(USERS[user]).pw_dir


def ws(user: str, project: str) -> Path:
    return Path(home(user)) / "workspace" / project


def tree_digest(root: Path) -> dict[str, str]:
    """Every file, folder and link under root: type, mode, owner and content hash."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_symlink():
                body = "link:" + os.readlink(p)
            elif p.is_file():
                body = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                body = "dir"
            out[rel] = f"{st.st_mode:o} {st.st_uid}:{st.st_gid} {body}"
    return out


def tiny_project(daemon, user: str = "alice", requirements: str = "# nothing yet\n") -> str:
    """project-init (blank layout, no git) and a Dockerfile FROM the busybox test image."""
    p = unique_project("wf")
    ok(daemon.run(user, "project-init", p, "--yes", "--type", "blank", "--no-git"))
    write_as(user, ws(user, p) / "Dockerfile", TINY_DOCKERFILE)
    write_as(user, ws(user, p) / "requirements.txt", requirements)
    return p


def cleanup(daemon, user: str, project: str) -> None:
    daemon.run(user, "container-retire", project, "--yes")  # JupyterLab may still run: kill it
    daemon.run(user, "image-delete", project, "--force", "--yes")


@pytest.fixture
def clean(daemon, projects):
    """Projects to retire, un-image and delete afterwards: ``clean.append((user, project))``."""
    used: list[tuple[str, str]] = []
    yield used
    for user, p in used:
        cleanup(daemon, user, p)
        projects.append((user, p))


@pytest.fixture(scope="session")
def broken_image(docker_client):
    """An image whose /workspace is a file: create succeeds, but the engine refuses to start it
    (the workspace folder cannot be mounted on a file). It has no /bin/sleep either."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        ti = tarfile.TarInfo("etc")
        ti.type, ti.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(ti)
        data = b"not a folder\n"
        ti = tarfile.TarInfo("workspace")
        ti.size, ti.mode = len(data), 0o644
        tar.addfile(ti, io.BytesIO(data))
    docker_client.api.import_image_from_data(buf.getvalue(), repository="ds01-test/broken", tag="latest")
    return BROKEN


# --------------------------------------------------------------------------- user-setup


def test_user_setup_yes_is_idempotent_and_sets_git_from_flags(daemon):
    gitconfig = Path(home("carol")) / ".gitconfig"
    keys = Path(home("carol")) / ".ssh" / "authorized_keys"
    had_gitconfig = gitconfig.exists()
    saved = gitconfig.read_bytes() if had_gitconfig else None
    try:
        if had_gitconfig:
            gitconfig.unlink()
        r = ok(daemon.run("carol", "user-setup", "--yes"))
        assert "✓ workspace" in r.stdout and "✓ daemon" in r.stdout, r.stdout
        assert "✗ git" in r.stdout and "--git-name" in r.stdout
        assert (Path(home("carol")) / "workspace").is_dir()
        if not keys.exists():
            assert "✗ ssh key" in r.stdout and "ssh-keygen -t ed25519" in r.stdout and "ssh-copy-id" in r.stdout
        r = ok(daemon.run("carol", "user-setup", "--yes", "--git-name", "Carol Test", "--git-email", "carol@example.org"))
        assert "✓ git" in r.stdout and "Carol Test <carol@example.org> (set)" in r.stdout
        r = ok(daemon.run("carol", "user-setup", "--yes"))
        assert "Carol Test <carol@example.org> (ok)" in r.stdout
        assert not any(p.name.startswith("id_") for p in (Path(home("carol")) / ".ssh").glob("*")) \
            if (Path(home("carol")) / ".ssh").exists() else True
    finally:
        if saved is None:
            gitconfig.unlink(missing_ok=True)
        else:
            gitconfig.write_bytes(saved)


def test_user_setup_reports_an_unreachable_daemon(daemon):
    r = daemon.run("carol", "user-setup", "--yes", env={"DS01_ROOT": "/nonexistent"})
    assert r.returncode == 0 and "✗ daemon" in r.stdout and "fix:" in r.stdout


# --------------------------------------------------------------------------- project-init


def test_project_init_yes_creates_layout_dockerfile_readme_and_git(daemon, projects):
    p = unique_project("init")
    projects.append(("alice", p))
    r = ok(daemon.run("alice", "project-init", p, "--yes"))
    root = ws("alice", p)
    for rel in ("data/raw", "notebooks", "src", "models", "configs", ".gitignore", "requirements.txt",
                "Dockerfile", "README.md", ".git"):
        assert (root / rel).exists(), rel
    assert (root / "Dockerfile").read_text().startswith("# Dockerfile for the DS01 project")
    assert "COPY requirements.txt" in (root / "Dockerfile").read_text()
    assert f"Next: project-launch {p}" in r.stdout
    git = ["runuser", "-u", USERS["alice"], "--", "git", "-C", str(root)]
    files = subprocess.run(git + ["ls-files"], capture_output=True, text=True, check=True).stdout.split()
    assert {"README.md", "Dockerfile", "requirements.txt", ".gitignore"} <= set(files)
    assert len(subprocess.run(git + ["log", "--oneline"], capture_output=True, text=True).stdout.splitlines()) == 1
    st = root.stat()
    assert st.st_uid == pwd.getpwnam(USERS["alice"]).pw_uid
    # again: nothing changes, nothing is overwritten
    before = tree_digest(root)
    r = ok(daemon.run("alice", "project-init", p, "--yes"))
    assert "Dockerfile: kept" in r.stdout and "git: kept" in r.stdout
    assert tree_digest(root) == before


def test_project_init_json_and_bad_name(daemon, projects):
    p = unique_project("json")
    projects.append(("alice", p))
    r = ok(daemon.run("alice", "project-init", p, "--yes", "--no-git", "--type", "blank", "--json"))
    out = json.loads(r.stdout)
    assert out["steps"]["git"].startswith("skipped") and out["next"] == f"project-launch {p}"
    assert not (ws("alice", p) / ".git").exists()
    r = daemon.run("alice", "project-init", "../evil", "--yes")
    assert r.returncode == 3 and "invalid project name" in r.stderr


# --------------------------------------------------------------------------- project-launch


def test_project_launch_without_dockerfile_points_to_project_init(daemon):
    p = unique_project("nodf")
    r = daemon.run("alice", "project-launch", p, "--background")
    assert r.returncode == 4 and f"project-init {p}" in r.stderr


def test_launch_change_detection_reuse_and_retire(daemon, docker_client, clean):
    p = tiny_project(daemon)
    clean.append(("alice", p))
    r = ok(daemon.run("alice", "project-launch", p, "--background"))
    assert "building the image: the project has no image yet" in r.stdout
    assert "is running" in r.stdout
    image = f"ds01/{USERS['alice']}/{p}:latest"
    first_id = docker_client.images.get(image).id

    # nothing changed: no build at all (not even asking the daemon), container reused
    r = ok(daemon.run("alice", "project-launch", p, "--background"))
    assert "building" not in r.stdout and "up to date" in r.stdout and "reusing" in r.stdout
    assert docker_client.images.get(image).id == first_id
    assert len([c for c in daemon.containers(docker_client) if c.labels["ds01.project"] == p]) == 1

    # requirements changed: rebuilt; the outdated running container is replaced with --yes
    write_as("alice", ws("alice", p) / "requirements.txt", "# now with a comment\n")
    r = ok(daemon.run("alice", "project-launch", p, "--background", "--yes"))
    assert "requirements.txt changed" in r.stdout and "built " + image in r.stdout
    assert "retired the old container" in r.stdout
    assert docker_client.images.get(image).id != first_id
    # the previous image, kept while that container ran, went with it (no leaked images on disk)
    assert first_id not in {i.id for i in docker_client.images.list(all=True)}
    c = [c for c in daemon.containers(docker_client) if c.labels["ds01.project"] == p]
    assert len(c) == 1 and c[0].image.id == docker_client.images.get(image).id

    r = ok(daemon.run("alice", "project-launch", p, "--background", "--json"))
    assert json.loads(r.stdout)["reused"] is True


def test_jupyter_without_jupyterlab_says_how_to_add_it(daemon, clean):
    p = tiny_project(daemon)
    clean.append(("alice", p))
    r = daemon.run("alice", "project-launch", p, "--background", "--jupyter")
    assert r.returncode == 4 and "JupyterLab is not installed" in r.stderr
    assert f"image-update {p} --add jupyterlab" in r.stderr


# --------------------------------------------------------------------------- deploy / retire


def test_deploy_background_json_then_reuse(daemon, clean):
    p = unique_project("dep")
    clean.append(("alice", p))
    out = json.loads(ok(daemon.run("alice", "container-deploy", p, "--image", TEST_IMAGE, "--json")).stdout)
    assert out["status"] == "running" and out["reused"] is False
    out = json.loads(ok(daemon.run("alice", "container-deploy", p, "--json")).stdout)
    assert out["reused"] is True
    r = daemon.run("alice", "container-deploy", p, "--gpus", "1", "--mig", "1")
    assert r.returncode == 3 and "one way only" in r.stderr


def test_deploy_rolls_back_when_start_fails(daemon, docker_client, broken_image, clean):
    p = unique_project("rb")
    clean.append(("alice", p))
    r = daemon.run("alice", "container-deploy", p, "--image", broken_image, "--gpus", "1", "--background")
    assert r.returncode != 0, r.stdout
    assert not [c for c in daemon.containers(docker_client) if c.labels.get("ds01.project") == p]
    listed = json.loads(ok(daemon.run("alice", "container-list", "--all", "--json")).stdout)
    assert p not in [c["project"] for c in listed]
    # the GPU was given back: the same request on a working image gets one
    out = json.loads(ok(daemon.run("alice", "container-deploy", p, "--image", TEST_IMAGE, "--gpus", "1",
                                   "--background", "--json")).stdout)
    assert out["status"] == "running" and len(out["gpus"]) == 1


def test_retire_leaves_the_workspace_byte_identical(daemon, docker_client, clean):
    p = unique_project("ret")
    clean.append(("alice", p))
    ok(daemon.run("alice", "project-init", p, "--yes"))
    write_as("alice", ws("alice", p) / "notebooks" / "a.ipynb", '{"cells": []}\n')
    ok(daemon.run("alice", "container-deploy", p, "--image", TEST_IMAGE, "--background"))
    ok(daemon.run("alice", "container-run", p, "--", "sh", "-c", "echo result > /workspace/outputs/r.txt"))
    before = tree_digest(ws("alice", p))
    assert "outputs/r.txt" in before
    r = ok(daemon.run("alice", "container-retire", p, "--yes"))
    assert "retired the container" in r.stdout and "kept, unchanged" in r.stdout
    assert tree_digest(ws("alice", p)) == before
    assert not [c for c in daemon.containers(docker_client) if c.labels.get("ds01.project") == p]
    r = daemon.run("alice", "container-retire", p)
    assert r.returncode == 4


def test_bob_cannot_retire_alices_container(daemon, clean):
    p = unique_project("iso")
    clean.append(("alice", p))
    ok(daemon.run("alice", "container-deploy", p, "--image", TEST_IMAGE, "--background"))
    r = daemon.run("bob", "container-retire", p, "--yes")
    assert r.returncode == 4
    assert json.loads(ok(daemon.run("alice", "container-list", "--json")).stdout)[0]["status"] == "running"


# --------------------------------------------------------------------------- the new-user walk-through


def test_new_user_flow_with_the_base_image(daemon, base_image, clean):  # noqa: F811
    p = unique_project("thesis")
    clean.append(("alice", p))
    ok(daemon.run("alice", "user-setup", "--yes"))
    ok(daemon.run("alice", "project-init", p, "--yes"))
    r = ok(daemon.run("alice", "project-launch", p, "--background", timeout=600))
    assert "is running" in r.stdout
    r = ok(daemon.run("alice", "container-run", p, "--", "python", "-c", "print(6*7)"))
    assert r.stdout.strip() == "42"

    # a package "installed by hand": a dist-info folder written inside the container
    ok(daemon.run("alice", "container-run", p, "--", "python", "-c",
                  "import site,os; d=os.path.join(site.getsitepackages()[0],'handmade_pkg-1.2.dist-info'); "
                  "os.makedirs(d); open(d+'/METADATA','w').write('Metadata-Version: 2.1\\nName: handmade-pkg\\n"
                  "Version: 1.2\\n')"))
    df = ws("alice", p) / "Dockerfile"
    r = ok(daemon.run("alice", "container-retire", p, "--save-packages"))  # not a terminal, no --yes
    assert "handmade-pkg==1.2" in r.stdout and "image-update" in r.stdout
    assert "handmade-pkg" not in df.read_text()

    ok(daemon.run("alice", "project-launch", p, "--background"))
    ok(daemon.run("alice", "container-run", p, "--", "python", "-c",
                  "import site,os; d=os.path.join(site.getsitepackages()[0],'handmade_pkg-1.2.dist-info'); "
                  "os.makedirs(d); open(d+'/METADATA','w').write('Metadata-Version: 2.1\\nName: handmade-pkg\\n"
                  "Version: 1.2\\n')"))
    before = {k: v for k, v in tree_digest(ws("alice", p)).items() if k != "Dockerfile"}
    r = ok(daemon.run("alice", "container-retire", p, "--save-packages", "--yes"))
    assert "added 1 package(s)" in r.stdout
    assert "# pip: handmade-pkg==1.2" in df.read_text()
    after = {k: v for k, v in tree_digest(ws("alice", p)).items() if k != "Dockerfile"}
    assert after == before
    git = ["runuser", "-u", USERS["alice"], "--", "git", "-C", str(ws("alice", p)), "log", "--oneline"]
    assert len(subprocess.run(git, capture_output=True, text=True, check=True).stdout.splitlines()) == 1


# --------------------------------------------------------------------------- on a terminal (pexpect)


def spawn(daemon, user: str, cmd: str, *args: str) -> pexpect.spawn:
    env = [f"DS01_ROOT={daemon.root}", "TERM=xterm", f"PATH={BIN}:/usr/bin:/bin", "LANG=C.UTF-8"]
    return pexpect.spawn("runuser", ["-u", USERS[user], "--", "env", "-i", *env, str(BIN / cmd), *args],
                         encoding="utf-8", timeout=60, dimensions=(40, 120))


def test_project_init_on_a_terminal(daemon, projects):
    p = unique_project("ttyinit")
    projects.append(("alice", p))
    child = spawn(daemon, "alice", "project-init", p)
    try:
        child.expect("Framework:")
        child.send("\r")  # the first choice: CPU base
        child.expect("Package preset:")
        child.send("\x1b[B")  # arrow down: the first real preset
        child.send("\r")
        child.expect("Project layout:")
        child.send("\x1b[B\r")  # blank
        child.expect(r"Create .*\?")
        child.send("y")
        child.expect(f"Next: project-launch {p}")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
    root = ws("alice", p)
    assert "# Preset 'audio'" in (root / "Dockerfile").read_text()
    assert not (root / "data").exists() and (root / ".git").is_dir()


def test_project_launch_on_a_terminal_opens_a_shell(daemon, clean):
    p = tiny_project(daemon)
    clean.append(("alice", p))
    child = spawn(daemon, "alice", "project-launch", p)
    try:
        child.expect("is running", timeout=120)
        child.expect(r"\$ ")
        child.sendline("echo inside-$((6*7))")
        child.expect("inside-42")
        child.sendline("exit 3")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 3, child.before
    # and a second launch on the terminal, after a requirements change, asks before replacing
    write_as("alice", ws("alice", p) / "requirements.txt", "# changed\n")
    child = spawn(daemon, "alice", "project-launch", p, "--background")
    try:
        child.expect("replace it", timeout=120)
        child.send("n")
        child.expect("reusing your running container with the previous image")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before


def test_jupyter_publish_local_token_port_and_ssh_line(daemon, base_image, clean):  # noqa: F811
    """``--publish-local``, the opt-in old way: the port published on the host's 127.0.0.1 (the
    default, inside the container only behind ``ssh -L … P.ds01``, is in test_ssh). Needs PyPI
    (or the admin's pip index) for jupyterlab, like test_images needs it for six."""
    import re
    import urllib.error
    import urllib.request

    p = unique_project("jup")
    clean.append(("alice", p))
    ok(daemon.run("alice", "project-init", p, "--yes", "--no-git", "--type", "blank"))
    write_as("alice", ws("alice", p) / "requirements.txt", "jupyterlab\n")
    r = ok(daemon.run("alice", "project-launch", p, "--background", "--jupyter", "--publish-local", timeout=900))
    url = re.search(r"open:\s+(http://127\.0\.0\.1:(\d+)/lab\?token=(\S+))", r.stdout)
    assert url, r.stdout
    port = url.group(2)
    assert f"ssh -N -L {port}:127.0.0.1:{port} {USERS['alice']}@" in r.stdout
    base = f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(f"{base}/api/status?token={url.group(3)}", timeout=10) as resp:
        assert resp.status == 200
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{base}/api/contents", timeout=10)
    assert e.value.code == 403
    # the token is never on a command line (other users can read those on the host)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert url.group(3) not in ps
    # again: the running container is reused, JupyterLab restarted with a new token on the same port
    r = ok(daemon.run("alice", "project-launch", p, "--background", "--jupyter", "--publish-local"))
    again = re.search(r"open:\s+http://127\.0\.0\.1:(\d+)/lab\?token=(\S+)", r.stdout)
    assert again and again.group(1) == port and again.group(2) != url.group(3) and "reusing" in r.stdout


# --------------------------------------------------------------------------- the CLI fast path


def test_fast_path_and_click_path_print_the_same(daemon, clean):
    """The plain forms of the hot verbs run without click (ds01.cli.fast); DS01_NO_FAST=1 sends
    them through click. Both must do and print exactly the same, errors included."""
    slow = {"DS01_NO_FAST": "1"}
    p = tiny_project(daemon)
    clean.append(("alice", p))
    ok(daemon.run("alice", "project-launch", p, "--background"))  # builds; records the stamp
    for verb in ("container-stop", "container-start"):
        a = ok(daemon.run("alice", verb, p))
        b = ok(daemon.run("alice", verb, p, env=slow)) if verb == "container-start" else None
        assert "✓ container " in a.stdout
        if b is not None:
            assert b.stdout == a.stdout
    fast_launch = ok(daemon.run("alice", "project-launch", p, "--background"))
    slow_launch = ok(daemon.run("alice", "project-launch", p, "--background", env=slow))
    assert fast_launch.stdout == slow_launch.stdout and "reusing" in fast_launch.stdout
    fast_deploy = ok(daemon.run("alice", "container-deploy", p, "--background"))
    assert fast_deploy.stdout == ok(daemon.run("alice", "container-deploy", p, "--background", env=slow)).stdout
    fast_rb = ok(daemon.run("alice", "image-update", p, "--rebuild"))
    assert "up to date" in fast_rb.stdout
    assert fast_rb.stdout == ok(daemon.run("alice", "image-update", p, "--rebuild", env=slow)).stdout
    ok(daemon.run("alice", "container-remove", p, "--force"))
    q = unique_project("fast")
    clean.append(("alice", q))
    a = ok(daemon.run("alice", "container-create", q, "--image", TEST_IMAGE))  # --image: click path
    ok(daemon.run("alice", "container-remove", q))
    b = ok(daemon.run("alice", "container-create", q))  # default image: fast path
    assert a.stdout.replace(TEST_IMAGE, "IMG") == b.stdout.replace(daemon.config["images"]["default"], "IMG")
    def same_table(text: str) -> str:  # "4s ago" may tick to "5s ago" between the two runs
        return re.sub(r"\s+", " ", re.sub(r"\d+[dhms](\d+[dhms])? ago", "T ago", text))

    lists = [same_table(ok(daemon.run("alice", "container-list", *a, env=e)).stdout)
             for a in ((), ("--all",), ("--json",)) for e in (None, slow)]
    assert lists[0] == lists[1] and lists[2] == lists[3] and lists[4] == lists[5] and q in lists[2]
    # refusals read the same too: bob, alice's project, both paths
    r1, r2 = daemon.run("bob", "container-start", q), daemon.run("bob", "container-start", q, env=slow)
    assert r1.returncode == r2.returncode == 4 and r1.stderr == r2.stderr and r1.stdout == r2.stdout == ""
