"""``ds01 admin catalog refresh`` (issue 17 item 4) against a real CNCF registry on 127.0.0.1: a tag
pushed there is discovered, ``--dry-run`` shows it without writing, and ``image-list --catalog``
then offers it (python unknown). Its own daemon: the overlay changes the pytorch choices."""

from __future__ import annotations

import json

import pytest

from .harness import TEST_IMAGE, new_daemon, ok
from .registry_fixture import local_registry  # noqa: F401  (the fixture)

TAG_A = "2.99.0-cuda12.9-cudnn9-runtime"
TAG_B = "2.99.1-cuda12.9-cudnn9-devel"


@pytest.fixture(scope="module")
def lab(docker_client):
    d = new_daemon()
    d.start()
    yield d
    d.destroy(docker_client)


def refresh(d, reg, *extra: str, user: str | None = None):
    return d.run(user, "ds01", "admin", "catalog", "refresh", "--family", "pytorch",
                 "--registry", reg.url, "--json", *extra)


def catalog_images(d) -> dict[str, dict]:
    rows = json.loads(ok(d.run("alice", "image-list", "--catalog", "--framework", "pytorch", "--json")).stdout)
    return {r["image"]: r for r in rows["entries"]}


def test_refresh_discovers_pushed_tag(lab, local_registry, docker_client):  # noqa: F811
    local_registry.push(docker_client, TEST_IMAGE, "pytorch/pytorch", TAG_A)
    local_registry.push(docker_client, TEST_IMAGE, "pytorch/pytorch", "latest")  # not of the family's shape
    out = json.loads(ok(refresh(lab, local_registry)).stdout)
    assert out["tags"] == {"pytorch": 2}
    assert out["diff"]["added"] == [f"pytorch/pytorch:{TAG_A}"]
    assert "ngc-pytorch" in out["errors"]  # not in this registry: reported, not fatal
    rows = catalog_images(lab)
    e = rows[f"pytorch/pytorch:{TAG_A}"]
    assert (e["framework_version"], e["cuda"], e["variant"], e["python"]) == ("2.99.0", "12.9", "runtime", None)
    shown = ok(lab.run("alice", "image-list", "--catalog", "--framework", "pytorch")).stdout
    assert TAG_A in shown and "unknown" in shown

    # a new tag: --dry-run shows it and writes nothing; the refresh then adds it
    local_registry.push(docker_client, TEST_IMAGE, "pytorch/pytorch", TAG_B)
    dry = ok(lab.run(None, "ds01", "admin", "catalog", "refresh", "--family", "pytorch",
                     "--registry", local_registry.url, "--dry-run"))
    assert f"+ pytorch/pytorch:{TAG_B}" in dry.stdout and "would change: 1 added" in dry.stdout
    assert f"pytorch/pytorch:{TAG_B}" not in catalog_images(lab)
    out = json.loads(ok(refresh(lab, local_registry)).stdout)
    assert out["diff"]["added"] == [f"pytorch/pytorch:{TAG_B}"] and out["diff"]["removed"] == []
    assert f"pytorch/pytorch:{TAG_B}" in catalog_images(lab)


def test_refresh_admin_only_and_bad_registry(lab, local_registry):  # noqa: F811
    p = refresh(lab, local_registry, user="alice")
    assert p.returncode != 0 and "admin" in (p.stderr + p.stdout).lower()
    ok(refresh(lab, local_registry, "--dry-run", user="adm"))  # the admin group may
    p = lab.run(None, "ds01", "admin", "catalog", "refresh", "--family", "pytorch",
                "--registry", "http://127.0.0.1:1")
    assert p.returncode != 0 and "unreachable" in p.stderr
