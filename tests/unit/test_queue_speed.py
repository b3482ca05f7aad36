"""The fair queue's faster walk (issue 14: 500 queued jobs per tick) decides exactly what the
plain one did: ``decay``, ``order`` and ``next_servable`` against the original, straightforward
versions kept here as the reference, on random hosts, queues, holders and limits."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from ds01.gpu.simulated import build_inventory
from ds01.models.config import Config, SimulatedGpu, SimulatedInventory
from ds01.policy.allocation import Allocation, Denial, GpuRequest, candidates, decide, pick_devices, validate
from ds01.policy.limits import effective_limits
from ds01.policy.queue import QueueEntry, UsageRecord, decay, effective_score, next_servable, order


def ref_decay(records, now, half_life):
    out = {}
    lam = 0.0 if math.isinf(half_life) else math.log(2) / half_life
    for r in records:
        end = now if r.end is None else min(r.end, now)
        start = min(r.start, end)
        if end <= start or r.equivalents <= 0:
            out.setdefault(r.user, 0.0)
            continue
        seconds = end - start if lam == 0.0 else (math.exp(-lam * (now - end)) - math.exp(-lam * (now - start))) / lam
        out[r.user] = out.get(r.user, 0.0) + r.equivalents * seconds / 3600.0
    return out


def ref_order(entries, usage, weights, now, aging):
    return sorted(entries, key=lambda e: (round(effective_score(e, usage, weights, now, aging), 9), e.enqueued_at,
                                          e.seq, e.id))


def ref_next_servable(ordered, inventory, held, limits_for=None):
    taken, reserved, extra, out = set(held), set(), {}, []
    for entry in ordered:
        req = entry.request
        if req.kind == "none" or validate(inventory, req) is not None:
            continue
        blocked = taken | reserved
        if limits_for is not None:
            lim = limits_for(entry)
            if lim is None:
                continue
            limits, holding = lim
            result = decide(inventory, dict.fromkeys(blocked), req, limits, holding + extra.get(entry.user, 0.0))
            if isinstance(result, Denial) and result.kind != "capacity":
                continue
        else:
            picked = pick_devices(inventory, blocked, req)
            result = (Allocation(tuple(d.uuid for d in picked), inventory.equivalents_of([d.uuid for d in picked]))
                      if picked is not None else Denial("capacity", "no"))
        if isinstance(result, Allocation):
            out.append((entry, result))
            taken.update(result.devices)
            extra[entry.user] = extra.get(entry.user, 0.0) + result.equivalents
        else:
            reserved.update(d.uuid for d in candidates(inventory, req) if d.uuid not in taken)
    return out


H100 = dict(name="NVIDIA H100 80GB HBM3", memory="80g")
INV = build_inventory(SimulatedInventory(gpus=[
    SimulatedGpu(**H100), SimulatedGpu(**H100), SimulatedGpu(**H100),
    SimulatedGpu(**H100, mig=["1g.10gb"] * 7),
    SimulatedGpu(**H100, mig=["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]),
    SimulatedGpu(**H100, mig=["4g.40gb", "3g.40gb"])]))
DEVICES = [d.uuid for d in INV.allocatable]
USERS = ["u0", "u1", "u2", "u3"]
CFG = Config.model_validate({"defaults": {"max_gpus": 2, "max_gpus_per_container": 2},
                             "users": {"u1": {"max_gpus": 0.5}, "u2": {"allow_mig": False}}})
LIMITS = {u: effective_limits(CFG, u, set()) for u in USERS}
REQUESTS = [GpuRequest(gpus=1), GpuRequest(gpus=2), GpuRequest(gpus=3), GpuRequest(profile="1g.10gb"),
            GpuRequest(profile="3g.40gb"), GpuRequest(mig=1), GpuRequest(mig=3), GpuRequest(),
            GpuRequest(gpus=True), GpuRequest(gpus=0), GpuRequest(profile="9g.1gb"), GpuRequest(gpus=[1])]

entry_st = st.tuples(st.sampled_from(USERS), st.sampled_from(REQUESTS), st.floats(0, 30_000, allow_nan=False))
record_st = st.tuples(st.sampled_from(USERS), st.floats(0, 20_000), st.one_of(st.none(), st.floats(0, 20_000)),
                      st.sampled_from([0.0, 1 / 7, 3 / 7, 1.0, 2.0]))


@settings(max_examples=1000, deadline=None)
@given(st.lists(entry_st, max_size=40), st.sets(st.sampled_from(DEVICES)), st.lists(record_st, max_size=30),
       st.sampled_from([None, 0.0, 600.0, 3600.0]), st.booleans(),
       st.dictionaries(st.sampled_from(USERS), st.sampled_from([0.0, 0.5, 1.5])))
def test_fast_walk_decides_like_the_plain_one(raw, held, records, aging, with_limits, holding):
    now = 20_000.0
    entries = [QueueEntry(id=f"e{i}", user=u, request=r, enqueued_at=t, seq=i % 5) for i, (u, r, t) in enumerate(raw)]
    usage = [UsageRecord(u, s, e, q) for u, s, e, q in records]
    assert decay(usage, now, 3600.0) == ref_decay(usage, now, 3600.0)
    assert decay(usage, now, math.inf) == ref_decay(usage, now, math.inf)
    scores = ref_decay(usage, now, 3600.0)
    weights = {"u3": 2.0}
    ordered = order(entries, scores, weights, now, aging)
    assert [e.id for e in ordered] == [e.id for e in ref_order(entries, scores, weights, now, aging)]
    held_map = dict.fromkeys(held, "someone")

    def limits_for(e):
        return None if e.user == "u0" and e.seq == 4 else (LIMITS[e.user], holding.get(e.user, 0.0))

    lf = limits_for if with_limits else None
    got = [(e.id, a) for e, a in next_servable(ordered, INV, held_map, lf)]
    assert got == [(e.id, a) for e, a in ref_next_servable(ordered, INV, held_map, lf)]

