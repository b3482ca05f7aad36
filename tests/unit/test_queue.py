"""Fair-share queue: decay, scores, order (FIFO ties, aging), head-of-line reservation, liveness."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01.gpu.simulated import build_inventory, sim_gpu_uuid as G, sim_mig_uuid as M
from ds01.models.config import Config, SimulatedGpu, SimulatedInventory
from ds01.policy.allocation import GpuRequest, validate
from ds01.policy.limits import effective_limits
from ds01.policy.queue import (
    QueueEntry,
    UsageRecord,
    decay,
    effective_score,
    fair_share_score,
    next_servable,
    order,
)

H = 3600.0
DAY = 86400.0
INV = build_inventory(SimulatedInventory())  # GPUs 0-2 whole; GPU 3 = 3g + 2g + 1g + 1g


def E(id_: str, user: str, t: float, seq: int = 0, **req) -> QueueEntry:
    return QueueEntry(id=id_, user=user, request=GpuRequest(**req), enqueued_at=t, seq=seq)


# -- decay / score ------------------------------------------------------------------------------


def test_decay_without_half_life_is_plain_gpu_hours():
    recs = [UsageRecord("a", 0, 2 * H, 1.0), UsageRecord("a", 0, H, 3 / 7), UsageRecord("b", 0, None, 2.0)]
    got = decay(recs, now=4 * H, half_life=math.inf)
    assert got["a"] == pytest.approx(2 + 3 / 7) and got["b"] == pytest.approx(8.0)


def test_decay_halves_per_half_life_and_matches_numeric_integral():
    one_hour_now = decay([UsageRecord("a", 0, H, 1.0)], now=H, half_life=7 * DAY)["a"]
    one_hour_week_ago = decay([UsageRecord("a", 0, H, 1.0)], now=H + 7 * DAY, half_life=7 * DAY)["a"]
    assert one_hour_week_ago == pytest.approx(one_hour_now / 2)
    # Exact integral vs a fine Riemann sum.
    hl, now, s, e = 2 * H, 10 * H, 1 * H, 5 * H
    steps = 20000
    dt = (e - s) / steps
    numeric = sum(2 ** (-(now - (s + (i + 0.5) * dt)) / hl) * dt for i in range(steps)) / H
    assert decay([UsageRecord("u", s, e, 1.0)], now, hl)["u"] == pytest.approx(numeric, rel=1e-6)


def test_decay_clips_to_now_and_ignores_future_and_empty():
    got = decay(
        [UsageRecord("a", 0, 10 * H, 1.0), UsageRecord("b", 5 * H, 6 * H, 1.0), UsageRecord("c", 0, H, 0.0)],
        now=2 * H,
        half_life=math.inf,
    )
    assert got == {"a": pytest.approx(2.0), "b": 0.0, "c": 0.0}
    with pytest.raises(ValueError):
        decay([], 0, 0)


def test_fair_share_score():
    assert fair_share_score(10, 2.0) == 5.0 and fair_share_score(-1, 1) == 0.0
    with pytest.raises(ValueError):
        fair_share_score(1, 0)


# -- order --------------------------------------------------------------------------------------


def test_order_lower_score_first_fifo_on_ties():
    entries = [E("1", "heavy", 0, gpus=1), E("2", "light", 10, gpus=1), E("3", "new", 20, gpus=1), E("4", "new", 20, 1, gpus=1)]
    usage = {"heavy": 10.0, "light": 1.0}
    got = order(entries, usage, {}, now=30, aging=None)
    assert [e.id for e in got] == ["3", "4", "2", "1"]
    # A higher weight halves the heavy user's score: now ties with light -> FIFO puts heavy first.
    got = order(entries, usage, {"heavy": 10.0}, now=30, aging=None)
    assert [e.id for e in got] == ["3", "4", "1", "2"]


def test_aging_lets_an_old_request_overtake():
    old, fresh = E("old", "heavy", 0, gpus=1), E("fresh", "light", 100 * H, gpus=1)
    usage = {"heavy": 5.0, "light": 0.0}
    assert [e.id for e in order([old, fresh], usage, {}, now=100 * H, aging=None)] == ["fresh", "old"]
    # One GPU-hour forgiven per 10 waited hours: 100 h of waiting outweighs 5 GPU-hours.
    assert [e.id for e in order([old, fresh], usage, {}, now=100 * H, aging=10 * H)] == ["old", "fresh"]
    assert effective_score(old, usage, {}, 100 * H, 10 * H) == pytest.approx(5 - 10)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abcd"), st.integers(0, 100), st.integers(1, 3)),
        min_size=1,
        max_size=15,
    ),
    st.dictionaries(st.sampled_from("abcd"), st.floats(0, 50)),
    st.dictionaries(st.sampled_from("abcd"), st.floats(0.1, 10)),
    st.none() | st.floats(1, 1e6),
    st.randoms(),
)
def test_order_is_deterministic_and_sorted(raw, usage, weights, aging, rnd):
    entries = [E(f"e{i}", u, t, i, gpus=g) for i, (u, t, g) in enumerate(raw)]
    got = order(entries, usage, weights, now=200, aging=aging)
    shuffled = list(entries)
    rnd.shuffle(shuffled)
    assert order(shuffled, usage, weights, now=200, aging=aging) == got
    keys = [round(effective_score(e, usage, weights, 200, aging), 9) for e in got]
    assert keys == sorted(keys)
    for a, b in zip(got, got[1:]):
        if round(effective_score(a, usage, weights, 200, aging), 9) == round(effective_score(b, usage, weights, 200, aging), 9):
            assert (a.enqueued_at, a.seq) <= (b.enqueued_at, b.seq)  # FIFO on ties


# -- next_servable ------------------------------------------------------------------------------


def test_head_reserves_free_gpus_small_requests_use_the_rest():
    held = {G(0): "x"}
    queue = [E("big", "a", 0, gpus=3), E("small", "b", 1, gpus=1), E("mig", "c", 2, mig=1)]
    got = next_servable(queue, INV, held)
    # The head cannot start (2 of 3 GPUs free) and keeps GPUs 1-2; the MIG request can start.
    assert [(e.id, a.devices) for e, a in got] == [("mig", (M(3, 2),))]
    # Once GPU 0 frees, the head goes first.
    got = next_servable(queue, INV, {})
    assert [(e.id, a.devices) for e, a in got] == [("big", (G(0), G(1), G(2))), ("mig", (M(3, 2),))]


def test_serves_several_without_overlap_and_skips_invalid():
    queue = [
        E("a", "u1", 0, gpus=1),
        E("b", "u2", 1, profile="1g.5gb"),
        E("c", "u3", 2, profile="1g.5gb"),
        E("d", "u4", 3, profile="1g.5gb"),  # only two 1g exist: blocked, reserves nothing free
        E("e", "u5", 4, profile="9g.99gb"),  # invalid here: skipped
        E("f", "u6", 5, mig=1),  # may take 2g (the 1g ones are gone)
        E("g", "u7", 6, gpus=2),
    ]
    got = next_servable(queue, INV, {})
    assert [(e.id, a.devices) for e, a in got] == [
        ("a", (G(0),)),
        ("b", (M(3, 2),)),
        ("c", (M(3, 3),)),
        ("f", (M(3, 1),)),
        ("g", (G(1), G(2))),
    ]


def test_limits_for_rechecks_quota_and_counts_earlier_grants():
    cfg = Config()
    lim = effective_limits(cfg, "u", set())  # max_gpus 1.0
    queue = [E("1", "u", 0, gpus=1), E("2", "u", 1, gpus=1), E("3", "v", 2, gpus=1)]
    got = next_servable(queue, INV, {}, limits_for=lambda e: (lim, 0.0))
    # u's second request would take u to 2.0 of 1.0: skipped without reserving; v gets GPU 1.
    assert [(e.id, a.devices) for e, a in got] == [("1", (G(0),)), ("3", (G(1),))]
    got = next_servable(queue, INV, {}, limits_for=lambda e: None if e.user == "u" else (lim, 0.0))
    assert [e.id for e, _ in got] == ["3"]


def test_aging_prevents_starvation_under_a_stream_of_small_jobs():
    """A heavy user's 3-GPU request vs. a new light user's 1-GPU request every tick, with one GPU
    freeing per tick. Reservation alone is not enough if new arrivals keep sorting ahead; aging
    brings the old request to the head, and reservation then holds GPUs until it fits."""
    tick = H

    def run(aging):
        running: list[tuple[float, str]] = [(1 * tick, G(0)), (2 * tick, G(1)), (3 * tick, G(2))]
        queue = [E("big", "heavy", 0, gpus=3)]
        usage = {"heavy": 50.0}
        for n in range(1, 200):
            now = n * tick
            running = [(end, u) for end, u in running if end > now]
            queue.append(E(f"s{n}", f"light{n}", now, n, gpus=1))
            held = {u: "x" for _, u in running}
            for e, a in next_servable(order(queue, usage, {}, now, aging), INV, held):
                if e.id == "big":
                    return n
                queue.remove(e)
                running += [(now + 3 * tick, u) for u in a.devices]
        return None

    assert run(aging=None) is None  # starves
    served_at = run(aging=2 * tick)
    assert served_at is not None and served_at < 150


@st.composite
def scenario(draw):
    gpus = []
    for _ in range(draw(st.integers(1, 4))):
        gpus.append(SimulatedGpu(mig=draw(st.sampled_from([None, ["3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"], ["4g.20gb", "3g.20gb"]]))))
    inv = build_inventory(SimulatedInventory(gpus=gpus))
    reqs = st.one_of(
        st.builds(GpuRequest, gpus=st.integers(1, 4)),
        st.builds(GpuRequest, profile=st.sampled_from(["1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb"])),
        st.builds(GpuRequest, mig=st.integers(1, 5)),
    )
    entries = []
    for i, r in enumerate(draw(st.lists(reqs, min_size=1, max_size=12))):
        if validate(inv, r) is None:
            entries.append(QueueEntry(f"q{i}", draw(st.sampled_from("abc")), r, draw(st.integers(0, 50)), i))
    allocatable = sorted(d.uuid for d in inv.allocatable)
    held = draw(st.sets(st.sampled_from(allocatable))) if allocatable else set()
    usage = draw(st.dictionaries(st.sampled_from("abc"), st.floats(0, 20)))
    return inv, entries, held, usage


@settings(max_examples=300, deadline=None)
@given(scenario(), st.sampled_from([None, 600.0]))
def test_every_queued_request_is_eventually_served(sc, aging):
    """Capacity frees (running containers end one round after starting); nothing bypasses the
    queue. Every valid entry is served, grants never overlap each other or what is held."""
    inv, queue, held_set, usage = sc
    held = {u: "pre" for u in held_set}
    now = 100.0
    waiting = list(queue)
    for _ in range(2 * len(queue) + 2):
        if not waiting:
            break
        got = next_servable(order(waiting, usage, {}, now, aging), inv, held)
        granted = [u for _, a in got for u in a.devices]
        assert len(granted) == len(set(granted)) and not set(granted) & set(held)
        for e, a in got:
            assert len(a.devices) == (e.request.gpus or e.request.mig or 1)
            waiting.remove(e)
        # Everything that was running ends; what was just granted runs for one round.
        held = {u: "run" for u in granted}
        now += 60
    assert waiting == []
