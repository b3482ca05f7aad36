"""Prometheus metrics: families present with pre-created labels, live counters from events, and a
scrape with 100 containers well under 50 ms. Also: who-uses-what PID → container mapping and
event-log rotation."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client import generate_latest

from ds01.services.events import EventLog
from ds01.daemon.metrics import CONTAINER_STATES, Metrics
from ds01.gpu.simulated import SimulatedSource, sim_gpu_uuid, sim_mig_uuid
from ds01.models.config import Config
from ds01.services.status import container_id_of_pid
from ds01.state.db import Store

FAMILIES = {
    "ds01_up", "ds01_build_info", "ds01_gpu_device_info", "ds01_gpu_allocated", "ds01_gpu_device_equivalents",
    "ds01_gpu_utilization_percent", "ds01_gpu_memory_used_bytes", "ds01_gpu_memory_total_bytes",
    "ds01_gpu_held_seconds", "ds01_gpu_holder_info", "ds01_gpu_total_equivalents", "ds01_gpu_allocated_equivalents",
    "ds01_gpu_free_equivalents", "ds01_user_gpu_equivalents", "ds01_containers", "ds01_queue_length",
    "ds01_queue_oldest_wait_seconds", "ds01_queue_wait_seconds", "ds01_lifecycle_actions",
    "ds01_api_request_duration_seconds", "ds01_api_requests", "ds01_image_build_duration_seconds", "ds01_denials",
}


def make_ctx(tmp_path: Path, n_containers: int = 0):
    store = Store(tmp_path / "state.db")
    events = EventLog(tmp_path / "events.jsonl", store)
    src = SimulatedSource()
    inv = src.read()
    ctx = SimpleNamespace(config=Config(), store=store, events=events, gpu_source=src, inventory=inv,
                          instance="t", clock=time.time)
    now = time.time()
    devices = [d.uuid for d in inv.allocatable]
    for i in range(n_containers):
        status = ("running", "exited", "created")[i % 3]
        rid = store.insert_container(uid=1000 + i % 10, user=f"user{i % 10}", project=f"p{i}", docker_id=f"{i:064x}",
                                     docker_name=f"c{i}", image="img", status=status, created_at=now - 3600)
        if i < len(devices):
            store._execute("INSERT INTO allocations (container, uid, user, project, device, equivalents, start)"
                          " VALUES (?,?,?,?,?,?,?)", (rid, 1000 + i % 10, f"user{i % 10}", f"p{i}", devices[i],
                                                      inv.device(devices[i]).equivalents, now - 600))
    for i in range(5):
        store._execute("INSERT INTO queue (uid, user, project, request, image, enqueued_at, status)"
                      " VALUES (?,?,?,?,?,?,'waiting')", (2000 + i, f"q{i}", "p", "{}", "img", now - 60 * (i + 1)))
    return ctx


def scrape(m: Metrics) -> dict:
    text = generate_latest(m.registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_every_family_is_present_with_precreated_labels(tmp_path):
    ctx = make_ctx(tmp_path, 10)
    m = Metrics(SimpleNamespace(ctx=ctx))
    fams = scrape(m)
    assert FAMILIES <= set(fams), FAMILIES - set(fams)
    states = {s.labels["state"]: s.value for s in fams["ds01_containers"].samples}
    assert set(states) == set(CONTAINER_STATES)
    assert states["creating"] == 0 and states["running"] == 4
    alloc = {s.labels["uuid"]: s.value for s in fams["ds01_gpu_allocated"].samples}
    assert set(alloc) == {d.uuid for d in ctx.inventory.allocatable}  # every device, held or not
    assert all(v == 1 for v in alloc.values())  # 10 containers hold all 7 allocatable devices
    assert fams["ds01_queue_length"].samples[0].value == 5
    assert fams["ds01_queue_oldest_wait_seconds"].samples[0].value >= 299
    lc = {(s.labels["action"], s.labels["reason"]) for s in fams["ds01_lifecycle_actions"].samples}
    assert ("lifecycle.stop", "idle_timeout") in lc and ("lifecycle.stop", "max_runtime") in lc
    free = fams["ds01_gpu_free_equivalents"].samples[0].value
    assert free == pytest.approx(0.0, abs=1e-9)
    users = {s.labels["user"]: s.value for s in fams["ds01_user_gpu_equivalents"].samples}
    assert sum(users.values()) == pytest.approx(ctx.inventory.total_equivalents)


def test_utilization_nan_for_mig_and_values_for_gpus(tmp_path):
    ctx = make_ctx(tmp_path)
    ctx.gpu_source.set_utilization(sim_gpu_uuid(1), 87.5, 1024)
    ctx.gpu_source.set_utilization(sim_mig_uuid(3, 0), None, None)
    fams = scrape(Metrics(SimpleNamespace(ctx=ctx)))
    util = {s.labels["uuid"]: s.value for s in fams["ds01_gpu_utilization_percent"].samples}
    assert util[sim_gpu_uuid(1)] == 87.5
    assert util[sim_mig_uuid(3, 0)] != util[sim_mig_uuid(3, 0)]  # NaN: no holes, no fake zero


def test_events_feed_lifecycle_queue_wait_and_build_metrics(tmp_path):
    ctx = make_ctx(tmp_path)
    ctx.events.emit("lifecycle.stop", user="a", uid=1, target="p", reason="idle_timeout")
    m = Metrics(SimpleNamespace(ctx=ctx))  # seeded from the DB history: survives restarts
    ctx.events.listeners.append(m.on_event)
    ctx.events.emit("lifecycle.stop", user="a", uid=1, target="p", reason="idle_timeout")
    ctx.events.emit("queue.served", user="a", uid=1, target="p", data={"waited_s": 42.0})
    ctx.events.emit("image.build", user="a", uid=1, target="p", data={"seconds": 12.5, "up_to_date": False})
    ctx.events.emit("container.create", user="a", uid=1, target="p", result="denied", reason="policy_denied")
    fams = scrape(m)
    lc = {(s.labels["action"], s.labels["reason"]): s.value for s in fams["ds01_lifecycle_actions"].samples}
    assert lc[("lifecycle.stop", "idle_timeout")] == 2
    qw = {s.name: s.value for s in fams["ds01_queue_wait_seconds"].samples if not s.labels.get("le")}
    assert qw["ds01_queue_wait_seconds_count"] == 1 and qw["ds01_queue_wait_seconds_sum"] == 42
    b = [s for s in fams["ds01_image_build_duration_seconds"].samples
         if s.name.endswith("_count") and s.labels["cached"] == "false"]
    assert b[0].value == 1
    d = {s.labels["reason"]: s.value for s in fams["ds01_denials"].samples}
    assert d["policy_denied"] == 1


def test_scrape_with_100_containers_has_every_device_and_state(tmp_path):
    """(Cost is measured by bench/bench_metrics.py, not asserted here.)"""
    ctx = make_ctx(tmp_path, 100)
    fams = scrape(Metrics(SimpleNamespace(ctx=ctx)))
    assert sum(s.value for s in fams["ds01_containers"].samples) == 100
    assert len(fams["ds01_gpu_allocated"].samples) == len(ctx.inventory.allocatable)


def test_pid_to_container_from_cgroup(tmp_path):
    cid = "ab" * 32
    for pid, text in {
        10: f"0::/system.slice/docker-{cid}.scope\n",                   # cgroup v2, systemd driver
        11: f"12:memory:/docker/{cid}\n4:pids:/docker/{cid}\n",         # cgroup v1, cgroupfs
        12: "0::/user.slice/user-1000.slice/session-3.scope\n",          # a host process
    }.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cgroup").write_text(text)
    assert container_id_of_pid(10, tmp_path) == cid
    assert container_id_of_pid(11, tmp_path) == cid
    assert container_id_of_pid(12, tmp_path) is None
    assert container_id_of_pid(99, tmp_path) is None  # exited


def test_event_log_rotation_keeps_generations(tmp_path):
    store = Store(tmp_path / "state.db")
    log = EventLog(tmp_path / "events.jsonl", store, max_bytes=300, keep=3)
    for i in range(60):
        log.emit("container.start", user="u", uid=1, target=f"p{i}")
    names = sorted(p.name for p in tmp_path.glob("events.jsonl*"))
    assert names == ["events.jsonl", "events.jsonl.1", "events.jsonl.2", "events.jsonl.3"]
    assert (tmp_path / "events.jsonl").stat().st_size < 300 + 200
    # the DB keeps the full history regardless of rotation
    assert len(store.events(limit=1000)) == 60
