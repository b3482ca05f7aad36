"""Issue 17 items 1-3: pulls of allowed images through a registry mirror, single-flight, with
per-layer progress; admin prune; an unreachable mirror. A real registry (Debian's
``docker-registry``) on 127.0.0.1 holds small images under catalog-like names
(``pytorch/pytorch:<tag>``), each with a layer of its own so that a pull really downloads."""

from __future__ import annotations

import io
import json
import os
import secrets
import tarfile
import threading

import docker
import pytest

from .harness import TEST_IMAGE, free_port, new_daemon, ok, unique_project
from .registry_fixture import local_registry  # noqa: F401  (a fixture)

REPO = "pytorch/pytorch"


def _fresh_image(client: docker.DockerClient, reg, mb: int = 8) -> str:
    """Push ``<reg>/pytorch/pytorch:t-<hex>`` (busybox + a random blob of ``mb`` MiB) and leave
    nothing of it on the host; returns the catalog-like name ``pytorch/pytorch:t-<hex>``."""
    tag = f"t-{secrets.token_hex(4)}"
    _push_blob_image(client, reg, TEST_IMAGE, tag, mb)
    return f"{REPO}:{tag}"


def _push_blob_image(client: docker.DockerClient, reg, base: str, tag: str, mb: int) -> None:
    """Build ``base`` + a random blob of ``mb`` MiB, push it as ``<reg>/REPO:tag`` and leave
    nothing of it on the host."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("Dockerfile", f"FROM {base}\nCOPY blob /blob\n".encode()),
                           ("blob", os.urandom(mb * 1024 * 1024))):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    buf.seek(0)
    image, _ = client.images.build(fileobj=buf, custom_context=True, rm=True)
    reg.push(client, image.id, REPO, tag)
    _gone(client, image.id)  # (the push's untag may have removed it already)


def _lines(body: dict) -> list[dict]:
    raw = body.get("raw")
    if raw is None:  # a single JSON line parses as a whole body
        return [body]
    return [json.loads(x) for x in raw.splitlines() if x.strip()]


def _pull(d, user: str, ref: str) -> list[dict]:
    status, body = d.api(user, "POST", "/v1/images-pull", json.dumps({"ref": ref}),
                         {"Content-Type": "application/json"})
    assert status == 200, body
    return _lines(body)


def _pull_events(d, ref: str) -> list[dict]:
    with open(d.root / "var/log/ds01/events.jsonl") as f:
        evs = [json.loads(line) for line in f]
    return [e for e in evs if e["action"] == "image.pull" and e["target"] == ref]


def _gone(client, ref: str) -> None:
    try:
        client.images.remove(ref, force=True)
    except docker.errors.ImageNotFound:
        pass


@pytest.fixture(scope="module")
def mirrored(docker_client, local_registry):  # noqa: F811
    d = new_daemon()
    d.start({"images": {"mirrors": {"docker.io": local_registry.host}, "credentials_file": None}})
    yield d
    d.destroy(docker_client)


def test_pull_through_the_mirror_streams_layer_progress(docker_client, local_registry, mirrored):  # noqa: F811
    ref = _fresh_image(docker_client, local_registry)
    try:
        evs = _pull(mirrored, "alice", ref)
        assert "error" not in evs[-1], evs[-1]
        layers = [e for e in evs if "layer" in e]
        assert any(e.get("total", 0) > 1024 * 1024 and e["status"] in ("Downloading", "Download complete",
                                                                        "Pull complete") for e in layers), layers
        assert any("speed" in e for e in layers)
        res = evs[-1]["pulled"]
        assert res["image"] == ref and res["transferred"] > 1024 * 1024
        assert local_registry.host in res["source"] and "mirror of docker.io" in res["source"]
        # tagged under the name asked for; the mirror's spelling is not left behind
        img = docker_client.images.get(ref)
        assert not [t for t in img.tags if t.startswith(local_registry.host)]
        # a second pull is a no-op
        again = _pull(mirrored, "bob", ref)
        assert again[-1]["pulled"]["present"] is True
        assert len([e for e in _pull_events(mirrored, ref) if e["result"] == "ok"]) == 1
        # the CLI shows a line per layer event off a terminal, and where the image came from
        r = ok(mirrored.run(None, "ds01", "admin", "images", "pull", ref))
        assert "already on this host" in r.stdout
    finally:
        _gone(docker_client, ref)


def test_pull_refused_outside_images_allowed(mirrored):
    status, body = mirrored.api("alice", "POST", "/v1/images-pull", json.dumps({"ref": "evil/miner:1"}),
                                {"Content-Type": "application/json"})
    assert status == 403 and body["error"]["code"] == "policy_denied"
    # DS01's own names are never fetched from a registry (someone else's image on Docker Hub)
    for ref in ("ds01/nosuch:latest", "ds01/ds01-bob/proj:latest"):
        status, body = mirrored.api("alice", "POST", "/v1/images-pull", json.dumps({"ref": ref}),
                                    {"Content-Type": "application/json"})
        assert status == 404 and body["error"]["code"] == "not_found", body


def test_two_users_at_once_share_one_pull(docker_client, local_registry, mirrored):  # noqa: F811
    ref = _fresh_image(docker_client, local_registry, mb=24)
    out: dict[str, list[dict]] = {}
    threads = [threading.Thread(target=lambda u=u: out.__setitem__(u, _pull(mirrored, u, ref)))
               for u in ("alice", "bob")]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        results = sorted((out[u][-1]["pulled"] for u in ("alice", "bob")), key=lambda r: r["transferred"])
        assert results[0]["transferred"] == 0 and results[1]["transferred"] > 20 * 1024 * 1024
        assert results[0].get("joined") or results[0].get("present")
        assert len(_pull_events(mirrored, ref)) == 1  # one engine pull
    finally:
        _gone(docker_client, ref)


def test_two_launches_of_a_missing_image_pull_once_and_prune_keeps_it(docker_client, local_registry, mirrored):  # noqa: F811
    used, unused = _fresh_image(docker_client, local_registry), _fresh_image(docker_client, local_registry)
    pa, pb = unique_project("pull"), unique_project("pull")
    rcs: dict[str, object] = {}
    threads = [threading.Thread(target=lambda u=u, p=p: rcs.__setitem__(
        u, mirrored.run(u, "container-create", p, "--image", used, "--cpu-only", timeout=180)))
        for u, p in (("alice", pa), ("bob", pb))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(200)
        for u in ("alice", "bob"):
            ok(rcs[u])
        assert len(_pull_events(mirrored, used)) == 1
        # the CLI shows the pull (one line per layer event off a terminal) before the create
        outs = [rcs[u].stdout for u in ("alice", "bob")]
        assert any("pulled " + used in o or "shared with a pull already running" in o for o in outs), outs
        assert any(": Downloading" in o and ": Pull complete" in o for o in outs), outs
        ok(mirrored.run(None, "ds01", "admin", "images", "pull", unused))
        rows = json.loads(ok(mirrored.run(None, "ds01", "admin", "images", "list", "--json")).stdout)
        row = next(r for r in rows if used in r["tags"])
        assert len(row["containers"]) == 2 and len(row["users"]) == 2
        only = ["--only", used, "--only", unused]
        dry = json.loads(ok(mirrored.run(None, "ds01", "admin", "images", "prune", "--unused-for", "0s",
                                         "--dry-run", "--json", *only)).stdout)
        assert [r["image"] for r in dry["removed"]] == [unused]
        docker_client.images.get(unused)  # a dry run removes nothing
        res = json.loads(ok(mirrored.run(None, "ds01", "admin", "images", "prune", "--unused-for", "0s",
                                         "--json", *only)).stdout)
        assert [r["image"] for r in res["removed"]] == [unused]
        assert {"image": used, "why": "in use"} in res["kept"]
        docker_client.images.get(used)
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(unused)
        # the catalog's default / images.default is never a candidate
        r = json.loads(ok(mirrored.run(None, "ds01", "admin", "images", "prune", "--unused-for", "0s",
                                       "--dry-run", "--json", "--only", TEST_IMAGE)).stdout)
        assert r["removed"] == []
        # a user may not prune
        assert mirrored.run("alice", "ds01", "admin", "images", "prune", "--dry-run").returncode == 5
    finally:
        for u, p in (("alice", pa), ("bob", pb)):
            mirrored.run(u, "container-remove", p, "--force")
        _gone(docker_client, used)
        _gone(docker_client, unused)


def test_unreachable_mirror_is_a_clear_error_and_leaves_nothing(docker_client, local_registry):  # noqa: F811
    ref = _fresh_image(docker_client, local_registry, mb=1)
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    d = new_daemon()
    d.start({"images": {"mirrors": {"docker.io": dead}, "credentials_file": None, "pull_retries": 1}})
    try:
        evs = _pull(d, "alice", ref)
        err = evs[-1]["error"]
        assert err["code"] == "runtime_error" and "unreachable" in err["message"] and dead in err["message"]
        assert any("retrying" in e.get("line", "") for e in evs)
        for name in (ref, f"{dead}/{ref}"):
            with pytest.raises(docker.errors.ImageNotFound):
                docker_client.images.get(name)
        # a launch of it says the same, and creates nothing
        p = unique_project("pull")
        r = d.run("alice", "container-create", p, "--image", ref, "--cpu-only")
        assert r.returncode == 10 and "unreachable" in r.stderr
        assert d.containers(docker_client) == []
        ev = _pull_events(d, ref)
        assert ev and all(e["result"] == "error" for e in ev)
    finally:
        d.destroy(docker_client)


def test_a_build_pulls_its_missing_base_with_progress(docker_client, local_registry, mirrored):  # noqa: F811
    import pwd

    from .harness import USERS, write_as

    ref = _fresh_image(docker_client, local_registry, mb=2)
    p = unique_project("pull")
    ws = f"{pwd.getpwnam(USERS['alice']).pw_dir}/workspace/{p}"
    write_as("alice", f"{ws}/Dockerfile", f"FROM {ref}\nRUN test -f /blob\n")
    try:
        r = ok(mirrored.run("alice", "image-update", p, "--rebuild", timeout=300))
        assert "Pulling " + ref in r.stdout and f"pulled {ref} from {local_registry.host}" in r.stdout, r.stdout
        assert "Downloading" in r.stdout or "Download complete" in r.stdout
        assert len(_pull_events(mirrored, ref)) == 1
    finally:
        mirrored.run("alice", "image-delete", p, "--force")
        import shutil

        shutil.rmtree(ws, ignore_errors=True)
        _gone(docker_client, ref)


def test_a_refreshed_framework_tag_inits_launches_pulls_with_progress_and_runs(
        docker_client, local_registry, mirrored, base_image):  # noqa: F811
    """Issue 17's bar end to end: a PyTorch tag pushed to the registry (the mirror of docker.io)
    is found by `catalog refresh`, chosen by `project-init --framework`, pulled with progress by
    `project-launch`, and the container runs."""
    import pwd
    import shutil

    from .harness import USERS

    tag = "2.14.0-cuda12.1-cudnn9-runtime"
    _push_blob_image(docker_client, local_registry, base_image, tag, 2)  # the lab base (python, tools) + a layer
    ref = f"{REPO}:{tag}"
    _gone(docker_client, ref)
    p = unique_project("fw")
    ws = f"{pwd.getpwnam(USERS['alice']).pw_dir}/workspace/{p}"
    try:
        r = ok(mirrored.run(None, "ds01", "admin", "catalog", "refresh", "--family", "pytorch",
                            "--registry", local_registry.url))
        assert tag in r.stdout, r.stdout
        ok(mirrored.run("alice", "project-init", p, "--framework", "pytorch==2.14.0", "--yes"))
        assert f"FROM {ref}" in open(f"{ws}/Dockerfile").read()
        r = ok(mirrored.run("alice", "project-launch", p, "--background", timeout=600))
        assert "Pulling " + ref in r.stdout and ("Downloading" in r.stdout or "Pull complete" in r.stdout), r.stdout
        r = ok(mirrored.run("alice", "container-run", p, "--", "sh", "-c", "test -f /blob && echo ran"))
        assert "ran" in r.stdout
    finally:
        mirrored.run("alice", "container-retire", p, "--yes")
        mirrored.run("alice", "image-delete", p, "--force", "--yes")
        shutil.rmtree(ws, ignore_errors=True)
        _gone(docker_client, ref)


def test_max_image_bytes_refuses_a_build_that_would_exceed_it(docker_client):
    import pwd
    import shutil

    from .harness import USERS, write_as

    d = new_daemon()
    d.start({"users": {USERS["alice"]: {"max_image_bytes": "3m"}}, "defaults": {"max_image_bytes": "1g"}})
    p = unique_project("quota")
    ws = f"{pwd.getpwnam(USERS['alice']).pw_dir}/workspace/{p}"
    write_as("alice", f"{ws}/Dockerfile", f"FROM {TEST_IMAGE}\nRUN dd if=/dev/zero of=/big bs=1M count=4\n")
    try:
        r = d.run("alice", "image-update", p, "--rebuild", timeout=300)
        assert r.returncode == 6 and "max_image_bytes" in r.stderr and "3.0 MiB" in r.stderr, r.stderr
        assert not docker_client.images.list(filters={"label": f"ds01.instance={d.instance}"})  # removed again
        # bob has the default (1g): the same build is fine
        pb = unique_project("quota")
        wb = f"{pwd.getpwnam(USERS['bob']).pw_dir}/workspace/{pb}"
        write_as("bob", f"{wb}/Dockerfile", f"FROM {TEST_IMAGE}\nRUN dd if=/dev/zero of=/big bs=1M count=4\n")
        ok(d.run("bob", "image-update", pb, "--rebuild", timeout=300))
        ok(d.run("bob", "image-delete", pb, "--force"))
        shutil.rmtree(wb, ignore_errors=True)
    finally:
        shutil.rmtree(ws, ignore_errors=True)
        d.destroy(docker_client)
