"""Surviving state faults (issue 16 item 5), against the real daemon and engine: an external
writer holding the state DB's write lock, a second daemon on the same root, a corrupt or empty
state DB, backup and restore, SIGKILL while the queue is served, pins left by a crash, and a
full state filesystem."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ds01.services.workspace import is_pinned

from .harness import BIN, USERS, new_daemon, ok, unique_project


@pytest.fixture
def d(docker_client):
    d = new_daemon()
    d.start()
    yield d
    d.destroy(docker_client)


def _db(d) -> Path:
    return d.root / "var/lib/ds01/state.db"


def _hold_write_lock(db: Path, seconds: float) -> subprocess.Popen:
    """Another process holding BEGIN IMMEDIATE on the state DB for ``seconds``."""
    code = ("import sqlite3,sys,time\n"
            "c=sqlite3.connect(sys.argv[1],isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\nprint('held',flush=True)\ntime.sleep(float(sys.argv[2]))\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_readers_do_not_wait_behind_an_external_writer_and_writers_get_state_busy(d, projects):
    p1, p2 = unique_project("r"), unique_project("w")
    projects += [("alice", p1), ("alice", p2)]
    ok(d.run("alice", "container-create", p1))
    holder = _hold_write_lock(_db(d), 20)
    try:
        t0 = time.time()
        rows = json.loads(ok(d.run("alice", "container-list", "--all", "--json")).stdout)
        took = time.time() - t0
        assert [r["project"] for r in rows] == [p1] and took < 3.0, took
        ok(d.run("alice", "check-limits"))  # another read
        t0 = time.time()
        r = d.run("alice", "container-create", p2)
        took = time.time() - t0
        assert r.returncode == 13, (r.returncode, r.stderr)
        assert "state database is busy" in r.stderr and "Traceback" not in r.stderr
        assert 4.0 <= took < 15.0, took  # the bounded wait (5 s), not the holder's 20 s
    finally:
        holder.kill()
        holder.wait()
    ok(d.run("alice", "container-create", p2))  # the lock is free again: writes work


def test_a_second_daemon_on_the_same_root_is_refused_naming_the_pid(d):
    p = subprocess.run([str(BIN / "ds01d"), "--root", str(d.root)], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert f"pid {d.proc.pid}" in p.stderr and "another ds01d" in p.stderr, p.stderr
    assert d.proc.poll() is None  # the first one runs on, still answering
    ok(d.run("alice", "container-list"))


def _start_fails(d, *extra: str) -> subprocess.CompletedProcess:
    d.write_config()
    return subprocess.run([str(BIN / "ds01d"), "--root", str(d.root), *extra], capture_output=True, text=True,
                          timeout=60)


def test_empty_or_corrupt_state_db_refused_naming_the_file_and_init_state(docker_client):
    d = new_daemon()
    db = _db(d)
    try:
        db.parent.mkdir(parents=True)
        db.write_bytes(b"")
        p = _start_fails(d)
        assert p.returncode == 1 and str(db) in p.stderr and "empty" in p.stderr, p.stderr
        assert "--init-state" in p.stderr and "backup" in p.stderr and "Traceback" not in p.stderr
        assert db.stat().st_size == 0 and not d.socket.exists()  # nothing touched
        db.write_bytes(b"this is not sqlite\n" * 500)
        p = _start_fails(d)
        assert p.returncode == 1 and str(db) in p.stderr and "not a readable SQLite database" in p.stderr, p.stderr
        assert "Traceback" not in p.stderr
        other = sqlite3.connect(db.with_name("other.db"))
        other.execute("CREATE TABLE notes (x)")
        other.commit()
        other.close()
        os.replace(db.with_name("other.db"), db)
        p = _start_fails(d)
        assert p.returncode == 1 and "not a DS01 state database" in p.stderr, p.stderr
        # explicitly afresh: the bad file is moved aside, never deleted
        d.proc = subprocess.Popen([str(BIN / "ds01d"), "--root", str(d.root), "--init-state"],
                                  stdout=open(d.log_path, "ab"), stderr=subprocess.STDOUT)
        d.wait_ready()
        assert [x.name for x in db.parent.glob("state.db.invalid-*")], list(db.parent.iterdir())
        ok(d.run("alice", "container-list"))
        d.stop()
        # a version written by a newer ds01d
        c = sqlite3.connect(db)
        c.execute("PRAGMA user_version=99")
        c.close()
        p = _start_fails(d)
        assert p.returncode == 1 and "newer ds01d" in p.stderr, p.stderr
    finally:
        d.destroy(docker_client)


def test_fresh_root_starts_and_backup_restores(d, docker_client, projects):
    p1, p2 = unique_project("b"), unique_project("after")
    projects += [("alice", p1), ("alice", p2)]
    ok(d.run("alice", "container-create", p1))
    r = d.run("alice", "ds01", "admin", "backup")
    assert r.returncode == 5  # admins only
    out = d.root / "copy"  # reachable by the admin user
    out.mkdir()
    os.chmod(out, 0o777)
    copy = out / "state-copy.db"
    r = ok(d.run("adm", "ds01", "admin", "backup", str(copy), "--json"))  # a member of the admin group
    info = json.loads(r.stdout)
    kept = Path(info["path"])
    assert kept.parent == _db(d).parent / "backups" and kept.exists() and info["schema"] >= 1
    assert copy.stat().st_size == info["bytes"] and (copy.stat().st_mode & 0o777) == 0o600
    assert copy.stat().st_uid == os.stat(os.path.expanduser(f"~{USERS['adm']}")).st_uid  # written as the admin
    c = sqlite3.connect(copy)
    assert [r[0] for r in c.execute("SELECT project FROM containers")] == [p1]
    c.close()
    ok(d.run("alice", "container-create", p2))  # after the backup
    # restore as the README says: stop, copy over, drop -wal/-shm, start
    d.stop()
    db = _db(d)
    shutil.copy(copy, db)
    for sfx in ("-wal", "-shm"):
        db.with_name(db.name + sfx).unlink(missing_ok=True)
    d.start()
    rows = json.loads(ok(d.run("alice", "container-list", "--all", "--json")).stdout)
    # p2 was made after the backup: reconcile adopts it from the engine
    assert sorted(r["project"] for r in rows) == sorted([p1, p2]), rows


@pytest.fixture
def qd(docker_client, monkeypatch):
    d = new_daemon()
    d.config["defaults"] = {"max_gpus": 2.0, "max_gpus_per_container": 1.0, "max_containers": 20}
    d.config["daemon"]["tick_interval"] = "1s"
    yield d, monkeypatch
    d.destroy(docker_client)


def test_sigkill_while_serving_the_queue_is_finished_at_restart(qd, docker_client, projects):
    d, monkeypatch = qd
    monkeypatch.setenv("DS01_FAULT", "queue.started")  # SIGKILL right after the start, before the row's end
    d.start()
    holders = []
    for user in ("alice", "bob", "carol"):
        p = unique_project("h")
        projects.append((user, p))
        ok(d.run(user, "container-deploy", p, "--gpus", "1", "--background"))
        holders.append((user, p))
    waiting = unique_project("q")
    projects.append(("adm", waiting))
    r = ok(d.run("adm", "container-deploy", waiting, "--gpus", "1", "--queue", "--background", "--json"))
    assert json.loads(r.stdout)["queued"] is True
    ok(d.run(holders[0][0], "container-retire", holders[0][1]))
    d.proc.wait(20)  # served, started, then killed
    assert d.proc.returncode == -signal.SIGKILL
    name = f"{d.prefix}-{os.stat(os.path.expanduser('~' + USERS['adm'])).st_uid}-{waiting}"
    assert docker_client.containers.get(name).status == "running"
    c = sqlite3.connect(_db(d))
    assert c.execute("SELECT status FROM queue WHERE project=?", (waiting,)).fetchone()[0] == "serving"
    c.close()
    monkeypatch.delenv("DS01_FAULT")
    d.proc = None
    d.start()
    c = sqlite3.connect(_db(d))
    assert c.execute("SELECT status FROM queue WHERE project=?", (waiting,)).fetchone()[0] == "served"
    c.close()
    assert json.loads(ok(d.run("adm", "gpu-queue", "--json")).stdout) == []
    rows = json.loads(ok(d.run("adm", "container-list", "--json")).stdout)
    assert [(r["project"], r["status"]) for r in rows] == [(waiting, "running")]
    mounts = d.root / "var/lib/ds01/mounts"
    assert not [n for n in os.listdir(mounts) if is_pinned(str(mounts / n))]


def test_every_pin_is_cleared_at_start(d, docker_client, projects):
    p = unique_project("pin")
    projects.append(("alice", p))
    out = json.loads(ok(d.run("alice", "container-create", p, "--json")).stdout)
    mounts = d.root / "var/lib/ds01/mounts"
    name = out["name"]
    assert (mounts / name).is_dir() and not is_pinned(str(mounts / name))
    d.stop(signal.SIGKILL)
    # what a daemon killed mid-start leaves: the workspace bound onto the mount point (a live
    # container's), and one of a container that no longer exists
    ws = os.path.join(os.path.expanduser(f"~{USERS['alice']}"), "workspace", p)
    (mounts / "ds01-ghost").mkdir()
    for target in (mounts / name, mounts / "ds01-ghost"):
        subprocess.run(["mount", "--bind", ws, str(target)], check=True)
        assert is_pinned(str(target))
    d.start()
    assert (mounts / name).is_dir() and not is_pinned(str(mounts / name))  # the bind source stays
    assert not (mounts / "ds01-ghost").exists()
    assert os.path.isdir(ws)  # the workspace itself untouched
    ok(d.run("alice", "container-start", p))


def test_full_state_filesystem_clear_error_reads_work_nothing_done_unrecorded(docker_client, projects):
    d = new_daemon()
    state = d.root / "var/lib/ds01"
    state.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(state)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    print("state dir on a 24 MiB tmpfs")
    try:
        d.start()
        p = unique_project("full")
        projects.append(("alice", p))
        ok(d.run("alice", "container-deploy", p, "--background"))
        c = sqlite3.connect(_db(d))
        assert c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0  # no spare room in the WAL
        c.close()
        subprocess.run(["dd", "if=/dev/zero", f"of={state / 'fill'}", "bs=1M"], capture_output=True)
        t0 = time.time()
        rows = json.loads(ok(d.run("alice", "container-list", "--json")).stdout)
        assert [(x["project"], x["status"]) for x in rows] == [(p, "running")] and time.time() - t0 < 5
        r = d.run("alice", "container-stop", p)
        assert r.returncode == 14, (r.returncode, r.stderr)
        assert "cannot be written" in r.stderr and "disk is full" in r.stderr and "Traceback" not in r.stderr
        name = rows[0]["name"]
        assert docker_client.containers.get(name).status == "running"  # not stopped behind the records' back
        r = d.run("alice", "container-retire", p)
        assert r.returncode == 14 and docker_client.containers.get(name).status == "running"
        (state / "fill").unlink()
        ok(d.run("alice", "container-stop", p))
        rows = json.loads(ok(d.run("alice", "container-list", "--all", "--json")).stdout)
        assert rows[0]["status"] == "exited" and docker_client.containers.get(name).status == "exited"
        # full again: neither a start nor a new container happens unrecorded
        c = sqlite3.connect(_db(d))
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        c.close()
        subprocess.run(["dd", "if=/dev/zero", f"of={state / 'fill'}", "bs=1M"], capture_output=True)
        r = d.run("alice", "container-start", p)
        assert r.returncode == 14 and docker_client.containers.get(name).status == "exited", r.stderr
        p2 = unique_project("full2")
        projects.append(("alice", p2))
        r = d.run("alice", "container-deploy", p2, "--background")
        assert r.returncode == 14, (r.returncode, r.stderr)
        assert [c.name for c in d.containers(docker_client)] == [name]
        (state / "fill").unlink()
        ok(d.run("alice", "container-start", p))
        assert d.proc.poll() is None  # the daemon lived through it
    finally:
        d.destroy(docker_client)
        subprocess.run(["umount", "-l", str(state)], capture_output=True)
        shutil.rmtree(d.root, ignore_errors=True)


def test_full_events_filesystem_never_fails_a_change_and_the_db_keeps_the_record(docker_client, projects):
    """The JSON-lines event log is a copy; with its filesystem full a deploy still completes (or
    is rolled back), and the event is in the state DB."""
    d = new_daemon()
    logs = d.root / "var/log/ds01"
    logs.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0750", "tmpfs", str(logs)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        d.start()
        subprocess.run(["dd", "if=/dev/zero", f"of={logs / 'fill'}", "bs=64k"], capture_output=True)
        p = unique_project("evfull")
        projects.append(("alice", p))
        ok(d.run("alice", "container-deploy", p, "--background"))
        (c,) = d.containers(docker_client)
        assert c.status == "running"
        events = json.loads(ok(d.run("adm", "ds01", "events", "--since", "1h", "--json")).stdout)
        assert any(e["action"] == "container.start" and e["target"] == p for e in events)
        ok(d.run("alice", "container-retire", p, "--yes"))
        assert d.containers(docker_client) == [] and d.proc.poll() is None
    finally:
        d.destroy(docker_client)
        subprocess.run(["umount", "-l", str(logs)], capture_output=True)
        shutil.rmtree(d.root, ignore_errors=True)
