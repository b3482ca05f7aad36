"""Lifecycle decisions (pure): table tests and hypothesis properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01.models.config import IdleThresholds
from ds01.policy.lifecycle import Facts, History, Policy, Sample, Timers, decide, is_idle

T = 100.0  # idle timeout
R = 1000.0  # max runtime
THR = IdleThresholds(gpu_percent=5, cpu_percent=5, processes=None)


def S(t: float, cpu: float | None = 0.0, gpu: float | None = 0.0, procs: int | None = 0, start: float | None = None,
      net: float | None = None) -> Sample:
    return Sample(start=t - 1 if start is None else start, time=t, cpu_percent=cpu, gpu_percent=gpu, processes=procs,
                  net_bytes_per_s=net)


def P(**kw) -> Policy:
    base = dict(idle_timeout=T, max_runtime=0.0, thresholds=THR, startup_grace=0.0, max_late_notice=600.0)
    base.update(kw)
    return Policy(**base)


RUN = Facts(status="running", created_at=0.0, started_at=0.0)


# -- is_idle -------------------------------------------------------------------------------
@pytest.mark.parametrize("sample,thr,idle", [
    (S(1), THR, True),
    (S(1, cpu=5.0), THR, True),  # at the threshold is idle
    (S(1, cpu=5.1), THR, False),
    (S(1, cpu=None), THR, False),  # unknown CPU never counts as idle
    (S(1, gpu=50), THR, False),
    (S(1, gpu=None), THR, True),  # MIG: no per-instance figure -> judged on the other signals
    (S(1, procs=3), THR, True),  # process signal off by default
    (S(1, procs=3), IdleThresholds(processes=0), False),
    (S(1, procs=None), IdleThresholds(processes=0), False),
    (S(1, procs=0), IdleThresholds(processes=0), True),
    (S(1, cpu=90), IdleThresholds(cpu_percent=None), True),  # signal switched off
    (S(1, net=1e6), IdleThresholds(network_bytes_per_s=1e3), False),
    (S(1, net=None), IdleThresholds(network_bytes_per_s=1e3), True),
])
def test_is_idle(sample, thr, idle):
    assert is_idle(sample, thr) is idle


# -- table: one decision -------------------------------------------------------------------
def kinds(d):
    return [(a.kind, a.reason, a.level) for a in d.actions]


@pytest.mark.parametrize("name,timers,sample,policy,now,expect,idle_since", [
    ("first idle sample starts the episode at its interval start",
     Timers(run_started=0.0), S(10, start=0), P(), 10, [], 0.0),
    ("busy sample ends the episode and its warnings",
     Timers(run_started=0.0, idle_since=0, idle_warned=1, idle_warned_at=80), S(90, cpu=50), P(), 90, [], None),
    ("80 % -> first warning",
     Timers(run_started=0.0, idle_since=0.0), S(80), P(), 80, [("warn", "idle", 1)], 0.0),
    ("95 % -> second warning",
     Timers(run_started=0.0, idle_since=0.0, idle_warned=1, idle_warned_at=80), S(95), P(), 95,
     [("warn", "idle", 2)], 0.0),
    ("timeout with both warnings -> stop",
     Timers(run_started=0.0, idle_since=0.0, idle_warned=2, idle_warned_at=95), S(100), P(), 100,
     [("stop", "idle", 0)], 0.0),
    ("timeout passed while nobody warned (daemon down): warn, do not stop yet",
     Timers(run_started=0.0, idle_since=0.0), S(300, start=10), P(), 300, [("warn", "idle", 2)], 0.0),
    ("late warning is followed by a notice, not an instant stop",
     Timers(run_started=0.0, idle_since=0.0, idle_warned=2, idle_warned_at=300), S(302), P(), 302, [], 0.0),
    ("... and the stop comes after the notice",
     Timers(run_started=0.0, idle_since=0.0, idle_warned=2, idle_warned_at=300), S(305), P(), 305,
     [("stop", "idle", 0)], 0.0),
    ("start-up grace: idle time in the grace period does not count",
     Timers(run_started=0.0, idle_since=0.0), S(100), P(startup_grace=50), 100, [], 0.0),
    ("grace: warning at grace + 80 %",
     Timers(run_started=0.0, idle_since=0.0), S(130), P(startup_grace=50), 130, [("warn", "idle", 1)], 0.0),
    ("keepalive: idle time during it does not count",
     Timers(run_started=0.0, idle_since=0.0, keepalive_until=200), S(250), P(), 250, [], 0.0),
    ("keepalive over: counts again from its end",
     Timers(run_started=0.0, idle_since=0.0, keepalive_until=200), S(280), P(), 280, [("warn", "idle", 1)], 0.0),
    ("busy machine shrinks the timeout of GPU holders",
     Timers(run_started=0.0, idle_since=0.0), S(40), P(machine_busy=True, busy_factor=0.5), 40,
     [("warn", "idle", 1)], 0.0),
    ("... but not of CPU-only containers",
     Timers(run_started=0.0, idle_since=0.0), S(40), P(machine_busy=True, busy_factor=0.5), 40, [], 0.0),
    ("idle exemption: nothing happens",
     Timers(run_started=0.0, idle_since=0.0), S(500), P(idle_exempt_until=1000), 500, [], 0.0),
    ("idle timeout 0 = off",
     Timers(run_started=0.0, idle_since=0.0), S(5000), P(idle_timeout=0), 5000, [], 0.0),
    ("a new run resets the timers",
     Timers(run_started=-500.0, idle_since=-500.0, idle_warned=2, idle_warned_at=-410), S(10, start=0), P(), 10,
     [], 0.0),
])
def test_idle_table(name, timers, sample, policy, now, expect, idle_since):
    holds = "CPU-only" not in name
    facts = Facts(status="running", created_at=0.0, started_at=0.0, holds_gpus=holds)
    d = decide(History(facts, timers, (sample,)), policy, now)
    assert kinds(d) == expect, name
    assert d.timers.idle_since == idle_since, name


@pytest.mark.parametrize("now,warned,warned_at,expect", [
    (700, 0, None, []),
    (750, 0, None, [("warn", "max_runtime", 1)]),
    (900, 1, 750, [("warn", "max_runtime", 2)]),
    (999, 2, 900, []),
    (1000, 2, 900, [("stop", "max_runtime", 0)]),
    (5000, 0, None, [("warn", "max_runtime", 2)]),  # daemon was down: warn first
    (5000 + 99, 2, 5000, []),
    (5000 + 100, 2, 5000, [("stop", "max_runtime", 0)]),  # notice = min(10 % of R, cap)
])
def test_runtime_table(now, warned, warned_at, expect):
    t = Timers(run_started=0.0, runtime_warned=warned, runtime_warned_at=warned_at)
    d = decide(History(RUN, t, (S(now, cpu=100),)), P(max_runtime=R), now)
    assert kinds(d) == expect


def test_runtime_exemption_and_keepalive():
    t = Timers(run_started=0.0)
    assert kinds(decide(History(RUN, t, (S(2000, cpu=100),)), P(max_runtime=R, runtime_exempt_until=3000), 2000)) == []
    # keepalive does not postpone the maximum runtime
    t = Timers(run_started=0.0, runtime_warned=2, runtime_warned_at=900, keepalive_until=5000)
    assert kinds(decide(History(RUN, t, (S(1000, cpu=100),)), P(max_runtime=R), 1000)) == [("stop", "max_runtime", 0)]


@pytest.mark.parametrize("facts,policy,now,expect,due", [
    (Facts("created", created_at=0.0), P(never_started_timeout=60), 59, [], 60),
    (Facts("created", created_at=0.0), P(never_started_timeout=60), 60, [("remove", "never_started", 0)], None),
    (Facts("created", created_at=0.0), P(never_started_timeout=0), 1e9, [], None),
    (Facts("exited", created_at=0.0, started_at=1, stopped_at=10), P(container_hold_after_stop=100), 50, [], 110),
    (Facts("exited", created_at=0.0, started_at=1, stopped_at=10), P(container_hold_after_stop=100), 110,
     [("remove", "stopped", 0)], None),
    (Facts("exited", created_at=0.0, started_at=1, stopped_at=10), P(container_hold_after_stop=0), 1e9, [], None),
])
def test_cleanup_table(facts, policy, now, expect, due):
    d = decide(History(facts), policy, now)
    assert kinds(d) == expect
    assert d.next_due == due


def test_next_due_points_at_the_next_warning_and_the_stop():
    d = decide(History(RUN, Timers(run_started=0.0), (S(10, start=0),)), P(), 10)
    assert d.next_due == pytest.approx(80)
    d = decide(History(RUN, Timers(run_started=0.0, idle_since=0, idle_warned=2, idle_warned_at=95), (S(96),)), P(), 96)
    assert d.next_due == pytest.approx(100)


def test_evidence_travels_with_the_stop():
    samples = tuple(S(t) for t in (96, 97, 98, 99, 100))
    d = decide(History(RUN, Timers(run_started=0.0, idle_since=0, idle_warned=2, idle_warned_at=95), samples), P(), 100)
    (a,) = d.actions
    assert a.kind == "stop" and len(a.detail["samples"]) == 5 and a.detail["idle_since"] == 0


# -- properties: simulate a container over regular ticks -------------------------------------
def simulate(busy_until: float, interval: float, timeout: float, horizon: float, down: tuple[float, float] | None = None,
             keepalive: tuple[float, float] | None = None):
    """A container busy until ``busy_until`` then idle; ticks every ``interval`` (none while the
    daemon is ``down``); timers carried across ticks like the DB does. Returns (events, stop time)."""
    p = P(idle_timeout=timeout)
    timers = Timers()
    events = []
    last = 0.0
    t = interval
    while t <= horizon:
        if down and down[0] <= t < down[1]:
            t += interval
            continue
        if keepalive and keepalive[0] <= t and timers.keepalive_until is None:
            from dataclasses import replace

            timers = replace(timers, keepalive_until=keepalive[0] + keepalive[1], idle_warned=0, idle_warned_at=None)
        # the CPU average over [last, t]: busy if any of it was before busy_until
        cpu = 100.0 if last < busy_until else 0.0
        d = decide(History(RUN, timers, (S(t, cpu=cpu, start=last),)), p, t)
        timers = d.timers
        last = t
        for a in d.actions:
            events.append((t, a.kind, a.level))
            if a.kind == "stop":
                return events, t
        # the daemon wakes early for a deadline before the next regular tick (daemon/loops.py)
        t = min(t + interval, d.next_due) if d.next_due is not None and d.next_due > t else t + interval
    return events, None


@given(busy=st.floats(0, 200), interval=st.floats(0.5, 20), timeout=st.floats(30, 500))
def test_idle_container_is_stopped_within_one_interval_after_the_timeout_with_two_warnings(busy, interval, timeout):
    events, stop = simulate(busy, interval, timeout, horizon=busy + timeout + 10 * interval + 1000)
    assert stop is not None
    # never before the timeout after it went idle; at most one interval late (the first fully
    # idle sample), since the daemon wakes at each warning point and at the deadline
    assert stop >= busy + timeout - 1e-6
    assert stop <= busy + timeout + interval + 1e-6
    warns = [e for e in events if e[1] == "warn"]
    assert [w[2] for w in warns] == [1, 2]
    assert warns[1][0] <= stop - 0.05 * timeout + 1e-6  # the second warning is a real notice


@given(busy=st.floats(0, 200), interval=st.floats(0.5, 10), timeout=st.floats(50, 500),
       down_at=st.floats(0, 600), down_for=st.floats(0, 1000))
def test_restart_gives_no_free_time_and_no_instant_kill(busy, interval, timeout, down_at, down_for):
    events, stop = simulate(busy, interval, timeout, horizon=5000, down=(down_at, down_at + down_for))
    assert stop is not None
    up = down_at + down_for
    # no free time: stopped at the first tick it may be (a late warning adds at most 5 % of the timeout)
    # (a sample that spans the downtime and some busy time is busy: then idleness is only known
    # from the restart on)
    detect = (max(busy, up) if busy > down_at - interval else busy) + interval
    assert stop <= max(detect + timeout, up + interval + 0.05 * timeout) + 1e-6
    # no instant kill: the last warning came at least the notice before the stop
    last_warn = max(t for t, k, _ in events if k == "warn")
    assert stop - last_warn >= 0.05 * timeout - 1e-6 or stop >= busy + timeout
    assert stop >= busy + timeout - 1e-6


@given(busy=st.floats(0, 100), k_at=st.floats(0, 300), k_for=st.floats(1, 300))
def test_keepalive_postpones_by_its_length(busy, k_at, k_for):
    _, stop = simulate(busy, 1.0, 100.0, horizon=3000, keepalive=(k_at, k_for))
    assert stop is not None
    assert stop >= k_at + k_for + 100.0 - 1e-6 or stop < k_at + 1.0


@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 100)), min_size=1, max_size=40))
def test_never_stopped_as_idle_while_a_signal_is_busy(series):
    timers, t = Timers(), 0.0
    for cpu, gpu in series:
        t += 10
        d = decide(History(RUN, timers, (S(t, cpu=cpu, gpu=gpu, start=t - 10),)), P(idle_timeout=15), t)
        if cpu > 5 or gpu > 5:
            assert not any(a.kind == "stop" for a in d.actions)
            assert d.timers.idle_since is None
        timers = d.timers
    assert math.isfinite(t)
