"""Issue 17: pull resolution through mirrors, error classes, credentials file mode, single-flight
and the progress lines (the real registry is in tests/integration/test_pulls.py)."""

from __future__ import annotations

import json
import os
import threading
import time
from types import SimpleNamespace

import pytest

from ds01.cli.pulling import PullView, describe, pulled_line
from ds01.errors import NotFound, PermissionDenied
from ds01.runtime.docker_pull import PullFailed, classify
from ds01.services.pulls import PullService, load_credentials, resolve


def test_resolve_through_the_mirror_of_each_registry():
    m = {"docker.io": "http://cache.lab:5000", "nvcr.io": "cache.lab:5001/ngc"}
    assert resolve("pytorch/pytorch:2.5", m) == ("cache.lab:5000/pytorch/pytorch", "2.5",
                                                 "cache.lab:5000 (mirror of docker.io)")
    assert resolve("python:3.12", m)[0] == "cache.lab:5000/library/python"
    assert resolve("nvcr.io/nvidia/pytorch:24.01-py3", m)[0] == "cache.lab:5001/ngc/nvidia/pytorch"
    assert resolve("ghcr.io/x/y", m) == ("ghcr.io/x/y", "latest", "ghcr.io")
    assert resolve("python:3", {}) == ("library/python", "3", "docker.io")


@pytest.mark.parametrize("text, cls, word", [
    ("dial tcp 127.0.0.1:1: connect: connection refused", PullFailed, "unreachable"),
    ("unauthorized: authentication required", PermissionDenied, "unauthorized"),
    ("manifest for x:y not found: manifest unknown", NotFound, "not found"),
    ("write /var/lib/docker/tmp/x: no space left on device", PullFailed, "disk is full"),
])
def test_engine_errors_become_clear_ones(text, cls, word):
    e = classify("x:y", "mirror", text)
    assert type(e) is cls and word in e.message


def test_credentials_must_be_root_only(tmp_path):
    f = tmp_path / "auth.json"
    f.write_text(json.dumps({"nvcr.io": {"username": "$oauthtoken", "password": "k"}}))
    os.chmod(f, 0o644)
    with pytest.raises(PermissionDenied):
        load_credentials(str(f))
    os.chmod(f, 0o600)
    assert load_credentials(str(f))["nvcr.io"]["password"] == "k"
    assert load_credentials(str(tmp_path / "none.json")) == {}


class _Engine:
    """A backend whose pull blocks until released, counting pulls."""

    def __init__(self):
        self.pulls, self.go, self.have = 0, threading.Event(), set()

        def pull(name, tag, **kw):
            self.pulls += 1
            self.go.wait(5)
            yield {"id": "abc", "status": "Downloading", "progressDetail": {"current": 50, "total": 100}}
            yield {"id": "abc", "status": "Pull complete", "progressDetail": {}}
            self.have.add(f"{name}:{tag}")

        self.api = SimpleNamespace(pull=pull)

    def image_inspect(self, ref):
        return SimpleNamespace(id="sha256:1") if ref in self.have or f"docker.io/{ref}" in self.have else None


def test_concurrent_requests_share_one_pull():
    eng = _Engine()
    cfg = SimpleNamespace(images=SimpleNamespace(allowed=["pytorch/pytorch"], mirrors={}, credentials_file=None,
                                                 pull_retries=0, pull_timeout=60))
    ctx = SimpleNamespace(config=cfg, runtime=eng, emit=lambda *a, **k: None)
    svc = PullService(ctx)
    who = SimpleNamespace(uid=1, name="a")
    out = []
    ts = [threading.Thread(target=lambda: out.append(list(svc.ensure(who, "pytorch/pytorch:1")))) for _ in range(2)]
    ts[0].start()
    deadline = time.monotonic() + 10
    while svc.pulls_started < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    ts[1].start()  # while the first pull is held: it must join that pull, not start its own
    while svc.pulls_joined < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    eng.go.set()
    for t in ts:
        t.join(10)
    assert eng.pulls == 1 and len(out) == 2
    res = sorted((o[-1]["pulled"] for o in out), key=lambda r: r["transferred"])
    assert res[0]["transferred"] == 0 and res[1]["transferred"] == 100
    assert any(e.get("layer") == "abc" and e.get("total") == 100 for e in out[0])


def test_progress_lines(capsys):
    v = PullView(tty=False)
    v.event({"pull": "r", "layer": "abc", "status": "Downloading", "current": 1 << 20, "total": 4 << 20,
             "speed": 1 << 20, "eta": 3.0})
    v.event({"pulled": {"image": "r", "source": "m (mirror of docker.io)", "bytes": 4 << 20, "seconds": 4}})
    out = capsys.readouterr().out
    assert "abc: Downloading 1.0 MiB/4.0 MiB 1.0 MiB/s ETA 3 s" in out and "from m (mirror of docker.io)" in out
    assert describe({"layer": "x", "status": "Pull complete"}) == "x: Pull complete"
    assert "shared" in pulled_line({"image": "r", "joined": True, "source": "s"})
