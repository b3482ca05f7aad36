"""Disk (issue 16), end to end: workspace and image bytes in ``check-limits`` and the admin
dashboard, ``max_workspace_bytes`` as a filesystem user quota where the workspace filesystem
enforces one ("not enforced here" where not), and the over-quota warning to a running container.

The workspaces live on a loopback ext4 image mounted with ``usrquota`` when this machine allows
loop devices; whether the kernel then really enforces quotas (CONFIG_QUOTA) is detected, and the
test says in its output which case it ran. Without loop devices the default filesystem is used.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from .harness import USERS, new_daemon, ok, unique_project

ALICE = USERS["alice"]


def _sh(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def loopfs():
    """(mount point, quotas on) of a 64 MiB ext4 image mounted with usrquota, or None."""
    d = Path(tempfile.mkdtemp(prefix="ds01-disk-"))
    os.chmod(d, 0o755)
    img, mnt = d / "ext4.img", d / "mnt"
    mnt.mkdir()
    mounted = False
    try:
        _sh("truncate", "-s", "64M", str(img))
        mk = _sh("mkfs.ext4", "-q", "-F", "-O", "quota", str(img))
        m = _sh("mount", "-o", "loop,usrquota", str(img), str(mnt))
        if m.returncode != 0:  # a kernel without quota support refuses the quota feature: plain ext4
            _sh("mkfs.ext4", "-q", "-F", str(img))
            m = _sh("mount", "-o", "loop,usrquota", str(img), str(mnt))
        if mk.returncode != 0 or m.returncode != 0:
            print(f"\nDISK TEST: loop devices do not work here ({(m.stderr or mk.stderr).strip()[:200]}); "
                  "testing on the default filesystem (quota enforcement not tested)")
            yield None
            return
        mounted = True
        on = "is on" in _sh("quotaon", "-p", "-u", str(mnt)).stdout
        if not on:  # old-style quota files: what an admin would run
            _sh("quotacheck", "-cum", str(mnt))
            on = _sh("quotaon", "-u", str(mnt)).returncode == 0 and \
                "is on" in _sh("quotaon", "-p", "-u", str(mnt)).stdout
        print(f"\nDISK TEST: loopback ext4 at {mnt} mounted with usrquota; user quotas "
              + ("ON: enforcement is tested" if on else
                 "could not be turned on (this kernel has no quota support): 'not enforced here' is tested"))
        yield mnt, on
    finally:
        if mounted:
            _sh("umount", "-l", str(mnt))
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(docker_client, loopfs):
    d = new_daemon()
    if loopfs is not None:
        base = loopfs[0]
        ws = base / ALICE
        ws.mkdir(exist_ok=True)
        pw = pwd.getpwnam(ALICE)
        os.chown(ws, pw.pw_uid, pw.pw_gid)
        template = str(base) + "/{user}"
    else:
        template = "{home}/ds01-disk-test"
    d.start(extra={"containers": {"workspace_base": template}, "daemon": {"tick_interval": 1},
                   "disk": {"sample_interval": 1, "warn_interval": 3600},
                   "users": {ALICE: {"max_workspace_bytes": "8m"}}})
    yield d, loopfs
    d.destroy(docker_client)
    if loopfs is None:
        shutil.rmtree(Path(pwd.getpwnam(ALICE).pw_dir) / "ds01-disk-test", ignore_errors=True)


def _limits(d, pred, timeout=30.0) -> dict:
    end = time.time() + timeout
    out: dict = {}
    while time.time() < end:
        out = json.loads(ok(d.run("alice", "check-limits", "--json")).stdout)
        if out.get("disk") and pred(out["disk"]):
            return out
        time.sleep(0.5)
    raise AssertionError(f"check-limits never showed it: {out.get('disk')}")


def test_bytes_shown_quota_enforced_or_said_not_and_over_quota_warns(lab):
    d, loopfs = lab
    enforced = bool(loopfs and loopfs[1])
    p = unique_project("disk")
    ok(d.run("alice", "container-deploy", p, "--background"))
    ok(d.run("alice", "container-run", p, "--", "sh", "-c",
             "dd if=/dev/zero of=/workspace/four bs=1M count=4 2>/dev/null; sync"))
    out = _limits(d, lambda k: k.get("measured") and k["workspace_bytes"] >= 4 * 1024**2)
    disk = out["disk"]
    assert disk["max_workspace_bytes"] == 8 * 1024**2 and disk["over"] is False
    assert disk["image_bytes"] >= 0 and "images" in disk
    print(f"DISK TEST: alice's workspace {disk['workspace_bytes']} bytes; {disk['enforcement']}")
    if enforced:
        assert disk["enforced"] and disk["enforcement"].startswith("enforced")
        r = d.run("alice", "container-run", p, "--", "sh", "-c", "dd if=/dev/zero of=/workspace/big bs=1M count=12")
        assert r.returncode != 0 and "quota" in (r.stdout + r.stderr).lower(), r
    else:
        assert disk["enforced"] is False and disk["enforcement"].startswith("not enforced here")
    text = ok(d.run("alice", "check-limits")).stdout
    assert "workspace bytes" in text and "workspace limit:" in text and "images:" in text

    # the admin lowers the limit under what is used: the quota follows, the container is warned
    ok(d.run("adm", "ds01", "admin", "limits", "set", ALICE, "max_workspace_bytes=2m"))
    _limits(d, lambda k: k.get("over") is True and k["max_workspace_bytes"] == 2 * 1024**2)
    end = time.time() + 30
    evs: list = []
    while time.time() < end:
        evs = json.loads(ok(d.run("alice", "ds01", "events", "--json")).stdout)
        if any(e["action"] == "disk.warn" for e in evs):
            break
        time.sleep(0.5)
    warn = [e for e in evs if e["action"] == "disk.warn"]
    assert warn and warn[0]["target"] == p and warn[0]["data"]["limit"] == 2 * 1024**2
    alerts = ok(d.run("alice", "container-run", p, "--", "cat", "/workspace/.ds01-alerts")).stdout
    assert "over your limit of 2.0 MiB" in alerts
    if enforced:
        assert "Disk quota exceeded" in alerts
        assert any(e["action"] == "disk.quota" for e in evs)
    else:
        assert "not enforced on this filesystem" in alerts

    dash = json.loads(ok(d.run("adm", "ds01", "admin", "dashboard", "--json", "--no-stats")).stdout)
    row = next(u for u in dash["users"] if u["user"] == ALICE)
    assert row["workspace_bytes"] >= 4 * 1024**2 and row["image_bytes"] is not None
    plain = ok(d.run("adm", "ds01", "admin", "dashboard", "--no-stats")).stdout
    assert "WORKSPACE" in plain.upper() and "IMAGES" in plain.upper()
    ok(d.run("alice", "container-retire", p))
