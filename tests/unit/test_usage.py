"""Usage accounting: pure sums over allocation / container intervals, clipped to the window."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01.policy.usage import (AllocationInterval, ContainerInterval, account, overlap, parse_since, to_csv,
                               totals)

H = 3600.0


def test_overlap_clips_and_open_intervals_run_to_the_window_end():
    assert overlap(0, 10, 2, 5) == 3
    assert overlap(0, None, 2, 5) == 3
    assert overlap(6, 10, 2, 5) == 0
    assert overlap(0, 1, 2, 5) == 0
    assert overlap(3, None, 0, 10) == 7


def test_gpu_hours_are_equivalents_times_hours_clipped_to_the_window():
    allocs = [
        AllocationInterval("alice", "p", 1.0, 0, 2 * H),           # 1 h inside [1h, 4h)
        AllocationInterval("alice", "q", 3 / 7, 1 * H, 3 * H),     # MIG 3g: 2 h × 3/7
        AllocationInterval("bob", "p", 1.0, 2 * H, None),          # open: 2 h until 4h
        AllocationInterval("carol", "p", 1.0, 5 * H, 6 * H),       # outside: not counted
    ]
    rows = {r.key: r for r in account(allocs, [], 1 * H, 4 * H)}
    assert set(rows) == {"alice", "bob"}
    assert rows["alice"].gpu_hours == pytest.approx(1 + 2 * 3 / 7)
    assert rows["alice"].allocations == 2
    assert rows["bob"].gpu_hours == pytest.approx(2.0)


def test_by_project_and_group_and_container_hours_and_peaks():
    allocs = [AllocationInterval("alice", "p", 1.0, 0, H), AllocationInterval("bob", "p", 0.5, 0, H)]
    conts = [ContainerInterval("alice", "p", 0, 2 * H, 100), ContainerInterval("alice", "q", H, None, 300),
             ContainerInterval("bob", "p", 0, H, None)]
    by_proj = {r.key: r for r in account(allocs, conts, 0, 2 * H, "project")}
    assert by_proj["alice/p"].container_hours == pytest.approx(2)
    assert by_proj["alice/q"].container_hours == pytest.approx(1)
    assert by_proj["alice/q"].gpu_hours == 0
    by_group = {r.key: r for r in account(allocs, conts, 0, 2 * H, "group", {"alice": "ml", "bob": "ml"})}
    assert list(by_group) == ["ml"]
    g = by_group["ml"]
    assert g.gpu_hours == pytest.approx(1.5) and g.container_hours == pytest.approx(4)
    assert g.peak_memory_bytes == 300 and g.users == {"alice", "bob"}
    by_user = account(allocs, conts, 0, 2 * H)
    assert [r.key for r in by_user] == ["alice", "bob"]  # largest GPU-hours first
    t = totals(by_user)
    assert t["gpu_hours"] == pytest.approx(1.5) and t["peak_memory_bytes"] == 300


def test_unknown_by_and_reversed_window_are_refused():
    with pytest.raises(ValueError):
        account([], [], 0, 1, "host")
    with pytest.raises(ValueError):
        account([], [], 2, 1)


def test_csv_has_a_header_and_exact_numbers():
    rows = [r.to_dict("user") for r in account([AllocationInterval("alice", "p", 1.0, 0, 1800)], [], 0, H)]
    text = to_csv(rows, "user")
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert parsed[0]["user"] == "alice"
    assert float(parsed[0]["gpu_hours"]) == pytest.approx(0.5)
    assert parsed[0]["peak_memory_bytes"] == ""


def test_parse_since():
    now = 1_700_000_000.0
    assert parse_since("2h", now) == now - 7200
    assert parse_since("30d", now) == now - 30 * 86400
    assert parse_since("1699990000", now) == 1699990000
    assert parse_since(None, now, default=5) == 5
    assert parse_since("2024-05-01", now) > 1.7e9
    with pytest.raises(ValueError):
        parse_since("yesterday-ish", now)


interval = st.tuples(st.floats(0, 100 * H), st.floats(0, 50 * H), st.sampled_from([1.0, 1 / 7, 3 / 7, 0.5]),
                     st.sampled_from(["alice", "bob"]))


@given(st.lists(interval, max_size=20), st.floats(0, 150 * H), st.floats(0, 1))
def test_splitting_the_window_never_changes_the_total(items, width, cut_frac):
    """Accounting is additive over time: [a, c) == [a, b) + [b, c) for any b (no sampling gaps)."""
    allocs = [AllocationInterval(u, "p", eq, s, s + d) for s, d, eq, u in items]
    a, c = 0.0, width
    b = a + (c - a) * cut_frac
    def gh(lo, hi):
        return sum(r.gpu_hours for r in account(allocs, [], lo, hi))

    whole = gh(a, c)
    parts = gh(a, b) + gh(b, c)
    assert parts == pytest.approx(whole, rel=1e-9, abs=1e-12)
    exact = sum(eq * overlap(s, s + d, a, c) / H for s, d, eq, _ in items)
    assert whole == pytest.approx(exact, rel=1e-9, abs=1e-12)
