"""policy.jobs (issue 14): the job state machine, --array / --time / --env parsing, dependency
verdicts, how an end is classified, and the job container's spec."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01.errors import InvalidInput
from ds01.policy import jobs as P


# -- states -------------------------------------------------------------------------------
@pytest.mark.parametrize("old, new, allowed", [
    ("queued", "starting", True), ("queued", "cancelled", True), ("queued", "failed", True),
    ("queued", "running", False), ("queued", "succeeded", False),
    ("starting", "running", True), ("starting", "queued", True), ("starting", "failed", True),
    ("running", "succeeded", True), ("running", "failed", True), ("running", "timeout", True),
    ("running", "cancelled", True), ("running", "lost", True), ("running", "queued", True),
    ("running", "starting", False),
    ("succeeded", "queued", False), ("failed", "running", False), ("lost", "queued", False),
    ("cancelled", "cancelled", False),
])
def test_transitions(old, new, allowed):
    assert P.can_transition(old, new) is allowed
    if allowed:
        assert P.transition(old, new) == new
    else:
        with pytest.raises(P.BadTransition):
            P.transition(old, new)


def test_end_states_are_final_and_every_state_is_known():
    assert set(P.TRANSITIONS) == set(P.STATES)
    for s in P.ENDED:
        assert not P.TRANSITIONS[s]
    for s, nxt in P.TRANSITIONS.items():
        assert nxt <= set(P.STATES)


@given(st.lists(st.sampled_from(P.STATES), max_size=12))
def test_any_walk_through_allowed_steps_never_leaves_an_end_state(path):
    state = "queued"
    for nxt in path:
        if P.can_transition(state, nxt):
            assert state not in P.ENDED
            state = nxt


# -- --array --------------------------------------------------------------------------------
@pytest.mark.parametrize("text, indices, throttle", [
    ("0-9", tuple(range(10)), None),
    ("0-9%2", tuple(range(10)), 2),
    ("3", (3,), None),
    ("1,3,5-7%1", (1, 3, 5, 6, 7), 1),
    (" 0-5%2 ", tuple(range(6)), 2),
    ("2,2,1-2", (1, 2), None),
])
def test_array_ok(text, indices, throttle):
    assert P.parse_array(text, 100) == P.ArraySpec(indices, throttle)


@pytest.mark.parametrize("text, words", [
    ("", "not a list"), ("a-b", "not a list"), ("5-1", "empty"), ("0-9%0", "at once"), ("0-9%x", "at once"),
    ("0-9%", "at once"), ("-1", "not a list"), ("0-100", "limit"), ("0-5,,6", "not a list"), ("1-2-3", "not a list"),
    ("0-99999999999", "limit"),
])
def test_array_refused(text, words):
    with pytest.raises(InvalidInput) as e:
        P.parse_array(text, 100)
    assert words in e.value.message


@given(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 40)), min_size=1, max_size=6),
       st.one_of(st.none(), st.integers(1, 9)))
@settings(max_examples=200)
def test_array_parses_what_it_is_given(ranges, throttle):
    text = ",".join(f"{lo}-{lo + n}" if n else str(lo) for lo, n in ranges) + (f"%{throttle}" if throttle else "")
    want = sorted({i for lo, n in ranges for i in range(lo, lo + n + 1)})
    if len(want) > 100:
        with pytest.raises(InvalidInput):
            P.parse_array(text, 100)
        return
    spec = P.parse_array(text, 100)
    assert list(spec.indices) == want and spec.throttle == throttle


# -- --time -----------------------------------------------------------------------------
@pytest.mark.parametrize("text, cap, want", [
    (None, 3600, 3600), ("30m", 3600, 1800), ("1h", 3600, 3600), ("90", 3600, 90), (None, 0, None), ("48h", 0, 172800),
])
def test_time_ok(text, cap, want):
    assert P.parse_time(text, cap) == want


@pytest.mark.parametrize("text, words", [("2h", "max runtime"), ("0", "longer than 0"), ("soon", "not a duration"),
                                         ("1h1s", "max runtime")])
def test_time_refused(text, words):
    with pytest.raises(InvalidInput) as e:
        P.parse_time(text, 3600)
    assert words in e.value.message


@given(st.floats(1, 10_000), st.floats(1, 10_000))
def test_time_never_exceeds_the_cap(asked, cap):
    try:
        got = P.parse_time(str(round(asked, 3)), cap)
    except InvalidInput:
        assert round(asked, 3) > cap
    else:
        assert 0 < got <= cap + 1e-9


# -- env, command ---------------------------------------------------------------------------
def test_env_ok_and_refused():
    assert P.parse_env(["A=1", "B=x=y", "EMPTY="]) == {"A": "1", "B": "x=y", "EMPTY": ""}
    for bad in ("NVIDIA_VISIBLE_DEVICES=all", "CUDA_VISIBLE_DEVICES=0", "HOME=/root", "DS01_JOB_ID=1",
                "NVIDIA_DRIVER_CAPABILITIES=all", "1A=x", "A-B=x", "NOEQUALS", "USER=root"):
        with pytest.raises(InvalidInput):
            P.parse_env([bad])
    with pytest.raises(InvalidInput):
        P.parse_env([f"V{i}=1" for i in range(P.MAX_ENV + 1)])


def test_command():
    assert P.check_command(["python3", "-c", "print(42)"]) == ("python3", "-c", "print(42)")
    for bad in ([], [""], ["a\0b"], ["x" * (P.MAX_COMMAND_BYTES + 1)]):
        with pytest.raises(InvalidInput):
            P.check_command(bad)


# -- dependencies, throttles ----------------------------------------------------------------
@pytest.mark.parametrize("deps, verdict", [
    ({}, "ready"), ({1: "succeeded", 2: "succeeded"}, "ready"), ({1: "succeeded", 2: "running"}, "wait"),
    ({1: "queued"}, "wait"), ({1: "failed", 2: "running"}, "fail"), ({1: "cancelled"}, "fail"),
    ({1: "timeout"}, "fail"), ({1: "lost"}, "fail"),
])
def test_dependencies(deps, verdict):
    v, reason = P.dependencies(deps)
    assert v == verdict
    if v == "fail":
        bad = min(j for j, s in deps.items() if s in P.ENDED and s != "succeeded")
        assert reason == f"dependency failed: job {bad} {deps[bad]}"


def test_throttle_and_running_limit():
    assert P.throttle_allows(1, 2) and not P.throttle_allows(2, 2) and P.throttle_allows(50, None)
    assert P.under_running_limit(3, 4) and not P.under_running_limit(4, 4)
    assert P.timed_out(100.0, 10.0, 110.0) and not P.timed_out(100.0, 10.0, 109.9) and not P.timed_out(100.0, None, 1e9)


# -- how it ended ---------------------------------------------------------------------------
@pytest.mark.parametrize("code, kw, state, words", [
    (0, {}, "succeeded", "exit code 0"),
    (3, {}, "failed", "exit code 3"),
    (137, {}, "failed", "SIGKILL"),
    (143, {"requested": "timeout"}, "timeout", "time limit"),
    (0, {"requested": "cancel"}, "cancelled", "cancelled"),
    (None, {"container_gone": True}, "lost", "disappeared"),
    (143, {"engine_restarted": True}, "lost", "engine restarted"),
    (143, {"engine_restarted": True, "requeue": True}, "queued", "requeued"),
    (None, {"container_gone": True, "requeue": True}, "queued", "requeued"),
])
def test_end_of(code, kw, state, words):
    kw.setdefault("requested", None)
    got, reason = P.end_of(code, **kw)
    assert got == state and words in reason


def test_job_spec_keeps_the_containers_security_and_the_daemons_env():
    from ds01 import labels
    from ds01.models.config import Config
    from ds01.policy.containers import build_spec
    from ds01.policy.limits import effective_limits

    class Who:
        uid, gid, name, group = 1001, 1001, "alice", "alice"

    cfg = Config()
    base = build_spec(cfg, Who(), "thesis", "ds01/base:latest", effective_limits(cfg, "alice", set()),
                      "/mnt/x", 1.0, "default", device_ids=("GPU-1",))
    spec = P.job_spec(base, job_id=7, prefix="ds01", uid=1001, command=("python3", "train.py"),
                      env={"A": "1"}, array_id=5, array_index=2, image="sha256:abc")
    assert spec.name == "ds01-1001-J7" and spec.command == ("python3", "train.py") and spec.image == "sha256:abc"
    assert spec.labels[labels.JOB] == "7" and spec.labels[labels.MANAGED] == "true"
    assert spec.env["A"] == "1" and spec.env["DS01_ARRAY_TASK_ID"] == "2" and spec.env["DS01_ARRAY_JOB_ID"] == "5"
    assert spec.env["NVIDIA_VISIBLE_DEVICES"] == "GPU-1" and spec.env["DS01_JOB_ID"] == "7"
    for field in ("cap_drop", "no_new_privileges", "init", "mounts", "memory", "cpus", "pids", "account", "network",
                  "runtime", "gpu_device_ids", "tmpfs"):
        assert getattr(spec, field) == getattr(base, field)
