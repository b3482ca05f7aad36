"""Daemon start-up: config validation, restart safety, reconciliation with the engine."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess

from .harness import BIN, new_daemon, ok, unique_project, USERS


def test_misspelt_config_key_stops_the_daemon_naming_the_key(docker_client, tmp_path):
    d = new_daemon()
    try:
        d.write_config({"containers": {"stop_timout": 5}})
        p = subprocess.run([str(BIN / "ds01d"), "--root", str(d.root)], capture_output=True, text=True, timeout=30)
        assert p.returncode == 2
        assert "containers.stop_timout" in p.stderr and "unknown key" in p.stderr
        assert "config.yaml:" in p.stderr  # names the file and line
        assert not d.socket.exists()
    finally:
        shutil.rmtree(d.root, ignore_errors=True)


def test_check_config(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("defaults:\n  memory: 8g\n  max_runtime: 12h\n")
    p = subprocess.run([str(BIN / "ds01d"), "--check-config", str(good)], capture_output=True, text=True)
    assert p.returncode == 0 and "ok" in p.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults:\n  memory: lots\n")
    p = subprocess.run([str(BIN / "ds01d"), "--check-config", str(bad)], capture_output=True, text=True)
    assert p.returncode == 2 and "defaults.memory" in p.stderr and "bad.yaml:2" in p.stderr


def test_sigkill_restart_loses_nothing_and_sees_external_removal(docker_client, projects):
    d = new_daemon()
    d.start()
    try:
        keep, doomed = unique_project("keep"), unique_project("doomed")
        projects.extend([("alice", keep), ("alice", doomed)])
        ok(d.run("alice", "container-create", keep))
        ok(d.run("alice", "container-start", keep))
        ok(d.run("alice", "container-run", keep, "--", "sh", "-c", "echo precious > /workspace/file"))
        out = json.loads(ok(d.run("alice", "container-create", doomed, "--json")).stdout)
        d.stop(signal.SIGKILL)
        docker_client.containers.get(out["name"]).remove(force=True)  # behind DS01's back
        d.start()
        rows = {r["project"]: r for r in json.loads(ok(d.run("alice", "container-list", "--all", "--json")).stdout)}
        assert keep in rows and rows[keep]["status"] == "running"
        assert doomed not in rows
        ws = os.path.join(pwd.getpwnam(USERS["alice"]).pw_dir, "workspace", keep, "file")
        assert open(ws).read() == "precious\n"
        r = ok(d.run("alice", "container-run", keep, "--", "cat", "/workspace/file"))
        assert r.stdout == "precious\n"
        gone = [e for e in _events(d) if e["action"] == "container.gone"]
        assert [e["target"] for e in gone] == [doomed]
        # its workspace pin was released too; the survivor's is still there
        mounts = d.root / "var/lib/ds01/mounts"
        assert sorted(os.listdir(mounts)) == [rows[keep]["name"]]
        # the slot is free again: the project can get a new container
        ok(d.run("alice", "container-create", doomed))
    finally:
        d.destroy(docker_client)


def test_unknown_managed_container_is_adopted(docker_client, projects):
    d = new_daemon()
    d.start()
    try:
        p, lost = unique_project("adopt"), unique_project("lost")
        projects.extend([("alice", p), ("alice", lost)])
        ok(d.run("alice", "container-create", p))
        lost_name = json.loads(ok(d.run("alice", "container-create", lost, "--json")).stdout)["name"]
        d.stop()
        docker_client.containers.get(lost_name).remove(force=True)  # gone while the daemon is down
        (d.root / "var/lib/ds01/state.db").unlink()  # lose the DB entirely
        for suffix in ("-wal", "-shm"):
            try:
                (d.root / f"var/lib/ds01/state.db{suffix}").unlink()
            except FileNotFoundError:
                pass
        d.start()
        rows = json.loads(ok(d.run("alice", "container-list", "--all", "--json")).stdout)
        assert [r["project"] for r in rows] == [p]
        assert any(e["action"] == "container.adopt" for e in _events(d))
        # the pin of the container nobody knows any more is released; the adopted one keeps its pin
        assert sorted(os.listdir(d.root / "var/lib/ds01/mounts")) == [rows[0]["name"]]
    finally:
        d.destroy(docker_client)


def test_max_containers_limit(docker_client, projects):
    d = new_daemon()
    d.config["users"] = {USERS["carol"]: {"max_containers": 1}}
    d.start()
    try:
        a, b = unique_project("one"), unique_project("two")
        projects.extend([("carol", a), ("carol", b)])
        ok(d.run("carol", "container-create", a))
        r = d.run("carol", "container-create", b)
        assert r.returncode == 6 and "limit is 1" in r.stderr
        assert len(d.containers(docker_client)) == 1
    finally:
        d.destroy(docker_client)


def _events(d):
    with open(d.root / "var/log/ds01/events.jsonl") as f:
        return [json.loads(line) for line in f]
