"""Charts (issue 16 item 6): pure bucketing (``policy.series``), the chart data from allocation
records (``services.charts``), the SVG drawn from it (``ds01.svg``, every datum checked against
the records), the terminal sparklines and the CLI's ``dashboard --web`` page."""

from __future__ import annotations

import re
import threading
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest

from ds01.gpu.simulated import SimulatedSource, sim_gpu_uuid, sim_mig_uuid
from ds01.models.gpu import DeviceUtil
from ds01.policy.series import (BLOCKS, STEP, Segment, UtilHistory, bucket_of, downsample, occupancy, segments,
                                sparkline, window)
from ds01.services.charts import ChartService
from ds01.svg import charts_html, device_timeline, week_bars, x_of

H = 3600.0
NOW = 1_700_000_000.0 + 123.0  # not on a bucket boundary


# -- policy.series ---------------------------------------------------------------------------
def test_window_ends_with_the_current_bucket_and_holds_a_day():
    since, until = window(NOW)
    assert until - since == 86400 and until % STEP == 0 and since <= NOW - 86400 + STEP
    assert until - STEP <= NOW < until


def test_history_means_per_bucket_and_is_bounded():
    h = UtilHistory(step=300, span=3600)  # 12 buckets
    t0 = bucket_of(NOW, 300) * 300
    h.add("a", t0 + 1, 10)
    h.add("a", t0 + 2, 30)
    h.add("a", t0 + 2, None)  # no counter (MIG): not a sample
    h.add("a", t0 - 300, 50)
    s = h.series("a", t0 + 300)
    assert len(s) == 12 and s[-1] == 20 and s[-2] == 50 and s[:-2] == [None] * 10
    for i in range(100):  # a day of samples: still 12 buckets
        h.add("a", t0 + i * 300, i)
    assert h.buckets() == 12
    assert h.series("a", t0 + 100 * 300)[-1] == 99
    h.forget(["b"])
    assert h.devices() == []
    with pytest.raises(ValueError):
        UtilHistory(step=0)


def test_segments_clip_to_the_window_and_mark_open_ones():
    rows = [{"device": "G1", "user": "a", "project": "p", "equivalents": 1, "start": 0, "end": 50},
            {"device": "G0", "user": "b", "project": "q", "equivalents": 1, "start": 90, "end": None},
            {"device": "G0", "user": "a", "project": "p", "equivalents": 1, "start": 10, "end": 20},
            {"device": "G0", "user": "c", "project": "r", "equivalents": 1, "start": 0, "end": 5}]
    segs = segments(rows, 8, 100)
    assert [(g.device, g.start, g.end, g.open) for g in segs] == [
        ("G0", 10, 20, False), ("G0", 90, 100, True), ("G1", 8, 50, False)]


def test_occupancy_is_the_held_fraction_of_each_bucket():
    segs = [Segment("G", 0, 150, "a", "p", 1, False), Segment("G", 250, 400, "b", "q", 1, True),
            Segment("G", 260, 270, "c", "r", 1, False)]  # overlapping: capped at a whole bucket
    occ = occupancy(segs, 0, 400, step=100)
    assert occ == [1.0, 0.5, 0.5 + 0.1, 1.0]
    assert occupancy([], 0, 400, 100) == [0.0] * 4


def test_sparkline_scales_and_leaves_gaps_blank():
    assert sparkline([0, 100], 2) == BLOCKS[0] + BLOCKS[-1]
    assert sparkline([None, 50, None, None], 2) == BLOCKS[4] + " "
    assert downsample([1, 3, None, None], 2) == [2, None]
    assert len(sparkline([10] * 288, 48)) == 48


# -- services.charts -------------------------------------------------------------------------
class FakeStore:
    def __init__(self, rows):
        self.rows = rows

    def allocations_between(self, since, until, uid=None):
        return [r for r in self.rows if r["start"] < until and (r["end"] is None or r["end"] > since)]


def make_charts(rows, util=None):
    src = SimulatedSource()
    ctx = SimpleNamespace(store=FakeStore(rows), gpu_source=src, clock=lambda: NOW)
    status = SimpleNamespace(utilization=lambda: util if util is not None else src.utilization())
    return ChartService(ctx, status)


ROWS = [
    {"device": sim_gpu_uuid(0), "user": "alice", "project": "thesis", "equivalents": 1.0, "start": NOW - 2 * H,
     "end": NOW - H},
    {"device": sim_gpu_uuid(0), "user": "bob", "project": "nlp", "equivalents": 1.0, "start": NOW - 30 * H,
     "end": None},  # held since yesterday: clipped to the window
    {"device": sim_mig_uuid(3, 0), "user": "alice", "project": "mig", "equivalents": 3 / 7, "start": NOW - 3 * 86400,
     "end": NOW - 2 * 86400},  # only in the week
]


def test_view_has_every_device_with_clipped_allocations_and_week_gpu_hours():
    c = make_charts(ROWS)
    c.sample()
    v = c.view()
    since, until = window(NOW)
    assert (v["since"], v["until"]) == (since, until)
    d0 = next(d for d in v["devices"] if d["uuid"] == sim_gpu_uuid(0))
    assert {d["label"] for d in v["devices"]} >= {"0", "1", "2", "3", "3:0"}
    assert [(a["user"], a["start"], a["end"], a["open"]) for a in d0["allocations"]] == [
        ("bob", since, until, True), ("alice", NOW - 2 * H, NOW - H, False)]
    assert sum(d0["held"]) * STEP == pytest.approx(until - since)  # bob held it all day
    assert d0["utilization"][-1] == 0.0 and d0["utilization"][:-1] == [None] * 287  # one sample, this bucket
    week = {u["user"]: u["gpu_hours"] for u in v["week"]["users"]}
    assert week["alice"] == pytest.approx(1 + 24 * 3 / 7)
    assert week["bob"] == pytest.approx(30)
    assert [u["user"] for u in v["week"]["users"]] == ["bob", "alice"]


def test_view_hides_names_when_asked():
    v = make_charts(ROWS).view(hide_names=True)
    text = repr(v) + charts_html(v)
    assert "alice" not in text and "bob" not in text and "thesis" not in text
    assert {u["user"] for u in v["week"]["users"]} == {"(hidden)"}


def test_sample_skips_devices_without_a_counter():
    c = make_charts([], util={"G": DeviceUtil(gpu_percent=None), "H": DeviceUtil(gpu_percent=40.0)})
    assert c.sample() == 1
    assert c.history.devices() == ["H"]


# -- ds01.svg --------------------------------------------------------------------------------
def attrs(tag: str) -> dict[str, str]:
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag))


def test_timeline_svg_draws_each_allocation_where_its_record_says():
    c = make_charts(ROWS)
    for pct in (20.0, 60.0):
        c.history.add(sim_gpu_uuid(1), NOW, pct)
    v = c.view()
    svg = device_timeline(v)
    assert svg.startswith("<svg") and svg.endswith("</svg>") and "<script" not in svg and "href" not in svg
    rects = [attrs(t) for t in re.findall(r'<rect class="alloc"[^>]*>', svg)]
    since, until = v["since"], v["until"]
    expected = [r for r in ROWS if r["start"] < until and (r["end"] is None or r["end"] > since)]
    assert len(rects) == len(expected) == 2
    for r in expected:
        a = next(a for a in rects if a["data-user"] == r["user"])
        start, end = max(r["start"], since), until if r["end"] is None else r["end"]
        assert a["data-device"] == r["device"]
        assert float(a["data-start"]) == pytest.approx(start) and float(a["data-end"]) == pytest.approx(end)
        assert float(a["x"]) == pytest.approx(x_of(start, since, until), abs=0.1)
        assert float(a["width"]) == pytest.approx(x_of(end, since, until) - x_of(start, since, until), abs=0.2)
    groups = {g["data-uuid"]: g for g in (attrs(t) for t in re.findall(r'<g class="device"[^>]*>', svg))}
    assert float(groups[sim_gpu_uuid(0)]["data-held-percent"]) == pytest.approx(100.0)
    assert float(groups[sim_gpu_uuid(1)]["data-util-mean"]) == pytest.approx(40.0)
    assert groups[sim_gpu_uuid(1)]["data-util-samples"] == "1"
    assert svg.count('<polyline class="util"') == 1  # only GPU 1 was sampled
    [pts] = re.findall(r'<polyline class="util" points="([^"]*)"', svg)
    (xa, ya), (xb, yb) = [tuple(map(float, p.split(","))) for p in pts.split()]
    assert ya == yb and xb - xa == pytest.approx(x_of(since + STEP, since, until) - x_of(since, since, until), abs=0.1)
    assert xb == pytest.approx(x_of(until, since, until), abs=0.1)  # the current bucket, at the right end
    assert svg.count('<g class="device"') == len(v["devices"])


def test_week_bars_svg_carries_the_gpu_hours_and_scales_bars():
    v = make_charts(ROWS).view()
    svg = week_bars(v)
    bars = [attrs(t) for t in re.findall(r'<rect class="hours"[^>]*>', svg)]
    assert [(b["data-user"], round(float(b["data-gpu-hours"]), 4)) for b in bars] == [
        ("bob", 30.0), ("alice", round(1 + 24 * 3 / 7, 4))]
    w = [float(b["width"]) for b in bars]
    assert w[1] / w[0] == pytest.approx((1 + 24 * 3 / 7) / 30, rel=1e-3)


def test_svg_escapes_names_and_handles_nothing():
    rows = [{**ROWS[0], "user": "<b>&x"}]
    html = charts_html(make_charts(rows).view())
    assert "<b>&x" not in html and "&lt;b&gt;&amp;x" in html
    empty = {"since": 0, "until": 86400, "step": 300, "devices": [], "week": {"since": 0, "until": 1, "users": []}}
    out = charts_html(empty)
    assert "no GPUs on this host" in out and "no GPU use this week" in out
    assert charts_html(None) == ""


# -- terminal sparkline, the CLI's --web page ------------------------------------------------
def test_dashboard_history_rows_have_a_sparkline_per_gpu():
    from ds01.cli.commands.status import history_rows

    c = make_charts(ROWS)
    c.history.add(sim_gpu_uuid(0), NOW, 100.0)
    rows = {r[0]: r for r in history_rows(c.view(), width=48)}
    assert len(rows["0"][1]) == 48 and rows["0"][1].endswith(BLOCKS[-1]) and rows["0"][2] == "100%"
    assert rows["0"][4] == "100%" and set(rows["0"][3]) == {BLOCKS[-1]}
    assert rows["1"][1] == "(no samples yet)" and rows["1"][4] == "0%"
    assert history_rows(None) == []


def test_web_dashboard_serves_under_its_token_and_checks_the_host():
    from ds01.cli.webdash import DashboardServer

    v = make_charts(ROWS).view()
    st = {"time": NOW, "charts": v}
    srv = DashboardServer("127.0.0.1", 0, lambda: st, lambda s: (["head line"], [("Users", ["user"], [["bob"]], "")]))
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        page = urllib.request.urlopen(srv.url, timeout=5).read().decode()
        assert 'id="chart-devices"' in page and 'id="chart-week"' in page and "<td>bob</td>" in page
        assert "<script" not in page
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/", timeout=5)
        assert e.value.code == 404
        req = urllib.request.Request(srv.url, headers={"Host": f"evil.example:{srv.port}"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=5)
        assert e.value.code == 421
    finally:
        srv.shutdown()
        srv.server_close()
