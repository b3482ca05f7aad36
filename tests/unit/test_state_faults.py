"""State faults (issue 16 item 5), the pure and in-process parts: storage errors mapped to a clear
class, readers that never wait behind a writer, a bounded write wait, refusal of anything but a
DS01 database of a known version, migration of a pre-version DB, online backup, the queue's
'serving' state, and a clock step injected into the daemon's clock and the lifecycle decision."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from ds01.errors import Busy, StateBusy, StateUnavailable
from ds01.models.config import IdleThresholds
from ds01.policy.clock import Mark, advance, resume
from ds01.policy.lifecycle import Facts, History, Policy, Sample, Timers, decide
from ds01.services.clock import SteadyClock
from ds01.state.base import storage_error
from ds01.state.db import Store
from ds01.state.schema import SCHEMA_VERSION


def _err(cls, text: str, code: int):
    e = cls(text)
    e.sqlite_errorcode = code
    return e


def test_storage_errors_map_to_clear_classes(tmp_path):
    p = tmp_path / "state.db"
    full = storage_error(_err(sqlite3.OperationalError, "database or disk is full", 13), p)
    assert isinstance(full, StateUnavailable) and full.exit_code == 14 and str(p) in full.message
    assert "disk is full" in full.message and full.hint
    ioerr = storage_error(_err(sqlite3.OperationalError, "disk I/O error", 10 | (3 << 8)), p)  # IOERR_WRITE
    assert isinstance(ioerr, StateUnavailable) and "I/O" in ioerr.message
    ro = storage_error(_err(sqlite3.OperationalError, "attempt to write a readonly database", 8), p)
    assert isinstance(ro, StateUnavailable) and "read-only" in ro.message
    busy = storage_error(_err(sqlite3.OperationalError, "database is locked", 5), p)
    assert isinstance(busy, StateBusy) and isinstance(busy, Busy) and busy.exit_code == 13 and busy.code == "busy"
    bug = _err(sqlite3.IntegrityError, "UNIQUE constraint failed", 19)
    assert storage_error(bug, p) is bug  # a bug or a handled constraint stays what it is


def _holder(db, seconds: float) -> subprocess.Popen:
    code = ("import sqlite3,sys,time\nc=sqlite3.connect(sys.argv[1],isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\nprint('held',flush=True)\ntime.sleep(float(sys.argv[2]))\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_readers_never_wait_and_writers_wait_a_bounded_time(tmp_path):
    s = Store(tmp_path / "state.db", write_wait=0.5)
    s.add_event({"action": "x"})
    # our own writer inside a long transaction: another thread's reads go on
    inside, release = threading.Event(), threading.Event()

    def long_write():
        with s.transaction() as tx:
            s._cursor(tx, "INSERT INTO events (time, action, result) VALUES (1, 'y', 'ok')")
            inside.set()
            release.wait(5)

    t = threading.Thread(target=long_write)
    t.start()
    inside.wait(5)
    t0 = time.monotonic()
    assert [e["action"] for e in s.events()] == ["x"]  # the uncommitted row is not seen
    assert time.monotonic() - t0 < 0.2
    release.set()
    t.join()
    assert sorted(e["action"] for e in s.events()) == ["x", "y"]
    # another process holding the write lock: reads answer, writes fail clearly after the bound
    p = _holder(s.path, 5)
    try:
        t0 = time.monotonic()
        assert len(s.events()) == 2 and time.monotonic() - t0 < 0.2
        t0 = time.monotonic()
        with pytest.raises(StateBusy, match="busy"):
            with s.transaction():
                pass
        assert 0.4 < time.monotonic() - t0 < 2.0
        with pytest.raises(StateBusy):
            s.add_event({"action": "z"})
        with pytest.raises(StateBusy):
            s.ensure_writable()
    finally:
        p.kill()
        p.wait()
    s.ensure_writable()


def test_only_a_ds01_database_of_a_known_version_opens(tmp_path):
    new = tmp_path / "new.db"
    Store(new).close()  # a missing file is created, with the version
    assert sqlite3.connect(new).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert not (tmp_path / "new.db.new").exists()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(StateUnavailable, match="empty") as e:
        Store(empty)
    assert str(empty) in e.value.message and "--init-state" in e.value.hint and "backup" in e.value.hint
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\x00garbage" * 999)
    with pytest.raises(StateUnavailable, match="not a readable SQLite database"):
        Store(junk)
    other = tmp_path / "other.db"
    c = sqlite3.connect(other)
    c.execute("CREATE TABLE notes (x)")
    c.commit()
    c.close()
    with pytest.raises(StateUnavailable, match="not a DS01 state database"):
        Store(other)
    c = sqlite3.connect(new)
    c.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    c.close()
    with pytest.raises(StateUnavailable, match="newer ds01d"):
        Store(new)
    # --init-state: moved aside (never deleted), a new DB in its place
    Store(junk, init=True).close()
    aside = list(tmp_path.glob("junk.db.invalid-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"\x00garbage")
    assert sqlite3.connect(junk).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_db_from_before_versions_is_migrated(tmp_path):
    old = tmp_path / "old.db"
    c = sqlite3.connect(old)
    c.executescript("""
        CREATE TABLE containers (id INTEGER PRIMARY KEY, uid INTEGER, user TEXT, project TEXT, docker_id TEXT,
            docker_name TEXT, image TEXT, status TEXT, created_at REAL, started_at REAL, stopped_at REAL,
            ended_at REAL, limits TEXT NOT NULL DEFAULT '{}', gpus TEXT NOT NULL DEFAULT '[]',
            workspace TEXT NOT NULL DEFAULT '');
        CREATE TABLE allocations (id INTEGER PRIMARY KEY, container INTEGER, uid INTEGER, user TEXT,
            project TEXT, device TEXT, equivalents REAL, start REAL, end REAL, end_reason TEXT);
        CREATE TABLE queue (id INTEGER PRIMARY KEY AUTOINCREMENT, uid INTEGER NOT NULL, user TEXT NOT NULL,
            project TEXT NOT NULL, request TEXT NOT NULL, image TEXT NOT NULL, ports TEXT NOT NULL DEFAULT '[]',
            enqueued_at REAL NOT NULL, status TEXT NOT NULL, ended_at REAL, note TEXT);
        CREATE TABLE events (id INTEGER PRIMARY KEY, time REAL, uid INTEGER, user TEXT, action TEXT,
            target TEXT, result TEXT, reason TEXT, data TEXT);
        INSERT INTO events (time, action, result) VALUES (1, 'kept', 'ok');
    """)
    c.close()
    s = Store(old)
    assert [e["action"] for e in s.events()] == ["kept"]  # history kept
    qid = s.enqueue(None, 1, "a", "p", {}, "img", [], 1.0)
    assert qid
    c = sqlite3.connect(old)
    assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert "container" in {r[1] for r in c.execute("PRAGMA table_info(queue)")}


def test_online_backup_is_a_consistent_ds01_database(tmp_path):
    s = Store(tmp_path / "state.db")
    for i in range(50):
        s.add_event({"action": f"e{i}"})
    out = s.backup(tmp_path / "b.db")
    assert out["schema"] == SCHEMA_VERSION and out["bytes"] == (tmp_path / "b.db").stat().st_size
    assert (tmp_path / "b.db").stat().st_mode & 0o777 == 0o600
    assert len(Store(tmp_path / "b.db").events()) == 50  # it opens as a DS01 database


def test_queue_serving_is_recorded_with_the_container_and_can_be_undone(tmp_path):
    s = Store(tmp_path / "state.db")
    qid = s.enqueue(None, 1, "a", "p", {"kind": "gpus", "count": 1}, "img", [], 1.0)
    with s.transaction() as tx:
        rec = s.insert_container(tx, uid=1, user="a", project="p", docker_name="n", image="img",
                                 status="creating", created_at=1.0)
        assert s.mark_serving(tx, qid, rec)
    assert s.waiting() == [] and [(r["id"], r["container"]) for r in s.serving()] == [(qid, rec)]
    with s.transaction() as tx:  # a second serving of the same entry is refused
        assert not s.mark_serving(tx, qid, rec)
    s.requeue(qid)
    assert [r["id"] for r in s.waiting()] == [qid] and s.serving() == []
    with s.transaction() as tx:
        s.mark_serving(tx, qid, rec)
    s.end_queued(qid, "served", 2.0)
    assert s.serving() == [] and s.waiting() == []


# -- the clock -----------------------------------------------------------------------------
def test_advance_turns_a_step_into_a_bounded_slew():
    assert advance(1000.0, 10.0, 1010.5, 20.0) == 1010.5  # agreeing clocks: the wall clock
    now = advance(1000.0, 10.0, 1010.0 + 7200, 20.0)  # +2 h step during 10 s
    assert now == pytest.approx(1010.1)  # 10 s passed, + at most 1 % of it
    back = advance(1000.0, 10.0, 1010.0 - 7200, 20.0)
    assert back == pytest.approx(1009.9)  # never backwards, never stalled
    assert advance(1000.0, 10.0, 900.0, 10.0) == 1000.0
    assert advance(1000.0, 10.0, 1010.0 + 30 * 86400, 20.0) == 1010.0 + 30 * 86400  # a clock being set: taken


def test_resume_across_a_restart():
    m = Mark(now=5000.0, mono=100.0, boot="b1")
    assert resume(None, 123.0, 1.0, "b1") == 123.0
    assert resume(m, 5000.0 + 3600 + 60, 160.0, "b1") == 5060.0  # stepped +1 h while down: 60 s counted
    assert resume(m, 4000.0, 5.0, "b2") == 5000.0  # rebooted with the clock behind: never go back
    assert resume(m, 9000.0, 5.0, "b2") == 9000.0
    assert resume(m, 5060.0 + 90 * 86400, 160.0, "b1") == 5060.0 + 90 * 86400  # over a day: the wall clock


class FakeTime:
    def __init__(self, wall: float):
        self.wall, self.mono = wall, 0.0

    def pass_(self, s: float) -> None:
        self.wall += s
        self.mono += s


def test_a_clock_step_does_not_count_as_idle_time():
    ft = FakeTime(1_000_000.0)
    clock = SteadyClock(None, wall=lambda: ft.wall, mono=lambda: ft.mono, boot="b")
    started = clock()
    policy = Policy(idle_timeout=3600.0, max_runtime=4 * 3600.0, thresholds=IdleThresholds(cpu_percent=5),
                    idle_warnings=(0.8, 0.95), runtime_warnings=(0.75, 0.9), max_late_notice=600.0)
    facts = Facts(status="running", created_at=started, started_at=started)
    timers = Timers()

    def tick(now: float, t: Timers):
        return decide(History(facts, t, (Sample(start=now - 60, time=now, cpu_percent=0.0),)), policy, now)

    ft.pass_(600)  # idle for 10 minutes
    d = tick(clock(), timers)
    assert d.actions == () and d.timers.idle_since is not None
    timers = d.timers
    ft.wall += 5 * 3600  # the system clock is stepped 5 h forward
    ft.pass_(60)
    now = clock()
    assert clock.stepped() and clock.offset == pytest.approx(5 * 3600 - 0.6, abs=0.01)
    d = tick(now, timers)
    assert d.actions == ()  # no idle warning, no max-runtime stop: 11 minutes really passed
    # with the raw wall clock the same decision warns of an idle stop and a max-runtime stop
    raw = tick(ft.wall, timers)
    assert sorted(a.reason for a in raw.actions) == ["idle", "max_runtime"]
    # restart on the same boot: DS01 time continues from the mark, the step still uncounted
    again = SteadyClock(clock.mark(), wall=lambda: ft.wall, mono=lambda: ft.mono, boot="b")
    assert again() == pytest.approx(now, abs=0.01)


def test_start_up_finishes_or_undoes_a_half_served_queue_entry(tmp_path):
    from types import SimpleNamespace

    from ds01.services.gpus import GpuService

    store = Store(tmp_path / "state.db")
    removed, events = [], []
    ctx = SimpleNamespace(store=store, clock=lambda: 10.0, config=SimpleNamespace(admin_group="nobody-group"),
                          events=SimpleNamespace(emit=lambda action, **kw: events.append((action, kw))))
    containers = SimpleNamespace(ctx=ctx, remove=lambda actor, who, project, force: removed.append(project))
    gpu = GpuService(containers)
    ids = {}
    for project, status in (("ran", "running"), ("half", "created")):
        qid = store.enqueue(None, 0, "root", project, {}, "img", [], 1.0)
        with store.transaction() as tx:
            rec = store.insert_container(tx, uid=0, user="root", project=project, docker_name=project, image="img",
                                         status=status, created_at=1.0)
            store.mark_serving(tx, qid, rec)
        ids[project] = qid
    assert gpu.recover_serving() == {"queue_finished": 1, "queue_requeued": 1}
    assert [r["id"] for r in store.waiting()] == [ids["half"]] and removed == ["half"]  # undone, waits again
    assert store.serving() == [] and [a for a, _ in events] == ["queue.served"]
    store.end_queued(ids["half"], "cancelled", 11.0)
    store.end_queued(ids["half"], "failed", 12.0, note="late")  # an ended request stays as it ended
    assert store.waiting() == [] and store._query("SELECT status FROM queue WHERE id=?", (ids["half"],))[0][0] == "cancelled"
