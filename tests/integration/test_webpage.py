"""The read-only status page in headless Chromium: the GPU table is filled with holders, the page
uses relative URLs only (works through an SSH tunnel), and the admin option hides user names."""

from __future__ import annotations

import html.parser
import json
import shutil
import struct
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from .harness import free_port, new_daemon, ok, unique_project, USERS

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars"]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:  # no silent skip: scripts/host-prepare.sh installs Debian's chromium
        pytest.fail("chromium not found; install Debian's 'chromium' package (scripts/host-prepare.sh does)")
    return exe


def browse(url: str, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="ds01-chromium-") as profile:
        return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
                              capture_output=True, text=True, timeout=90, cwd=profile)


class Tables(html.parser.HTMLParser):
    """Rows of every <table id=…> as lists of cell text."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.links: list[str] = []
        self._t = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._t = a.get("id")
            self.tables[self._t] = []
        elif tag == "tr" and self._t:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag in ("a", "link", "script", "img", "form") and (a.get("href") or a.get("src") or a.get("action")):
            self.links.append(a.get("href") or a.get("src") or a.get("action"))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._t].append(self._row)
            self._row = None
        elif tag == "table":
            self._t = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def web(docker_client):
    d = new_daemon()
    d.web_port = free_port()
    d.config["defaults"] = {"max_gpus": 2.0}
    d.config["observability"] = {"metrics": {"listen": ""},
                                 "web": {"listen": f"127.0.0.1:{d.web_port}", "refresh": 5,
                                         "show_user_names": True}}
    d.start()
    d.used = []
    yield d
    d.destroy(docker_client)
    for user, project in d.used:
        shutil.rmtree(f"/home/{USERS[user]}/workspace/{project}", ignore_errors=True)


def wait_up(port: int) -> None:
    deadline = time.time() + 15
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def test_status_page_renders_in_headless_chromium_with_the_gpu_table_filled(web, tmp_path):
    pa, pb = unique_project("web"), unique_project("web")
    web.used += [("alice", pa), ("bob", pb)]
    ok(web.run("alice", "container-create", pa, "--gpus", "1"))
    ok(web.run("bob", "container-create", pb, "--gpu-profile", "3g.20gb"))
    wait_up(web.web_port)
    url = f"http://127.0.0.1:{web.web_port}/"

    dom = browse(url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    t = Tables()
    t.feed(dom.stdout)
    gpus = t.tables["gpus"]
    assert gpus[0][:4] == ["GPU", "device", "equiv.", "holder"]
    rows = {r[0]: r for r in gpus[1:]}
    assert set(rows) == {"0", "1", "2", "3", "3:0", "3:1", "3:2", "3:3"}  # every device, one row each
    holders = {r[3] for r in rows.values()}
    assert f"{USERS['alice']}/{pa}" in holders and f"{USERS['bob']}/{pb}" in holders
    assert rows["3:0"][3] == f"{USERS['bob']}/{pb}" and rows["3:0"][1] == "3g.20gb"
    assert "free" in holders
    assert all(r[5] for r in rows.values())  # utilization column filled
    assert "queue" in t.tables and "events" in t.tables
    assert any("container.create" in " ".join(r) for r in t.tables["events"])
    # relative URLs only: works through `ssh -L` and under a reverse-proxy sub-path
    assert t.links and all(not (link.startswith("/") or "://" in link) for link in t.links), t.links
    assert 'http-equiv="refresh"' in urllib.request.urlopen(url).read().decode()

    shot = tmp_path / "status.png"
    p = browse(url, f"--screenshot={shot}", "--window-size=1200,900")
    assert p.returncode == 0 and shot.exists(), p.stderr[-2000:]
    assert png_size(shot) == (1200, 900)
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank canvas

    data = json.loads(urllib.request.urlopen(url + "status.json").read())
    assert {d["uuid"] for d in data["gpus"]["devices"] if d["holder"]} == {
        d["uuid"] for d in data["gpus"]["devices"] if d["holder"] and d["holder"]["user"] in (USERS["alice"],
                                                                                               USERS["bob"])}


def test_hide_user_names(web):
    web.restart({"observability": {"web": {"hide_user_names": True}}})
    wait_up(web.web_port)
    dom = browse(f"http://127.0.0.1:{web.web_port}/", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    t = Tables()
    t.feed(dom.stdout)
    holders = [r[3] for r in t.tables["gpus"][1:]]
    assert "(hidden)/(hidden)" in holders
    page = dom.stdout
    for name in USERS.values():
        assert name not in page
    data = urllib.request.urlopen(f"http://127.0.0.1:{web.web_port}/status.json").read().decode()
    assert all(name not in data for name in USERS.values())


def test_public_page_shows_no_event_details(web):
    """Anyone on the host can read the page: what alice ran in her container is not on it."""
    p = unique_project("pub")
    web.used.append(("alice", p))
    assert web.run("alice", "container-create", p).returncode == 0
    assert web.run("alice", "container-run", p, "--", "echo", "TOKEN-abc123").returncode == 0
    wait_up(web.web_port)
    deadline = time.time() + 10  # the page caches its data for a second
    while True:
        data = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{web.web_port}/status.json").read())
        if any(e["action"] == "container.exec" for e in data["events"]) or time.time() > deadline:
            break
        time.sleep(0.3)
    assert any(e["action"] == "container.exec" for e in data["events"])
    assert "TOKEN-abc123" not in json.dumps(data)
    assert all("data" not in e and "reason" not in e for e in data["events"])
