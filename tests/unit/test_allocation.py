"""decide(): device choice, precise denials, and properties (no over-allocation, no limit breach)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01.errors import CapacityExhausted, InvalidInput, PolicyDenied
from ds01.gpu.inventory import Inventory
from ds01.gpu.simulated import build_inventory, sim_gpu_uuid as G, sim_mig_uuid as M
from ds01.models.config import Config, SimulatedGpu, SimulatedInventory
from ds01.policy.allocation import Allocation, Denial, GpuRequest, decide, fmt_eq, validate
from ds01.policy.limits import EffectiveLimits, effective_limits

# 4 GPUs; GPU 3 split 3g + 2g + 1g + 1g (the default simulated host).
INV = build_inventory(SimulatedInventory())
BIG = EffectiveLimits(
    **{**dataclasses.asdict(effective_limits(Config(), "x", set())), "max_gpus": 100.0, "max_gpus_per_container": 100.0}
)
DEFAULT = effective_limits(Config(), "x", set())  # max_gpus 1.0, per container 1.0


def lim(**kw) -> EffectiveLimits:
    return dataclasses.replace(BIG, **kw)


# -- selection ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_, held, expected",
    [
        (GpuRequest(), {}, ()),
        (GpuRequest(gpus=1), {}, (G(0),)),
        (GpuRequest(gpus=2), {G(0): "a"}, (G(1), G(2))),
        (GpuRequest(gpus=3), {}, (G(0), G(1), G(2))),
        (GpuRequest(profile="3g.20gb"), {}, (M(3, 0),)),
        (GpuRequest(profile="1g.5gb"), {M(3, 2): "a"}, (M(3, 3),)),
        (GpuRequest(profile="1G.5GB"), {}, (M(3, 2),)),  # case-insensitive
        (GpuRequest(mig=1), {}, (M(3, 2),)),  # smallest fit
        (GpuRequest(mig=2), {}, (M(3, 2), M(3, 3))),
        (GpuRequest(mig=3), {M(3, 2): "a"}, (M(3, 3), M(3, 1), M(3, 0))),
    ],
)
def test_selection(request_, held, expected):
    got = decide(INV, held, request_, BIG, 0.0)
    assert isinstance(got, Allocation), got
    assert got.devices == expected
    assert got.equivalents == pytest.approx(INV.equivalents_of(expected))


def test_mig_requests_pack_onto_the_busier_card():
    inv = build_inventory(
        SimulatedInventory(gpus=[SimulatedGpu(mig=["1g.5gb"] * 7), SimulatedGpu(mig=["1g.5gb"] * 7), SimulatedGpu()])
    )
    # Card 1 already has two instances in use: the next 1g goes there, leaving card 0 whole-free.
    got = decide(inv, {M(1, 0): "a", M(1, 1): "b"}, GpuRequest(profile="1g.5gb"), BIG, 0)
    assert got.devices == (M(1, 2),)
    got = decide(inv, {M(1, 0): "a"}, GpuRequest(mig=2), BIG, 0)
    assert got.devices == (M(1, 1), M(1, 2))
    # Whole-GPU requests never get a MIG-split card.
    assert decide(inv, {}, GpuRequest(gpus=1), BIG, 0).devices == (G(2),)


def test_seven_1g_instances_are_exactly_one_gpu_equivalent():
    inv = build_inventory(SimulatedInventory(gpus=[SimulatedGpu(mig=["1g.5gb"] * 7)]))
    got = decide(inv, {}, GpuRequest(mig=7), lim(max_gpus=1.0, max_gpus_per_container=1.0), 0.0)
    assert isinstance(got, Allocation) and got.equivalents == 1.0


# -- denials ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_, fragment",
    [
        (GpuRequest(gpus=1, mig=1), "only one of --gpus, --gpu-profile and --mig"),
        (GpuRequest(gpus=2, profile="1g.5gb"), "only one of"),
        (GpuRequest(gpus=0), "at least 1 (got 0)"),
        (GpuRequest(gpus=-2), "at least 1 (got -2)"),
        (GpuRequest(gpus=4), "--gpus 4: this host has only 3 whole GPUs"),
        (GpuRequest(gpus=10**9), "only 3 whole GPUs"),
        (GpuRequest(gpus=1.5), "whole number"),
        (GpuRequest(gpus=True), "whole number"),
        (GpuRequest(gpus="2"), "whole number"),
        (GpuRequest(profile="3g.40gb"), "MIG profile 3g.40gb does not exist on this host; available: 1g.5gb, 2g.10gb, 3g.20gb"),
        (GpuRequest(profile="big"), "'big' is not a MIG profile name"),
        (GpuRequest(profile=3), "not a MIG profile name"),
        (GpuRequest(mig=0), "--mig must be at least 1"),
        (GpuRequest(mig=5), "--mig 5: this host has only 4 MIG instances"),
    ],
)
def test_invalid(request_, fragment):
    got = decide(INV, {}, request_, BIG, 0.0)
    assert isinstance(got, Denial) and got.kind == "invalid", got
    assert fragment in got.message
    assert isinstance(got.to_error(), InvalidInput)


def test_invalid_host_shapes():
    no_gpus = Inventory()
    assert "no GPUs" in decide(no_gpus, {}, GpuRequest(gpus=1), BIG, 0).message
    assert isinstance(decide(no_gpus, {}, GpuRequest(), BIG, 0), Allocation)
    all_mig = build_inventory(SimulatedInventory(gpus=[SimulatedGpu(mig=["3g.20gb", "4g.20gb"])]))
    d = decide(all_mig, {}, GpuRequest(gpus=1), BIG, 0)
    assert d.kind == "invalid" and "split into MIG" in d.message and "3g.20gb, 4g.20gb" in d.hint
    no_mig = build_inventory(SimulatedInventory(gpus=[SimulatedGpu()]))
    d = decide(no_mig, {}, GpuRequest(profile="1g.5gb"), BIG, 0)
    assert d.kind == "invalid" and d.message == "this host has no MIG instances"


def test_over_limit_messages():
    d = decide(INV, {}, GpuRequest(gpus=2), lim(max_gpus=2.0, max_gpus_per_container=2.0), 1.0)
    assert d.kind == "over_limit" and d.message == "you hold 1.0 of 2.0 GPU-equivalents; this asks for 2.0"
    assert isinstance(d.to_error(), PolicyDenied)
    d = decide(INV, {}, GpuRequest(gpus=2), DEFAULT, 0.0)
    assert d.kind == "over_limit" and "asks for 2.0 GPU-equivalents in one container; your limit is 1.0" in d.message
    d = decide(INV, {}, GpuRequest(gpus=1), lim(allow_full_gpu=False), 0.0)
    assert d.kind == "over_limit" and "allow_full_gpu: false" in d.message and "--gpu-profile" in d.hint
    d = decide(INV, {}, GpuRequest(mig=1), lim(allow_mig=False), 0.0)
    assert d.kind == "over_limit" and "allow_mig: false" in d.message and "--gpus" in d.hint
    d = decide(INV, {}, GpuRequest(profile="3g.20gb"), lim(max_gpus=0.5), 0.2)
    assert d.message == "you hold 0.2 of 0.5 GPU-equivalents; this asks for 0.43"
    d = decide(INV, {}, GpuRequest(mig=2), lim(max_gpus=0.2), 0.0)
    assert d.message == "you hold 0.0 of 0.2 GPU-equivalents; this asks for at least 0.29"


def test_over_limit_takes_precedence_over_capacity():
    everything = {d.uuid: "other" for d in INV.allocatable}
    d = decide(INV, everything, GpuRequest(gpus=1), DEFAULT, 1.0)
    assert d.kind == "over_limit"
    d = decide(INV, everything, GpuRequest(gpus=1), DEFAULT, 0.0)
    assert d.kind == "capacity" and "0 of 3 free" in d.message and "--queue" in d.hint
    assert isinstance(d.to_error(), CapacityExhausted)


def test_capacity_messages():
    d = decide(INV, {M(3, 0): "a"}, GpuRequest(profile="3g.20gb"), BIG, 0)
    assert d.kind == "capacity" and "3g.20gb MIG instances" in d.message and "0 of 1 free" in d.message
    d = decide(INV, {M(3, 2): "a", M(3, 3): "b", M(3, 1): "c"}, GpuRequest(mig=2), BIG, 0)
    assert d.kind == "capacity" and "1 of 4 free" in d.message


def test_mig_smallest_free_over_quota_is_capacity_not_limit():
    # The two 1g instances are taken; 1 x 1g would fit the limit, but only 2g/3g are free.
    d = decide(INV, {M(3, 2): "a", M(3, 3): "b"}, GpuRequest(mig=1), lim(max_gpus=0.2, max_gpus_per_container=1), 0)
    assert d.kind == "capacity" and "smallest free MIG instances" in d.message


def test_fmt_eq():
    assert [fmt_eq(x) for x in (1, 2.0, 3 / 7, 0.5, 0, 1 / 7)] == ["1.0", "2.0", "0.43", "0.5", "0.0", "0.14"]


def test_request_round_trip_and_describe():
    for r in (GpuRequest(), GpuRequest(gpus=2), GpuRequest(profile="3g.20gb"), GpuRequest(mig=1)):
        assert GpuRequest.from_dict(r.to_dict()) == r
    assert GpuRequest(gpus=1).describe() == "1 whole GPU" and GpuRequest(mig=2).describe() == "2 MIG instances"
    assert validate(INV, GpuRequest(gpus=1)) is None


# -- properties ---------------------------------------------------------------------------------

PROFILES = ["1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"]


@st.composite
def inventories(draw):
    gpus = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            gpus.append(SimulatedGpu())
            continue
        layout, left = [], 7
        while left and draw(st.booleans()):
            p = draw(st.sampled_from([p for p in PROFILES if int(p[0]) <= left]))
            layout.append(p)
            left -= int(p[0])
        gpus.append(SimulatedGpu(mig=layout))
    return build_inventory(SimulatedInventory(gpus=gpus))


requests = st.one_of(
    st.just(GpuRequest()),
    st.builds(GpuRequest, gpus=st.integers(-1, 7)),
    st.builds(GpuRequest, profile=st.sampled_from(PROFILES + ["9g.1gb"])),
    st.builds(GpuRequest, mig=st.integers(-1, 8)),
    st.builds(GpuRequest, gpus=st.integers(1, 2), mig=st.integers(1, 2)),
)
limits_st = st.builds(
    lambda mg, pc, full, mig: lim(max_gpus=mg, max_gpus_per_container=pc, allow_full_gpu=full, allow_mig=mig),
    st.sampled_from([0.0, 1 / 7, 0.5, 1.0, 2.0, 4.0, 100.0]),
    st.sampled_from([0.0, 2 / 7, 1.0, 3.0, 100.0]),
    st.booleans(),
    st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(inv=inventories(), data=st.data(), reqs=st.lists(st.tuples(requests, limits_st), max_size=12))
def test_never_over_allocates_nor_exceeds_limits(inv, data, reqs):
    """Apply a sequence of decisions like the daemon does (each result recorded before the next):
    no device is ever held twice, a MIG parent is never handed out, no user passes a limit."""
    allocatable = {d.uuid for d in inv.allocatable}
    pre = data.draw(st.sets(st.sampled_from(sorted(allocatable))) if allocatable else st.just(set()))
    held = {u: "other" for u in pre}
    holding = 0.0
    for req, limits in reqs:
        got = decide(inv, held, req, limits, holding)
        assert got == decide(inv, dict(held), req, limits, holding)  # deterministic
        if isinstance(got, Denial):
            assert got.kind in ("invalid", "over_limit", "capacity") and got.message
            continue
        assert len(set(got.devices)) == len(got.devices)
        assert not set(got.devices) & set(held), "double allocation"
        assert set(got.devices) <= allocatable
        if req.kind == "gpus":
            assert len(got.devices) == req.gpus and limits.allow_full_gpu
            assert all(inv.by_uuid[u].kind == "gpu" and not inv.by_uuid[u].mig_enabled for u in got.devices)
        elif req.kind in ("profile", "mig"):
            assert limits.allow_mig and all(inv.by_uuid[u].kind == "mig" for u in got.devices)
        if got.devices:  # a no-GPU request adds nothing, whatever the user already holds
            assert got.equivalents <= limits.max_gpus_per_container + 1e-9
            assert holding + got.equivalents <= limits.max_gpus + 1e-9
        holding += got.equivalents
        held.update({u: "me" for u in got.devices})


@settings(max_examples=300, deadline=None)
@given(inv=inventories(), req=requests)
def test_capacity_means_quota_allows_and_empty_host_serves(inv, req):
    """On an empty host with unlimited quota every valid request is served (so 'invalid' is the
    only thing that can never be served by waiting)."""
    got = decide(inv, {}, req, BIG, 0.0)
    if validate(inv, req) is None:
        assert isinstance(got, Allocation)
    else:
        assert got.kind == "invalid"
