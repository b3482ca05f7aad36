"""Charts on the status page and ``ds01 admin dashboard --web`` (issue 16 item 6), in headless
Chromium against a real daemon: the SVG's allocation bars and GPU-hour bars equal the allocation
records in the state database; utilization samples appear; names follow the admin's setting;
the terminal dashboard has a sparkline per GPU. Screenshots land in the test's tmp directory."""

from __future__ import annotations

import html.parser
import pwd
import shutil
import sqlite3
import subprocess
import time

import pytest

from ds01.policy.usage import AllocationInterval, account

from .harness import BIN, USERS, free_port, new_daemon, ok, unique_project
from .test_webpage import browse, png_size, wait_up

H = 3600.0


class Svg(html.parser.HTMLParser):
    """Every SVG element's attributes, by tag and class."""

    def __init__(self):
        super().__init__()
        self.items: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        self.items.append((tag, {k: v or "" for k, v in attrs}))

    def find(self, tag: str, cls: str | None = None, ident: str | None = None) -> list[dict[str, str]]:
        return [a for t, a in self.items if t == tag and (cls is None or a.get("class") == cls)
                and (ident is None or a.get("id") == ident)]


def records(db) -> list[dict]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute("SELECT device, user, project, equivalents, start, end FROM allocations")]
    con.close()
    return rows


def insert_history(db, rows) -> None:
    con = sqlite3.connect(db)
    for user, project, dev, eq, start, end in rows:
        uid = pwd.getpwnam(user).pw_uid
        cur = con.execute("INSERT INTO containers (uid, user, project, docker_name, image, status, created_at, "
                          "ended_at) VALUES (?,?,?,?,?,?,?,?)", (uid, user, project, "h", "img", "removed", start, end))
        con.execute("INSERT INTO allocations (container, uid, user, project, device, equivalents, start, end, "
                    "end_reason) VALUES (?,?,?,?,?,?,?,?,?)", (cur.lastrowid, uid, user, project, dev, eq, start,
                                                              end, "removed"))
    con.commit()
    con.close()


@pytest.fixture(scope="module")
def charts(docker_client):
    d = new_daemon()
    d.web_port = free_port()
    d.config["defaults"] = {"max_gpus": 2.0}
    d.config["observability"] = {"metrics": {"listen": ""},
                                 "web": {"listen": f"127.0.0.1:{d.web_port}", "refresh": 30,
                                         "show_user_names": True}}
    d.start()  # creates the state database; history is written with the daemon stopped
    d.stop()
    now = time.time()
    a, b = USERS["alice"], USERS["bob"]
    insert_history(d.root / "var/lib/ds01/state.db", [
        (a, "hist", "GPU-sim-0001", 1.0, now - 10 * H, now - 4 * H),       # inside the 24 h
        (b, "hist", "MIG-sim-0003-01", 2 / 7, now - 30 * H, now - 2 * H),  # clipped at the window's start
        (b, "old", "GPU-sim-0002", 1.0, now - 3 * 86400, now - 2 * 86400),  # only in the week
    ])
    d.start()
    d.used = []
    yield d
    d.destroy(docker_client)
    for user, project in d.used:
        shutil.rmtree(f"/home/{USERS[user]}/workspace/{project}", ignore_errors=True)


def page_svg(d) -> Svg:
    dom = browse(f"http://127.0.0.1:{d.web_port}/", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<script" not in dom.stdout
    p = Svg()
    p.feed(dom.stdout)
    return p


def check_against_records(p: Svg, db, names: bool) -> None:
    [chart] = p.find("svg", ident="chart-devices")
    since, until = float(chart["data-since"]), float(chart["data-until"])
    assert until - since == 86400
    want = sorted((r["device"], round(max(r["start"], since)), r["user"]) for r in records(db)
                  if r["start"] < until and (r["end"] is None or r["end"] > since))
    bars = p.find("rect", "alloc")
    got = sorted((b["data-device"], round(float(b["data-start"])), b["data-user"]) for b in bars)
    if names:
        assert got == want
    else:
        assert [(dv, s) for dv, s, _ in got] == [(dv, s) for dv, s, _ in want]
        assert {u for _, _, u in got} == {"(hidden)"}
    by_key = {(r["device"], round(max(r["start"], since))): r for r in records(db)}
    for bar in bars:
        r = by_key[(bar["data-device"], round(float(bar["data-start"])))]
        if r["end"] is None:
            assert bar["data-open"] == "true"
        else:
            assert float(bar["data-end"]) == pytest.approx(min(r["end"], until), abs=1e-3)
    [week] = p.find("svg", ident="chart-week")
    ws, wu = float(week["data-since"]), float(week["data-until"])
    allocs = [AllocationInterval(r["user"], r["project"], r["equivalents"], r["start"], r["end"], r["device"])
              for r in records(db)]
    want_h = {row.key: row.gpu_hours for row in account(allocs, [], ws, wu)}
    got_h = {b["data-user"]: float(b["data-gpu-hours"]) for b in p.find("rect", "hours")}
    if names:
        assert set(got_h) == set(want_h)
        for u, v in want_h.items():
            assert got_h[u] == pytest.approx(v, abs=1e-3)
    else:
        assert sorted(float(b["data-gpu-hours"]) for b in p.find("rect", "hours")) == pytest.approx(
            sorted(want_h.values()), abs=1e-3)


def test_status_page_charts_match_the_allocation_records(charts, tmp_path):
    pa, pb = unique_project("chart"), unique_project("chart")
    charts.used += [("alice", pa), ("bob", pb)]
    ok(charts.run("alice", "container-create", pa, "--gpus", "1"))
    ok(charts.run("bob", "container-create", pb, "--gpu-profile", "3g.20gb"))
    wait_up(charts.web_port)
    time.sleep(1.2)  # the page caches its data for a second
    p = page_svg(charts)
    db = charts.root / "var/lib/ds01/state.db"
    check_against_records(p, db, names=True)
    assert {b["data-user"] for b in p.find("rect", "alloc")} == {USERS["alice"], USERS["bob"]}
    # utilization is sampled from the daemon's start (simulated devices read 0 %)
    groups = p.find("g", "device")
    assert len(groups) == 8 and all(int(g["data-util-samples"]) >= 1 for g in groups)
    assert all(float(g["data-util-mean"]) == 0.0 for g in groups)
    assert p.find("polyline", "util")

    shot = tmp_path / "status.png"
    r = browse(f"http://127.0.0.1:{charts.web_port}/", f"--screenshot={shot}", "--window-size=1200,900")
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    assert png_size(shot) == (1200, 900)
    full = tmp_path / "status-full.png"
    browse(f"http://127.0.0.1:{charts.web_port}/", f"--screenshot={full}", "--window-size=1200,1700")
    print(f"\nscreenshots: {shot} {full}")

    # the terminal dashboard: a sparkline per GPU
    out = ok(charts.run("adm", "ds01", "admin", "dashboard", "--no-stats")).stdout
    assert "GPU history, last 24 h:" in out
    hist = out.split("GPU history, last 24 h:")[1].split("\n\n")[0].splitlines()
    assert len([ln for ln in hist[2:] if ln.strip()]) == 8 and "▁" in out  # a header, then a row per device


def test_admin_dashboard_web_serves_the_charts_with_names(charts, tmp_path):
    port = free_port()
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "LANG": "C.UTF-8", **charts.env()}
    argv = ["runuser", "-u", USERS["adm"], "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
            str(BIN / "ds01"), "admin", "dashboard", "--web", "--port", str(port), "--no-stats"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "admin dashboard on http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() else "")
        url = line.split(" on ")[1].split()[0]
        dom = browse(url, "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert "DS01 admin dashboard" in dom.stdout and 'id="users"' in dom.stdout
        p = Svg()
        p.feed(dom.stdout)
        check_against_records(p, charts.root / "var/lib/ds01/state.db", names=True)
        shot = tmp_path / "dashboard.png"
        browse(url, f"--screenshot={shot}", "--window-size=1200,1500")
        print(f"\nscreenshot: {shot}")
        # the bare port (no token) shows nothing
        bare = browse(f"http://127.0.0.1:{port}/", "--dump-dom")
        assert "chart-devices" not in bare.stdout
    finally:
        proc.terminate()
        proc.wait(10)
    denied = charts.run("alice", "ds01", "admin", "dashboard", "--web", "--port", "0")
    assert denied.returncode == 5 and "admins only" in denied.stderr


def test_names_hidden_on_the_status_page_charts(charts):
    charts.restart({"observability": {"web": {"hide_user_names": True}}})
    wait_up(charts.web_port)
    dom = browse(f"http://127.0.0.1:{charts.web_port}/", "--dump-dom")
    for name in USERS.values():
        assert name not in dom.stdout
    p = Svg()
    p.feed(dom.stdout)
    check_against_records(p, charts.root / "var/lib/ds01/state.db", names=False)
