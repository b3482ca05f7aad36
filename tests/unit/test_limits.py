"""effective_limits: user override > first matching group > defaults, field by field."""

from __future__ import annotations

from dataclasses import fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01.models.config import DEFAULT_LIMITS, Config, GroupLimits, Limits, parse_config
from ds01.policy.limits import LIMIT_FIELDS, EffectiveLimits, effective_limits, matching_group

CFG = Config(
    defaults=DEFAULT_LIMITS,
    groups=[
        GroupLimits(name="students", unix_group="students", limits=Limits(max_gpus=0.5, allow_full_gpu=False)),
        GroupLimits(name="staff", unix_group="staff", members=["carol"], limits=Limits(max_gpus=4, cpus=16)),
        GroupLimits(name="everyone", unix_group="users", limits=Limits(max_containers=1)),
    ],
    users={"alice": Limits(max_gpus=2.0), "dave": Limits(allow_full_gpu=True)},
)


def test_every_field_resolved_and_keys_match_config():
    lim = effective_limits(Config(), "nobody", set())
    assert set(LIMIT_FIELDS) == set(Limits.model_fields)
    for f in fields(EffectiveLimits):
        if f.name not in ("group", "sources"):
            assert getattr(lim, f.name) is not None
            assert getattr(lim, f.name) == getattr(DEFAULT_LIMITS, f.name)
    assert lim.group is None and set(lim.sources.values()) == {"defaults"}


@pytest.mark.parametrize(
    "user, groups, group, max_gpus, allow_full, cpus, max_containers",
    [
        ("zed", set(), None, 1.0, True, 4, 3),  # defaults
        ("bob", {"students"}, "students", 0.5, False, 4, 3),  # unix group
        ("bob", {"students", "staff"}, "students", 0.5, False, 4, 3),  # first match by config order
        ("bob", {"staff", "students"}, "students", 0.5, False, 4, 3),  # (set order is irrelevant)
        ("carol", set(), "staff", 4.0, True, 16, 3),  # explicit member list
        ("carol", {"users"}, "staff", 4.0, True, 16, 3),  # later groups are not merged in
        ("erin", {"users"}, "everyone", 1.0, True, 4, 1),
        ("alice", {"students"}, "students", 2.0, False, 4, 3),  # user override wins per field
        ("dave", {"students"}, "students", 0.5, True, 4, 3),
    ],
)
def test_precedence_table(user, groups, group, max_gpus, allow_full, cpus, max_containers):
    lim = effective_limits(CFG, user, groups)
    assert lim.group == group
    assert (lim.max_gpus, lim.allow_full_gpu, lim.cpus, lim.max_containers) == (
        max_gpus,
        allow_full,
        cpus,
        max_containers,
    )


def test_sources_say_where_each_value_came_from():
    lim = effective_limits(CFG, "alice", {"students"})
    assert lim.sources["max_gpus"] == "user"
    assert lim.sources["allow_full_gpu"] == "group:students"
    assert lim.sources["cpus"] == "defaults"
    assert lim.to_dict()["group"] == "students"


def test_from_yaml_with_human_units():
    cfg = parse_config(
        """
groups:
  - name: gpu-lab
    unix_group: lab
    limits: {max_runtime: 30m, memory: 32g, gpu_hold_after_stop: 1h}
users:
  frank: {idle_timeout: 90s}
"""
    )
    lim = effective_limits(cfg, "frank", {"lab"})
    assert lim.max_runtime == 1800 and lim.memory == 32 * 1024**3 and lim.gpu_hold_after_stop == 3600
    assert lim.idle_timeout == 90 and lim.group == "gpu-lab"


def test_matching_group_none_without_unix_group():
    cfg = Config(groups=[GroupLimits(name="x", members=["a"])])
    assert matching_group(cfg, "b", {"x"}) is None  # a group name is not a unix group
    assert matching_group(cfg, "a", set()).name == "x"


limit_values = st.fixed_dictionaries(
    {},
    optional={
        "max_gpus": st.floats(0, 8),
        "allow_full_gpu": st.booleans(),
        "cpus": st.floats(0.5, 64),
        "max_containers": st.integers(0, 10),
    },
).map(lambda d: Limits(**d))


@settings(max_examples=200, deadline=None)
@given(
    defaults=limit_values,
    group_limits=st.lists(limit_values, max_size=3),
    user_limits=st.none() | limit_values,
    member_of=st.sets(st.integers(0, 2)),
)
def test_precedence_property(defaults, group_limits, user_limits, member_of):
    base = DEFAULT_LIMITS.model_copy(update={k: v for k, v in defaults.model_dump().items() if v is not None})
    groups = [GroupLimits(name=f"g{i}", unix_group=f"u{i}", limits=gl) for i, gl in enumerate(group_limits)]
    cfg = Config(defaults=base, groups=groups, users={"u": user_limits} if user_limits else {})
    unix = {f"u{i}" for i in member_of}
    lim = effective_limits(cfg, "u", unix)
    first = next((g for g in groups if g.unix_group in unix), None)
    assert lim.group == (first.name if first else None)
    for name in LIMIT_FIELDS:
        expected = getattr(base, name)
        if first is not None and getattr(first.limits, name) is not None:
            expected = getattr(first.limits, name)
        if user_limits is not None and getattr(user_limits, name) is not None:
            expected = getattr(user_limits, name)
        assert getattr(lim, name) == expected
