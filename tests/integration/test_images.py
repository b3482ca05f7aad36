"""Images against the real engine: the offline base, builds as real users, ownership, safety."""

from __future__ import annotations

import json
import pwd
import subprocess
import time

import pytest

from .harness import ok, unique_project, USERS, write_as

BASE = "ds01/base:latest"


def home(user: str) -> str:
    return pwd.getpwnam(USERS[user]).pw_dir


def as_user(user: str, *cmd: str) -> None:
    subprocess.run(["runuser", "-u", USERS[user], "--", *cmd], check=True)


def image_of(user: str, project: str) -> str:
    return f"ds01/{USERS[user]}/{project}:latest"


@pytest.fixture
def built(daemon, docker_client, base_image, projects):
    """A project of alice's built from the base with six installed from requirements.txt."""
    p = unique_project("img")
    projects.append(("alice", p))
    req = f"{home('alice')}/req-{p}.txt"
    write_as("alice", req, "six==1.16.0\n")
    r = ok(daemon.run("alice", "image-create", p, "--requirements", req, timeout=600))
    assert "built " + image_of("alice", p) in r.stdout
    yield p
    daemon.run("alice", "container-remove", p, "--force")
    daemon.run("alice", "image-delete", p, "--force", "--yes")
    subprocess.run(["rm", "-f", req])


def test_bootstrapped_base_is_usable(base_image, docker_client):
    img = docker_client.images.get(base_image)
    cfg = img.attrs["Config"]
    assert cfg["Env"][0].startswith("PATH=/opt/venv/bin:") and cfg["WorkingDir"] == "/workspace"
    out = docker_client.containers.run(base_image, ["sh", "-c", "command -v python3; python3 -m pip --version"],
                                       user="4242:4242", remove=True).decode()
    assert out.startswith("/opt/venv/bin/python3") and "pip" in out


def test_requirement_importable_in_the_container(daemon, docker_client, built):
    p = built
    img = docker_client.images.get(image_of("alice", p))
    lb = img.labels
    alice = pwd.getpwnam(USERS["alice"])
    assert lb["ds01.managed"] == "true" and lb["ds01.uid"] == str(alice.pw_uid) and lb["ds01.project"] == p
    assert lb["ds01.base"] == BASE and lb["ds01.content_hash"].startswith("sha256:")
    ok(daemon.run("alice", "container-create", p, "--image", image_of("alice", p)))
    r = ok(daemon.run("alice", "container-run", p, "--", "python", "-c", "import six; print('six', six.__version__)"))
    assert "six 1.16.0" in r.stdout
    rows = json.loads(ok(daemon.run("alice", "image-list", "--json")).stdout)
    mine = [r for r in rows if r["project"] == p]
    assert mine and mine[0]["used_by"] == [p] and mine[0]["base"] == BASE


def test_noop_rebuild_is_up_to_date(daemon, docker_client, built):
    before = docker_client.images.get(image_of("alice", built)).id
    r = ok(daemon.run("alice", "image-update", built, "--rebuild"))
    assert "up to date" in r.stdout  # decided from the content hash, without a build
    assert docker_client.images.get(image_of("alice", built)).id == before


def test_noop_rebuild_from_the_stamp_never_vouches_for_a_change(daemon, docker_client, built):
    """A rebuild with nothing changed is settled from metadata (no context read); any change to
    what is sent, even a touch or a chmod, makes the daemon read the context as the user again."""
    p, ws = built, f"{home('alice')}/workspace/{built}"

    def rebuild() -> dict:
        return json.loads(ok(daemon.run("alice", "image-update", p, "--rebuild", "--json")).stdout)

    time.sleep(2.2)  # past the racy window of the files image-create just wrote
    first = rebuild()
    assert first["up_to_date"] and first["checked"] == "content"  # no stamp yet: read and compared
    second = rebuild()
    assert second["up_to_date"] and second["checked"] == "stamp" and second["id"] == first["id"]
    as_user("alice", "touch", f"{ws}/requirements.txt")  # same content, new mtime: read again
    assert rebuild()["checked"] == "content"
    write_as("alice", f"{ws}/notes.txt", "new file in the context\n")
    time.sleep(2.2)
    changed = rebuild()
    assert not changed["up_to_date"] and changed["checked"] is None  # a real build ran
    as_user("alice", "chmod", "000", f"{ws}/notes.txt")
    r = daemon.run("alice", "image-update", p, "--rebuild")
    assert r.returncode == 5 and "notes.txt" in r.stderr  # refused as before, not "up to date"


def test_broken_requirement_shows_pip_error_and_keeps_the_old_image(daemon, docker_client, built):
    p = built
    before = docker_client.images.get(image_of("alice", p)).id
    bad = f"{home('alice')}/bad-{p}.txt"
    write_as("alice", bad, "ds01-no-such-package-zzz==9.9.9\n")
    r = daemon.run("alice", "image-update", p, "--requirements", bad, timeout=600)
    assert r.returncode == 11, r.stdout + r.stderr
    assert "No matching distribution found for ds01-no-such-package-zzz" in r.stderr  # the tail, on stderr
    assert "build failed at Step" in r.stderr and "pip install" in r.stderr
    assert docker_client.images.get(image_of("alice", p)).id == before


def test_symlink_out_of_the_workspace_is_refused(daemon, built):
    p = built
    as_user("alice", "ln", "-s", "/etc/passwd", f"{home('alice')}/workspace/{p}/passwd-link")
    r = daemon.run("alice", "image-update", p, "--rebuild")
    assert r.returncode == 5 and "symlink" in r.stderr and "passwd-link" in r.stderr
    # a symlinked dataset under data/ is excluded from the context, so it does not block builds
    as_user("alice", "rm", f"{home('alice')}/workspace/{p}/passwd-link")
    as_user("alice", "mkdir", "-p", f"{home('alice')}/workspace/{p}/data")
    as_user("alice", "ln", "-s", "/etc", f"{home('alice')}/workspace/{p}/data/raw")
    ok(daemon.run("alice", "image-update", p, "--rebuild"))


def test_bob_cannot_list_build_on_or_delete_alices_image(daemon, docker_client, built, projects):
    p = built
    rows = json.loads(ok(daemon.run("bob", "image-list", "--json")).stdout)
    assert all(r["project"] != p for r in rows)
    r = daemon.run("bob", "image-delete", p, "--yes")
    assert r.returncode == 4
    status, body = daemon.api("bob", "GET", f"/v1/images/{p}?user={USERS['alice']}")
    assert status == 403
    assert docker_client.images.get(image_of("alice", p))
    # FROM alice's image in bob's Dockerfile: refused like a missing image (labels cannot be spoofed)
    q = unique_project("bob")
    projects.append(("bob", q))
    write_as("bob", f"{home('bob')}/workspace/{q}/Dockerfile",
             f"FROM {image_of('alice', p)}\nRUN true\n")
    r = daemon.run("bob", "image-create", q)
    assert r.returncode == 4 and "does not exist" in r.stderr
    # and labels cannot be spoofed: ds01.* labels in a user Dockerfile are refused outright
    write_as("bob", f"{home('bob')}/workspace/{q}/Dockerfile",
             f"FROM {BASE}\nLABEL ds01.uid=0 ds01.user={USERS['alice']}\n")
    r = daemon.run("bob", "image-create", q)
    assert r.returncode == 6 and "ds01.*" in r.stderr


def test_bob_cannot_run_alices_image(daemon, built):
    r = daemon.run("bob", "container-create", unique_project("bob"), "--image", image_of("alice", built))
    assert r.returncode in (4, 6)


def test_delete_refused_while_used_then_forced(daemon, docker_client, built):
    p = built
    ok(daemon.run("alice", "container-create", p, "--image", image_of("alice", p)))
    r = daemon.run("alice", "image-delete", p)
    assert r.returncode == 7 and "container-remove" in r.stderr
    r = ok(daemon.run("alice", "image-delete", p, "--force", "--yes"))
    assert "removed the container" in r.stdout
    assert not docker_client.images.list(name=image_of("alice", p))
    assert not [c for c in daemon.containers(docker_client) if c.labels.get("ds01.project") == p]


def test_hand_edited_dockerfile_is_never_overwritten(daemon, base_image, projects):
    p = unique_project("hand")
    projects.append(("alice", p))
    ok(daemon.run("alice", "image-create", p, "--no-build"))
    df = f"{home('alice')}/workspace/{p}/Dockerfile"
    as_user("alice", "sh", "-c", f"echo 'ENV MY_SETTING=1' >> {df}")
    r = daemon.run("alice", "image-create", p, "--packages", "six")
    assert r.returncode == 7 and "--force" in r.stderr
    ok(daemon.run("alice", "image-update", p, "--add", "six", "--no-build"))
    text = open(df).read()
    assert text.rstrip().endswith("ENV MY_SETTING=1") and "# pip: six" in text


def test_disallowed_base_is_refused_with_the_allowed_list(daemon, base_image, projects):
    p = unique_project("evil")
    projects.append(("alice", p))
    write_as("alice", f"{home('alice')}/workspace/{p}/Dockerfile", "FROM evil.example.com/miner:1\n")
    r = daemon.run("alice", "image-create", p)
    assert r.returncode == 6 and "allowed prefixes" in r.stderr


def test_bootstrap_is_admin_only_and_idempotent(daemon, base_image):
    r = daemon.run("alice", "ds01", "admin", "base-image", "bootstrap")
    assert r.returncode == 5
    r = ok(daemon.run("adm", "ds01", "admin", "base-image", "bootstrap"))
    assert "already exists" in r.stdout


# --------------------------------------------------------------------------- security review

TEST_BASE = "ds01-test/busybox:latest"


@pytest.fixture
def bob_secret(daemon, projects):
    """An image of bob's holding a secret file."""
    p = unique_project("bsec")
    projects.append(("bob", p))
    write_as("bob", f"{home('bob')}/workspace/{p}/Dockerfile",
             f"FROM {TEST_BASE}\nRUN echo BOB-SECRET-DATA > /secret\n")
    ok(daemon.run("bob", "image-create", p, timeout=300))
    yield image_of("bob", p)
    daemon.run("bob", "image-delete", p, "--force", "--yes")


def _alice_build(daemon, projects, text: str, stem: str = "asec"):
    p = unique_project(stem)
    projects.append(("alice", p))
    write_as("alice", f"{home('alice')}/workspace/{p}/Dockerfile", text)
    return p, daemon.run("alice", "image-create", p, timeout=300)


def test_other_users_image_refused_in_every_spelling_and_parse(daemon, projects, bob_secret):
    ref = bob_secret
    cases = [
        f"FROM index.docker.io/{ref}\nRUN cat /secret\n",
        f"FROM docker.io/{ref}\nRUN cat /secret\n",
        f"FROM registry-1.docker.io/{ref}\nRUN cat /secret\n",
        f"FROM {TEST_BASE}\nCOPY \\\n\n--from={ref} /secret /stolen\nRUN cat /stolen\n",
        f"FROM {TEST_BASE}\nCOPY \\\n   \n# c\n--from=docker.io/{ref} /secret /stolen\nRUN cat /stolen\n",
        f"FROM {TEST_BASE}\r\nCOPY --\"from\"={ref} /secret /stolen\r\nRUN cat /stolen\r\n",
        f"#\tescape=`\nFROM {TEST_BASE}\nCOPY `\n--from={ref} /secret /stolen\nRUN cat /stolen\n",
        f"FROM {TEST_BASE}\nONBUILD COPY --from={ref} /secret /stolen\n",
    ]
    for text in cases:
        p, r = _alice_build(daemon, projects, text)
        assert r.returncode != 0, text
        assert "BOB-SECRET-DATA" not in r.stdout + r.stderr, text
        assert ("does not exist" in r.stderr or "escape directive" in r.stderr or "ONBUILD" in r.stderr), r.stderr


def test_onbuild_base_image_is_refused(daemon, docker_client, projects):
    import io

    tag = f"ds01-test/onbuild-{unique_project('ob')}:latest"
    docker_client.images.build(fileobj=io.BytesIO(f"FROM {TEST_BASE}\nONBUILD RUN echo trigger\n".encode()),
                               tag=tag, rm=True)
    try:
        p, r = _alice_build(daemon, projects, f"FROM {tag}\nRUN echo hi\n")
        assert r.returncode == 6 and "ONBUILD" in r.stderr and tag in r.stderr
    finally:
        docker_client.images.remove(tag, force=True)


def test_reserved_labels_add_url_and_heredoc_refused(daemon, projects):
    for text, why in [(f"FROM {TEST_BASE}\nLABEL ds01.managed=true ds01.uid=0\n", "ds01.*"),
                      (f"FROM {TEST_BASE}\nADD http://127.0.0.1:1/x /x\n", "URL"),
                      (f"FROM {TEST_BASE}\nRUN <<EOF\necho hi\nEOF\n", "heredoc")]:
        _, r = _alice_build(daemon, projects, text)
        assert r.returncode != 0 and why in r.stderr, (text, r.stderr)


def test_engine_builds_the_checked_rewrite(daemon, docker_client, projects):
    """Continuations across empty and comment lines are joined as Docker joins them, and the
    image is built from the daemon's rewrite (which carries no comments)."""
    text = (f"# a comment\nFROM {TEST_BASE}\nRUN echo one \\\n\n  # inner\n   two > /x\n"
            "CMD [\"cat\", \"/x\"]\n")
    p, r = _alice_build(daemon, projects, text)
    try:
        ok(r)
        out = docker_client.containers.run(image_of("alice", p), remove=True).decode()
        assert out.split() == ["one", "two"]
        # built from the own image: the rewrite resets ds01.managed for the build's containers,
        # the final image carries the daemon's labels
        q, r2 = _alice_build(daemon, projects, f"FROM {image_of('alice', p)}\nRUN true\n", "own")
        ok(r2)
        assert docker_client.images.get(image_of("alice", q)).labels["ds01.managed"] == "true"
        daemon.run("alice", "image-delete", q, "--force", "--yes")
    finally:
        daemon.run("alice", "image-delete", p, "--force", "--yes")


def test_output_without_newlines_is_bounded(daemon, projects):
    import time

    token = unique_project("nocache")  # never in the engine's build cache
    text = f"FROM {TEST_BASE}\nRUN echo {token} >/dev/null; head -c 60000000 /dev/zero | busybox tr '\\0' a\n"
    t0 = time.time()
    p, r = _alice_build(daemon, projects, text, "nl")
    try:
        ok(r)
        assert time.time() - t0 < 120
        assert "the rest of its output is not shown" in r.stdout + r.stderr
        assert len(r.stdout) < 60 * 1024 * 1024
    finally:
        daemon.run("alice", "image-delete", p, "--force", "--yes")
